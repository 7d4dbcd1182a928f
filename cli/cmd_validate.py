"""`fmplan validate`: run a plan for a few steps on torch.distributed, compare with the prediction.
Ctrl-C stops torchrun and every worker (no orphan process) and exits 130."""
from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from cli.options import JsonOpt, ProfileOpt
from planner.errors import Interrupted


class Device(str, Enum):
    """Where the ranks run."""

    cpu = "cpu"
    cuda = "cuda"


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("validate")(validate_command)


def validate_command(
    plan: Annotated[Path, typer.Argument(help="plan.yaml written by `fmplan solve`.")],
    device: Annotated[Device, typer.Option("--device", help="cuda (NCCL) or cpu (gloo).")] = Device.cpu,
    steps: Annotated[int, typer.Option("--steps", help="Timed steps after the warm-up.")] = 3,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed steps (>= 3; the 3rd tracks memory).")] = 3,
    scale_down: Annotated[bool, typer.Option("--scale-down", help="Run the plan's shape on a smaller model.")] = False,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run PLAN with torchrun on this machine; print measured vs predicted memory and step time."""
    from cli.render_validate import render_validation  # loaded only when the command runs
    from planner.plan import load_plan
    from planner.validation import validate_plan
    try:
        report = validate_plan(load_plan(plan), device=device.value, steps=steps, warmup=warmup,
                               scale=scale_down, profile=profile)
    except KeyboardInterrupt:  # planner.runtime.launch has stopped torchrun and every worker
        raise Interrupted("validation stopped; torchrun and its workers have ended") from None
    if as_json:
        typer.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        render_validation(report)
