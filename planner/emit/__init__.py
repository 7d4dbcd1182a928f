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
from planner.plan import Plan
from planner.targets import EngineLimits

ENGINES: dict[str, ModuleType] = {"megatron": megatron, "deepspeed": deepspeed,
                                  "torchtitan": torchtitan}
"""Target name -> emitter module."""
LIMITS: dict[str, EngineLimits] = {name: module.LIMITS for name, module in ENGINES.items()}
"""Target name -> the limits its emitter declares."""


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


def emit(plan: Plan, target: str, out_dir: Path, *,
         values: dict[str, str] | None = None) -> list[Path]:
    """Write the launch files of `plan` for `target` into `out_dir`; return their paths (sorted).

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
    files = _engine(target).render(plan, values)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in sorted(files.items()):
        path = out_dir / name
        path.write_text(text)
        if name.endswith(".sh") or name.endswith(".sbatch"):
            path.chmod(0o755)
        written.append(path)
    return written


def _engine(target: str) -> ModuleType:
    if target not in ENGINES:
        raise InputError(f"unknown target {target!r}",
                         hint=f"choose one of {', '.join(sorted(ENGINES))}")
    return ENGINES[target]
