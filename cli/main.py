"""The `fmplan` command: one thin command per verb (each in its own module), exit codes here.

Exit codes: 0 ok; 1 invalid input; 2 usage; 3 no feasible plan; 4 environment.
Nothing imported at module level pulls in torch, PuLP/HiGHS, the emitters or the cost model: each
command imports what it uses when it runs, so `fmplan --help` and `presets` start fast
(tests/test_cli_imports.py).
"""
from __future__ import annotations

import functools
import sys
import warnings
from typing import Annotated

import typer

from cli import (cmd_calibrate, cmd_emit, cmd_estimate, cmd_presets, cmd_profile, cmd_report,
                 cmd_solve, cmd_validate)
from planner.errors import FmplanError, FmplanWarning

app = typer.Typer(
    name="fmplan", add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Plan how to train a foundation model on a GPU cluster: estimate, solve, emit, profile.")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version  # ~45 ms: only for --version
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


for module in (cmd_estimate, cmd_presets, cmd_solve, cmd_emit, cmd_profile, cmd_validate, cmd_calibrate,
               cmd_report):
    module.register(app)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """FmplanWarning as one `warning: ...` line on stderr; other warnings as Python prints them."""
    if issubclass(category, FmplanWarning):
        typer.echo(f"warning: {message}", err=True)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


@functools.cache
def _command():
    """The click command behind `app`, built once (building it costs ~40 ms, which matters to
    callers that run many commands in one process: the fuzz test)."""
    return typer.main.get_command(app)


def main(argv: list[str] | None = None) -> None:
    """Console entry point (`argv` defaults to sys.argv[1:]): typer handles usage errors (exit 2)
    and Ctrl-C (exit 130); FmplanError becomes its exit code and one line on stderr, an OS error
    (a file that cannot be written, a full disk) exit 1; FmplanWarning one `warning:` line."""
    warnings.showwarning = _show_warning
    try:
        _command().main(args=argv)
    except FmplanError as exc:
        typer.echo(f"{exc.label}: {exc}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        typer.echo(f"error: {where}{exc.strerror or exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
