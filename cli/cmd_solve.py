"""`fmplan solve`: the fastest plan that fits (certified under the cost model), its runners-up,
plan.yaml and, with a target engine, its launch files. Ctrl-C stops the search: the best plan so
far is shown with its gap (exit 130, nothing written); a second Ctrl-C stops at once."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.cmd_report import PngOpt, ReportOpt, write_report
from cli.options import (ClusterOpt, JsonOpt, ModelArg, NodesOpt, ProfileOpt, StackOpt,
                         check_options,
                         load_inputs)
from cli.progress import progress_for
from planner import interrupt
from planner.errors import InputError
from planner.plan import PLAN_FILE
from planner.presets import DEFAULT_CLUSTER


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("solve")(solve_command)


def solve_command(
    model: ModelArg,
    cluster: ClusterOpt = None,
    nodes: NodesOpt = None,
    stack: StackOpt = None,
    profile: ProfileOpt = None,
    target: Annotated[str, typer.Option("--target", help="megatron, deepspeed, torchtitan or any.")] = "any",
    top: Annotated[int, typer.Option("--top", min=0, help="Runners-up to show (each proven).")] = 3,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write DIR/plan.yaml (and launch files).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Write into an --out DIR that holds other files.")] = False,
    time_limit: Annotated[float, typer.Option("--time-limit", min=0.1, help="Search budget in seconds; the gap is reported when hit.")] = 120.0,
    solver: Annotated[str, typer.Option("--solver", help="highs (in-process) or cbc.")] = "highs",
    objective: Annotated[str, typer.Option("--objective", help="time (step time) or cost (GPU-hours for --tokens).")] = "time",
    tokens: Annotated[Optional[float], typer.Option("--tokens", help="Training tokens (for cost and --deadline).")] = None,
    deadline: Annotated[Optional[float], typer.Option("--deadline", help="Hours: fewest nodes that train --tokens in time.")] = None,
    allow_idle: Annotated[bool, typer.Option("--allow-idle", help="Allow plans on fewer whole nodes than the cluster has.")] = False,
    report: ReportOpt = None,
    png: PngOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress line on stderr.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Find the fastest parallel plan that fits, certified optimal under the cost model.

    Without --cluster the default cluster preset (dgx-h100-8n: 8 DGX H100 nodes) is used.
    """
    from cli.render_solve import outcome_payload, render_solve  # the search imports PuLP/HiGHS
    from cost_models.hardware import from_cluster
    from planner.stacks import stack_for
    from planner.search import SearchOptions
    from planner.solve import solve, solve_deadline
    from planner.targets import TARGETS
    check_options(tokens=tokens, deadline_h=deadline, time_limit_s=time_limit, top=top)
    if target not in TARGETS:
        raise InputError(f"--target must be one of {', '.join(TARGETS)}, got {target!r}")
    if solver not in ("highs", "cbc"):
        raise InputError(f"--solver must be highs or cbc, got {solver!r}")
    if objective not in ("time", "cost"):
        raise InputError(f"--objective must be time or cost, got {objective!r}")
    model_spec, cluster_spec = load_inputs(model, cluster or DEFAULT_CLUSTER, nodes)
    hardware = from_cluster(cluster_spec, stack_for(stack, target))
    if profile is not None:
        from cost_models.profile_format import apply_profile
        hardware = apply_profile(hardware, profile, cluster_spec)
    line = progress_for(as_json, quiet, "GPU-h" if objective == "cost" else "s")
    options = SearchOptions(limits=TARGETS[target], objective=objective, tokens=tokens or 0.0,
                            top_k=top, time_limit_s=time_limit, solver=solver, allow_idle=allow_idle,
                            progress=line)
    try:
        with interrupt.graceful():  # Ctrl-C: the best plan so far (planner.interrupt)
            if deadline is not None:
                outcome = solve_deadline(model_spec, cluster_spec, hardware, options, deadline,
                                         target)
            else:
                outcome = solve(model_spec, cluster_spec, hardware, options, target)
    finally:
        if line is not None:
            line.close()
    stopped = outcome.result.interrupted
    written = _write(outcome.plan, target, out, force) if out is not None and not stopped else []
    if (report is not None or png is not None) and not stopped:
        from planner.report.sources import report_from_outcome
        for path in write_report(report_from_outcome(outcome, hardware), report, png):
            typer.echo(f"wrote {path}", err=True)
    if as_json:
        payload = outcome_payload(outcome)
        payload["files"] = [str(p) for p in written]
        typer.echo(json.dumps(payload, indent=2, sort_keys=True))
    else:
        render_solve(outcome, written)
    if stopped:
        not_written = "; nothing written" if (out, report, png) != (None, None, None) else ""
        result = outcome.result
        best = ("certified optimal (the runners-up were cut short)" if result.status == "optimal"
                else f"the best plan so far, within {100 * result.gap:.2f}% of optimal")
        typer.echo(f"interrupted: {best}{not_written}", err=True)
        raise typer.Exit(130)


def _write(plan, target: str, out_dir: Path, force: bool) -> list[Path]:
    """plan.yaml and, with a target, the engine's launch files: rendered first, then written
    all together or not at all (planner.output)."""
    from planner.emit import OUTPUT_NAMES, render_files
    from planner.output import write_files
    files = {PLAN_FILE: plan.to_yaml()}
    if target != "any":
        files.update(render_files(plan, target))
    return write_files(out_dir, files, owned=OUTPUT_NAMES, force=force)
