"""`solve`: run the search and turn its result into a Plan, runners-up and a certificate.

Also the two budget questions: `--objective cost` (GPU-hours for T tokens, over node counts) is a
search objective; `--deadline` scans node counts upwards for the first that finishes in time.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from cost_models.breakdown import TIME_KEYS
from cost_models.hardware import Hardware
from planner.errors import InfeasibleError, InputError, Interrupted
from planner.explain import infeasible_message
from planner.ilp import MIP_REL_GAP
from planner.plan import Plan
from planner.search import Ranked, SearchOptions, SearchResult, search
from planner.specs import ClusterSpec, ModelSpec
from planner.strategy import Strategy

SEPARATING_FIELDS = ("dp", "tp", "pp", "cp", "vpp", "mbs", "zero", "sp", "ep", "etp",
                     "ep_comm_overlap", "offload_optimizer", "offload_params")


@dataclass(frozen=True, kw_only=True)
class RunnerUp:
    """A runner-up plan and what separates it from the best."""

    ranked: Ranked
    differences: list[str]
    """Changed fields, e.g. `tp 4 -> 8`."""
    slower_pct: float
    """Objective above the best, in percent."""
    main_cost: str
    """The step-time part that grew most, e.g. `pp_bubble +0.21 s`."""


@dataclass(frozen=True, kw_only=True)
class SolveOutcome:
    """Everything `fmplan solve` reports."""

    plan: Plan
    best: Ranked
    runners_up: list[RunnerUp]
    result: SearchResult
    extra: dict[str, Any] = field(default_factory=dict)
    """Objective details (GPU-hours, deadline answer) for the summary."""


def solve(model: ModelSpec, cluster: ClusterSpec, hw: Hardware, options: SearchOptions,
          target: str = "any") -> SolveOutcome:
    """Search and package the best plan; raise InfeasibleError (with the nearest miss) if none."""
    if options.objective == "cost" and options.tokens <= 0:
        raise InputError("--objective cost needs --tokens T (training tokens)", hint="e.g. --tokens 15e12")
    result = search(model, cluster, hw, options)
    _raise_if_interrupted(result)
    if result.best is None:
        if result.status == "timeout":
            raise InfeasibleError(
                f"no feasible plan found within the {options.time_limit_s:g} s time limit "
                "(the search was not finished)", )
        raise InfeasibleError(infeasible_message(model, cluster, hw, options, result))
    return _outcome(model, cluster, options, result, target, hw.stack)


def solve_deadline(model: ModelSpec, cluster: ClusterSpec, hw: Hardware, options: SearchOptions,
                   deadline_h: float, target: str = "any") -> SolveOutcome:
    """The fewest nodes of this cluster kind (1 .. cluster.nodes) that train `options.tokens`
    tokens within `deadline_h` hours, and the fastest plan on that many nodes."""
    if options.tokens <= 0 or deadline_h <= 0:
        raise InputError("--deadline needs --tokens T and a positive number of hours")
    steps = options.tokens / model.training.tokens_per_step
    step_cap_s = deadline_h * 3600.0 / steps
    for nodes in range(1, cluster.nodes + 1):
        sized = replace(cluster, nodes=nodes)
        result = search(model, sized, hw, replace(options, objective="time", allow_idle=False,
                                                  cutoff=step_cap_s))
        _raise_if_interrupted(result)
        if result.best is not None:
            outcome = _outcome(model, sized, options, result, target, hw.stack)
            hours = result.best.cost.step_time_s * steps / 3600.0
            outcome.extra.update({"deadline_h": deadline_h, "nodes": nodes, "gpus": sized.gpus,
                                  "train_hours": hours, "gpu_hours": hours * sized.gpus})
            return outcome
    raise InfeasibleError(
        f"no plan trains {options.tokens:.3g} tokens within {deadline_h:g} h on up to "
        f"{cluster.nodes} nodes of {cluster.name} (one step may take at most {step_cap_s:.3g} s)",
        )


def _raise_if_interrupted(result: SearchResult) -> None:
    """Ctrl-C before any plan was found: say so with how far the search got."""
    if result.interrupted and result.best is None:
        stats = result.stats
        raise Interrupted(f"no plan yet ({stats.candidates:,} candidates, {stats.ilps_solved:,} "
                          "ILPs solved before Ctrl-C)")


def _outcome(model: ModelSpec, cluster: ClusterSpec, options: SearchOptions, result: SearchResult,
             target: str, stack: str) -> SolveOutcome:
    best = result.best
    used = _cluster_for(cluster, best.strategy)
    solver = {"status": result.status, "gap": result.gap, "mip_rel_gap": MIP_REL_GAP,
              "backend": options.solver, "objective": options.objective,
              "objective_value": best.objective, "lower_bound": result.lower_bound}
    plan = Plan(model=model, cluster=used, strategy=best.strategy, predicted=best.cost.to_dict(),
                solver=solver, search=result.stats.to_dict(with_wall=False), target=target,
                stack=stack)
    extra: dict[str, Any] = {}
    if options.objective == "cost":
        steps = options.tokens / model.training.tokens_per_step
        extra = {"tokens": options.tokens, "gpu_hours": best.objective,
                 "train_hours": best.cost.step_time_s * steps / 3600.0, "gpus": best.strategy.world}
    runners = [_runner_up(best, r) for r in result.ranked[1:]]
    return SolveOutcome(plan=plan, best=best, runners_up=runners, result=result, extra=extra)


def _cluster_for(cluster: ClusterSpec, st: Strategy) -> ClusterSpec:
    """The cluster the plan runs on: whole nodes covering its GPUs (fewer with --allow-idle)."""
    if st.world == cluster.gpus:
        return cluster
    return replace(cluster, nodes=st.world // cluster.gpus_per_node)


def _runner_up(best: Ranked, other: Ranked) -> RunnerUp:
    diffs = []
    for name in SEPARATING_FIELDS:
        a, b = getattr(best.strategy, name), getattr(other.strategy, name)
        if a != b:
            diffs.append(f"{name} {_fmt(a)} -> {_fmt(b)}")
    if best.strategy.stage_layers != other.strategy.stage_layers:
        diffs.append("layer split")
    if best.strategy.stage_recompute != other.strategy.stage_recompute:
        diffs.append("recompute")
    deltas = {k: other.cost.time_s[k] - best.cost.time_s[k] for k in TIME_KEYS}
    key = max(deltas, key=lambda k: (deltas[k], k))
    return RunnerUp(ranked=other, differences=diffs,
                    slower_pct=100.0 * (other.objective / best.objective - 1.0),
                    main_cost=f"{key} {deltas[key]:+.3g} s" if deltas[key] > 0 else "no part grows")


def _fmt(value: Any) -> str:
    return ("on" if value else "off") if isinstance(value, bool) else str(value)
