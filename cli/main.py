"""The `fmplan` command: one thin command per verb (each in its own module), exit codes here.

Exit codes: 0 ok; 1 invalid input; 2 usage; 3 no feasible plan; 4 environment.
Nothing imported at module level pulls in torch: `fmplan --help`, `estimate` and `solve` stay fast.
"""
from __future__ import annotations

import sys
import warnings
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from cli import cmd_emit, cmd_estimate, cmd_presets, cmd_profile, cmd_solve, cmd_validate
from planner.errors import FmplanError, FmplanWarning

app = typer.Typer(
    name="fmplan", add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Plan how to train a foundation model on a GPU cluster: estimate, solve, emit, profile.")


def _version(value: bool) -> None:
    if value:
        try:
            typer.echo(f"fmplan {version('fmplan')}")
        except PackageNotFoundError:
            typer.echo("fmplan (not installed)")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Print the version and exit.")] = False,
) -> None:
    """fmplan: parallelism planner for LLM training."""


for module in (cmd_estimate, cmd_presets, cmd_solve, cmd_emit, cmd_profile, cmd_validate):
    module.register(app)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """FmplanWarning as one `warning: ...` line on stderr; other warnings as Python prints them."""
    if issubclass(category, FmplanWarning):
        typer.echo(f"warning: {message}", err=True)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


def main() -> None:
    """Console entry point: typer handles usage errors (exit 2); FmplanError becomes its exit
    code and one line on stderr; FmplanWarning one `warning:` line."""
    warnings.showwarning = _show_warning
    try:
        app()
    except FmplanError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
