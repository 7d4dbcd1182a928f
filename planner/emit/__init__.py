"""Emitters: turn a Plan into the files that launch it on one training engine.

Each engine module declares `LIMITS` (what the engine can express, see `planner.targets`) and
`render(plan, values) -> {file name: text}`. `emit()` checks the limits first and refuses a plan the
engine cannot express, naming every violation; only then does it render and write the files.
Emitters read only the Plan: they never import torch or the engines themselves.
"""
from __future__ import annotations

from pathlib import Path
from types import ModuleType

from planner.emit import deepspeed, megatron, torchtitan
from planner.errors import InputError
from planner.output import write_files
from planner.plan import PLAN_FILE, Plan
from planner.targets import EngineLimits

ENGINES: dict[str, ModuleType] = {"megatron": megatron, "deepspeed": deepspeed,
                                  "torchtitan": torchtitan}
"""Target name -> emitter module."""
LIMITS: dict[str, EngineLimits] = {name: module.LIMITS for name, module in ENGINES.items()}
"""Target name -> the limits its emitter declares."""
OUTPUT_NAMES = frozenset({PLAN_FILE, "slurm.sbatch", deepspeed.CONFIG,
                          *(module.SCRIPT for module in ENGINES.values())})
"""Every file `fmplan solve --out` and `fmplan emit --out` write (what an output directory may
already hold without --force)."""


def launch_variables(target: str) -> list[str]:
    """Names of the environment variables the target's launch script reads (paths, settings)."""
    return [var.name for var in _engine(target).VARIABLES]


def check(plan: Plan, target: str) -> None:
    """Raise InputError listing everything in `plan` that `target` cannot express."""
    module = _engine(target)
    problems = module.LIMITS.violations(plan.strategy, plan.model)
    if problems:
        raise InputError(f"the plan cannot be expressed in {target}: " + "; ".join(problems),
                         hint=f"re-solve with `--target {target}` to search only what it can launch")


def render_files(plan: Plan, target: str, *, values: dict[str, str] | None = None) -> dict[str, str]:
    """The launch files of `plan` for `target` (file name -> text), nothing written.

    `values` bakes defaults for the launch script's environment variables (`launch_variables`),
    e.g. {"DATA_PATH": "/data/my corpus"}; they are shell-quoted. Raises InputError naming every
    part of the plan the engine cannot express, or an unknown target or variable.
    """
    values = dict(values or {})
    unknown = sorted(set(values) - set(launch_variables(target)))
    if unknown:
        raise InputError(f"{target} launch scripts have no variable {', '.join(unknown)}",
                         hint=f"known: {', '.join(launch_variables(target))}")
    check(plan, target)
    return _engine(target).render(plan, values)


def emit(plan: Plan, target: str, out_dir: Path, *, values: dict[str, str] | None = None,
         force: bool = False) -> list[Path]:
    """Write the launch files of `plan` for `target` into `out_dir`, all or none
    (`planner.output.write_files`; `force` allows a directory holding other files); return their
    paths (sorted). Errors as `render_files`."""
    files = render_files(plan, target, values=values)
    return write_files(out_dir, files, owned=OUTPUT_NAMES, force=force)


def _engine(target: str) -> ModuleType:
    if target not in ENGINES:
        raise InputError(f"unknown target {target!r}",
                         hint=f"choose one of {', '.join(sorted(ENGINES))}")
    return ENGINES[target]
