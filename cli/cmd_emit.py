"""`fmplan emit`: re-emit the launch files of a saved plan.yaml for one engine."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.options import JsonOpt
from planner.errors import InputError


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("emit")(emit_command)


def emit_command(
    plan_file: Annotated[Path, typer.Argument(help="plan.yaml written by `fmplan solve`.")],
    target: Annotated[str, typer.Option("--target", "-t", help="Engine: megatron, deepspeed or torchtitan.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the launch files.")],
    env: Annotated[Optional[list[str]], typer.Option(
        "--env", help="Bake a launch-script default, NAME=VALUE (e.g. DATA_PATH=/data/corpus).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Write into an --out DIR that holds other files.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write the launch files of a saved plan for one engine (exit 1 naming what it cannot express)."""
    from planner.emit import emit  # the emitters load only when a plan is emitted
    from planner.plan import load_plan
    values = _values(env or [])
    written = emit(load_plan(plan_file), target, out, values=values, force=force)
    if as_json:
        typer.echo(json.dumps({"target": target, "files": [str(p) for p in written]}, indent=2))
        return
    for path in written:
        typer.echo(f"wrote {path}")


def _values(pairs: list[str]) -> dict[str, str]:
    values = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InputError(f"--env expects NAME=VALUE, got {pair!r}", hint="e.g. --env DATA_PATH=/data/x")
        values[name] = value
    return values
