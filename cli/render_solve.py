"""Rendering of `fmplan solve` results: a rich summary for people, one JSON object for scripts."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cli.render import render_estimate
from cost_models.breakdown import GIB
from planner.solve import SolveOutcome


def outcome_payload(outcome: SolveOutcome) -> dict[str, Any]:
    """The JSON object `solve --json` prints (plan.yaml's content plus runners-up and wall time)."""
    plan = outcome.plan.to_mapping()
    stats = outcome.result.stats.to_dict(with_wall=True)
    return {
        "model": outcome.plan.model.name,
        "cluster": outcome.plan.cluster.name,
        "target": outcome.plan.target,
        "strategy": outcome.best.strategy.describe(),
        "plan": {k: plan[k] for k in ("inputs_digest", "strategy", "predicted", "solver")},
        "search": stats,
        "interrupted": outcome.result.interrupted,
        "objective": outcome.extra,
        "runners_up": [
            {"strategy": r.ranked.strategy.describe(), "objective": r.ranked.objective,
             "step_time_s": r.ranked.cost.step_time_s, "mfu": r.ranked.cost.mfu,
             "peak_memory_gib": r.ranked.cost.peak_memory_bytes / GIB,
             "slower_pct": r.slower_pct, "differences": r.differences, "main_cost": r.main_cost}
            for r in outcome.runners_up],
    }


def render_solve(outcome: SolveOutcome, written: list[Path], console: Console | None = None) -> None:
    """Best plan (full breakdown), certificate, search statistics and runners-up."""
    console = console or Console()
    plan, result = outcome.plan, outcome.result
    render_estimate(plan.model, plan.cluster, outcome.best.strategy, outcome.best.cost, console,
                    stack=plan.stack)
    st = outcome.best.strategy
    if st.pp > 1:
        console.print(f"layer split: {list(st.stage_layers)}")
    stats = result.stats
    status = ("certified optimal under the cost model" if result.status == "optimal"
              else f"within {100 * result.gap:.2f}% of optimal")
    if result.status != "optimal":
        status = ("interrupted (Ctrl-C): " if result.interrupted else "time limit hit: ") + status
    console.print(f"[bold]{status}[/] (target {plan.target}, stack {plan.stack}, solver {plan.solver['backend']})")
    console.print(
        f"search: {stats.candidates:,} candidates, {stats.pruned_by_bound:,} pruned by bound, "
        f"{stats.pruned_by_memory:,} pruned by memory, {stats.ilps_solved:,} ILPs solved "
        f"({stats.ilps_infeasible:,} infeasible) in {stats.wall_s:.2f} s")
    extra = outcome.extra
    if "deadline_h" in extra:
        console.print(f"deadline {extra['deadline_h']:g} h: fewest GPUs {extra['gpus']} "
                      f"({extra['nodes']} nodes), {extra['train_hours']:.1f} h, "
                      f"{extra['gpu_hours']:,.0f} GPU-hours")
    elif "gpu_hours" in extra:
        console.print(f"cost: {extra['gpu_hours']:,.0f} GPU-hours on {extra['gpus']} GPUs "
                      f"({extra['train_hours']:.1f} h for {extra['tokens']:.3g} tokens)")
    if outcome.runners_up:
        table = Table(title="runners-up (each the best of its layout)")
        for col in ("#", "strategy", "step s", "MFU", "GiB", "slower", "differs in", "grows most"):
            table.add_column(col)
        for i, r in enumerate(outcome.runners_up, 1):
            c = r.ranked.cost
            table.add_row(str(i), r.ranked.strategy.describe(), f"{c.step_time_s:.3f}",
                          f"{100 * c.mfu:.1f}%", f"{c.peak_memory_bytes / GIB:.1f}",
                          f"+{r.slower_pct:.2f}%", ", ".join(r.differences), r.main_cost)
        console.print(table)
    for path in written:
        console.print(f"wrote {path}")
