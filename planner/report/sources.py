"""Where a report comes from: a saved plan (plan.yaml or a `solve --out` directory, with the
`fmplan validate --json` output beside it when there is one), a solve outcome, or an estimate;
and writing the page atomically."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from cost_models.hardware import Hardware, from_cluster
from planner.errors import InputError
from planner.plan import PLAN_FILE, load_plan
from planner.report.content import Report, SpacePoint, build_report
from planner.stacks import stack_for

VALIDATION_FILE = "validate.json"
"""`fmplan validate PLAN --json > DIR/validate.json` puts measured vs predicted in the report."""

NO_RUNNERS_UP = ("plan.yaml keeps no runners-up: `fmplan solve ... --report FILE` draws the "
                 "runners-up the search proved.")


def plan_path(path: Path) -> Path:
    """plan.yaml itself, or the plan.yaml inside a `solve --out` directory."""
    plan_file = path / PLAN_FILE if path.is_dir() else path
    if not plan_file.is_file():
        raise InputError(f"{plan_file}: no such plan file",
                         hint="pass plan.yaml or the --out DIR of `fmplan solve`")
    return plan_file


def report_from_plan(path: Path, profile: Path | None = None) -> Report:
    """The report of a saved plan, re-estimated with its stack (and `profile`, when it was
    solved with one); a `validate.json` beside it adds measured vs predicted."""
    plan_file = plan_path(path)
    plan = load_plan(plan_file)
    hw = from_cluster(plan.cluster, stack_for(plan.stack))
    if profile is not None:
        from cost_models.profile_format import apply_profile
        hw = apply_profile(hw, profile, plan.cluster)
    notes = []
    saved = plan.predicted.get("step_time_s")
    report = build_report(plan.model, plan.cluster, plan.strategy, hw, points_note=NO_RUNNERS_UP,
                          validation_rows=_validation_rows(plan_file.parent / VALIDATION_FILE),
                          notes=notes)
    if isinstance(saved, (int, float)) and abs(report.cost.step_time_s / saved - 1) > 1e-4:
        report.notes.insert(0, f"plan.yaml predicted {saved:.4g} s per step; re-estimated now: "
                               f"{report.cost.step_time_s:.4g} s (was it solved with --profile, "
                               "or by another fmplan version?)")
    return report


def _validation_rows(path: Path) -> list[dict[str, Any]]:
    """The comparison rows of `fmplan validate --json` output, if the file exists."""
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"not the JSON `fmplan validate --json` prints ({exc})", source=str(path)) from None
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "quantity" in r for r in rows):
        raise InputError("expected an object with a `rows` list of {quantity, predicted, measured, ...}",
                         source=str(path), key_path="rows",
                         hint="write it with `fmplan validate PLAN --json > DIR/validate.json`")
    for i, row in enumerate(rows):
        for key in ("predicted", "measured", "error_pct"):
            if row.get(key) is not None and not isinstance(row[key], (int, float)):
                raise InputError(f"expected a number or null, got {row[key]!r}", source=str(path),
                                 key_path=f"rows[{i}].{key}")
    return rows


def report_from_outcome(outcome, hw: Hardware) -> Report:
    """The report of `fmplan solve`'s outcome, with the runners-up it proved."""
    plan = outcome.plan
    runners = [SpacePoint("runner-up", r.ranked.strategy.describe(), r.ranked.cost.step_time_s,
                          r.ranked.cost.peak_memory_bytes, ", ".join(r.differences))
               for r in outcome.runners_up]
    note = (f"The chosen plan and the {len(runners)} runner(s)-up the search proved: the best plans "
            "of the next-best layouts (--top N for more). Candidates pruned by a bound were never "
            "costed in full, so they are not drawn.")
    return build_report(plan.model, plan.cluster, plan.strategy, hw, runners_up=runners,
                        points_note=note)


def report_from_estimate(model, cluster, strategy, hw: Hardware) -> Report:
    """The report of one strategy from `fmplan estimate` (no search, so no runners-up)."""
    return build_report(model, cluster, strategy, hw,
                        points_note="`fmplan estimate` costs one strategy: there are no runners-up.")


def write_text_atomic(path: Path, text: str) -> Path:
    """Write `path` via a temporary file beside it and one rename (never half a file)."""
    if path.is_dir():
        raise InputError(f"{path} is a directory", hint="give a file name, e.g. report.html")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{parent}: no such directory", hint="create it first")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
