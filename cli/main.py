"""The `fmplan` command: one thin command per verb (each in its own module), exit codes here.

Exit codes: 0 ok; 1 invalid input; 2 usage; 3 no feasible plan; 4 environment.
Nothing imported at module level pulls in torch: `fmplan --help`, `estimate` and `solve` stay fast.
"""
from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from cli import cmd_estimate, cmd_presets, cmd_validate
from planner.errors import FmplanError

app = typer.Typer(
    name="fmplan", add_completion=False, no_args_is_help=True,
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


for module in (cmd_estimate, cmd_presets, cmd_validate):
    module.register(app)


def main() -> None:
    """Console entry point: run the app, turning FmplanError into its exit code and one line."""
    try:
        app(standalone_mode=False)
    except FmplanError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except (typer.BadParameter, typer.BadParameter.__mro__[1]) as exc:  # click.UsageError
        exc.show()
        sys.exit(2)


if __name__ == "__main__":
    main()
