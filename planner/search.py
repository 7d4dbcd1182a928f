"""The search loop: best-first branch and bound over the outer candidates, an ILP per survivor.

Reads top to bottom:
1. enumerate the candidate *families* (degrees, mbs, sp, ep, etp; a family's groups differ only
   in vpp, a group's members only in ZeRO stage and offload) and give each a cheap makespan lower
   bound from cached block times; a popped family goes back as its groups, each with its own;
2. pop the group with the smallest bound; expand it into its members, each with a refined
   lower bound from its `CandidateTerms` (planner/bounds.py) and a memory lower bound (members
   that cannot fit are dropped, "pruned by memory");
3. pop a member; solve its ILP (planner/ilp.py) and evaluate the split with `evaluate()`;
4. stop when the smallest bound left is >= the objective of the (K+1)-th best plan found: every
   candidate left provably cannot enter the top K+1 ("pruned by bound").
Because every bound is a true lower bound of the ILP objective and each ILP is solved to
optimality, the best plan is certified optimal under the cost model (or the gap is reported).
"""
from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cost_models.breakdown import CostBreakdown
from cost_models.estimate import evaluate
from cost_models.hardware import Hardware
from planner import interrupt
from planner.bounds import host_lower_bound_bytes, memory_lower_bound_bytes, pipeline_p2p_s
from planner.cache import Cache, member_limits
from planner.candidates import (Group, SearchOptions, expand, families, group_memory_bound,
                                member_base_terms, member_choices, member_terms, members,
                                objective_weight, with_vpp)
from planner.ilp import MIP_REL_GAP, IlpResult, solve_split
from planner.specs import ClusterSpec, ModelSpec
from planner.strategy import Strategy
from planner.strong_bound import strong_step_lower_bound_s

__all__ = ["Ranked", "SearchOptions", "SearchProgress", "SearchResult", "SearchStats", "members",
           "search", "with_vpp"]


@dataclass(frozen=True, kw_only=True)
class Ranked:
    """A solved candidate: the resolved strategy, its cost and its objective value."""

    strategy: Strategy
    cost: CostBreakdown
    objective: float
    ilp_status: str


@dataclass(kw_only=True)
class SearchStats:
    """How the search went (wall time is kept out of plan.yaml for determinism)."""

    candidates: int = 0
    pruned_by_bound: int = 0
    pruned_by_memory: int = 0
    ilps_solved: int = 0
    ilps_infeasible: int = 0
    ilps_cut_off: int = 0
    """ILPs whose every split was pruned by the incumbent inside the solver."""
    wall_s: float = 0.0

    def to_dict(self, with_wall: bool) -> dict[str, Any]:
        """Plain mapping; `with_wall` adds the (non-deterministic) wall time."""
        out = {"candidates": self.candidates, "pruned_by_bound": self.pruned_by_bound,
               "pruned_by_memory": self.pruned_by_memory, "ilps_solved": self.ilps_solved,
               "ilps_infeasible": self.ilps_infeasible, "ilps_cut_off": self.ilps_cut_off}
        if with_wall:
            out["wall_s"] = self.wall_s
        return out


@dataclass(kw_only=True)
class SearchResult:
    """The ranked plans (best first), the optimality certificate and the statistics."""

    ranked: list[Ranked] = field(default_factory=list)
    status: str = "optimal"
    """optimal (within the MIP gap), gap (time limit: `gap` is the remaining relative gap),
    or infeasible (nothing fits)."""
    gap: float = 0.0
    interrupted: bool = False
    """Stopped by Ctrl-C (planner.interrupt): the plans are the best found so far."""
    lower_bound: float = 0.0
    """Proven lower bound of the best objective."""
    stats: SearchStats = field(default_factory=SearchStats)

    @property
    def best(self) -> Ranked | None:
        """The best plan, or None when nothing fits."""
        return self.ranked[0] if self.ranked else None


@dataclass(frozen=True)
class SearchProgress:
    """Where a running search stands (passed to `SearchOptions.progress`)."""

    elapsed_s: float
    ilps_solved: int
    best: float
    """Objective of the best plan so far (inf before the first)."""
    bound: float
    """Smallest lower bound of the candidates left."""
    candidates_left: Callable[[], int]
    """Counts the candidates left (costs a pass over the queue: call it only to show it)."""
    phase: str = "searching"
    """enumerating (the candidates so far) or searching (best-first)."""


def search(model: ModelSpec, cluster: ClusterSpec, hw: Hardware, options: SearchOptions) -> SearchResult:
    """Find the best plans (see module doc)."""
    start = time.perf_counter()
    result = SearchResult()
    stats = result.stats
    cache = Cache(model, hw, options.limits)
    heap = []
    for order, (bound, family) in enumerate(families(model, cluster, cache, options)):
        stats.candidates += family.members
        heap.append((bound, order, family))
        if options.progress is not None and order % 64 == 0:
            options.progress(SearchProgress(elapsed_s=time.perf_counter() - start, best=float("inf"),
                                            ilps_solved=0, bound=0.0, phase="enumerating",
                                            candidates_left=lambda: stats.candidates))
    heapq.heapify(heap)
    order = len(heap)
    found: dict[tuple, tuple[tuple, Ranked]] = {}
    open_bounds: list[float] = []

    def threshold() -> float:
        ranked = sorted(key for key, _ in found.values())
        full = len(ranked) > options.top_k
        return min(options.cutoff, ranked[options.top_k][0] if full else float("inf"))

    limit, best = threshold(), float("inf")
    while heap and heap[0][0] < limit:
        if time.perf_counter() - start > options.time_limit_s:
            break
        if options.progress is not None:
            options.progress(SearchProgress(elapsed_s=time.perf_counter() - start, best=best,
                                            ilps_solved=stats.ilps_solved, bound=heap[0][0],
                                            candidates_left=lambda: _count_left(heap)))
        if interrupt.requested("search:incumbent" if found else "search"):  # Ctrl-C
            result.interrupted = True
            break
        bound, _, item = heapq.heappop(heap)
        if _beaten_in_layout(found, item, bound):
            stats.pruned_by_bound += _count_left([(bound, 0, item)])
            continue
        if isinstance(item, Group) and item.vpps:
            # Level 1: a family's groups, one per vpp, each with its own makespan bound.
            for group_bound, group in expand(model, item, cache, options):
                heapq.heappush(heap, (max(bound, group_bound), order, group))
                order += 1
            continue
        if isinstance(item, Group) and not item.checked:
            outer = item.outer
            # Level 2: add the pipeline p2p time; drop the group if no member can fit.
            if group_memory_bound(model, outer, cache) > hw.capacity_bytes:
                stats.pruned_by_memory += item.members
                continue
            item.checked = True
            item.p2p_s = pipeline_p2p_s(model, outer, hw)
            heapq.heappush(heap, (bound + item.p2p_s * objective_weight(model, outer, options),
                                  order, item))
            order += 1
            continue
        if isinstance(item, Group):
            # Level 3: the members whose states fit, each with a refined bound from the terms of
            # the same candidate at any vpp (only p2p, in-flight counts and extras depend on vpp,
            # and the bound uses p2p alone: the group's).
            outer = item.outer
            for zero, off_opt, off_params in member_choices(model, outer, options):
                if cache.states_cannot_fit(outer, zero, off_opt, off_params):
                    stats.pruned_by_memory += 1
                    continue
                st = outer.with_(zero=zero, offload_optimizer=off_opt, offload_params=off_params)
                base = member_base_terms(model, hw, st, cache)
                refined = (cache.step_bound(base, st) - base.p2p_s + item.p2p_s) \
                    * objective_weight(model, st, options)
                heapq.heappush(heap, (max(bound, refined), order, (st, base, False)))
                order += 1
            continue
        st, terms, strong = item
        weight = objective_weight(model, st, options)
        if not strong:
            terms = member_terms(model, hw, st, terms)
            # Level 4: the memory bound, then the stronger time bound (memory-forced recompute,
            # first-stage DP traffic).
            tight = float("inf")
            if not _member_cannot_fit(terms, st, model.arch.layers, hw, options):
                tight = strong_step_lower_bound_s(terms, st, model.arch.layers, hw.capacity_bytes,
                                                  member_limits(options.limits, st)) * weight
            if tight == float("inf"):
                stats.pruned_by_memory += 1
            else:
                heapq.heappush(heap, (max(bound, tight), order, (st, terms, True)))
                order += 1
            continue
        remaining = options.time_limit_s - (time.perf_counter() - start)
        ilp = solve_split(terms, st, model.arch.layers, capacity_bytes=hw.capacity_bytes,
                          host_capacity_bytes=hw.host_mem_bytes_per_gpu, limits=options.limits,
                          time_limit_s=remaining, solver=options.solver, cutoff=limit / weight)
        stats.ilps_solved += 1
        if ilp.status == "infeasible":
            stats.ilps_infeasible += 1
            continue
        if ilp.status == "cutoff":
            stats.ilps_cut_off += 1
            continue
        if ilp.status != "optimal":
            open_bounds.append(ilp.bound * objective_weight(model, st, options))
        if ilp.stages:
            ranked = _rank(model, hw, st, terms, ilp, options)
            # Ties: prefer fewer offloads, a lower ZeRO stage, then less memory.
            key = (float(f"{ranked.objective:.12g}"), st.offload_optimizer + st.offload_params,
                   st.zero, ranked.cost.peak_memory_bytes, order)
            layout = _layout(st)
            if layout not in found or key < found[layout][0]:
                found[layout] = (key, ranked)
            limit, best = threshold(), min(best, ranked.objective)

    stats.pruned_by_bound = _count_left(heap)
    result.ranked = [r for _, r in sorted(found.values(), key=lambda kv: kv[0])
                     if r.objective < options.cutoff][:options.top_k + 1]
    _certify(result, heap, open_bounds, limit)
    stats.wall_s = time.perf_counter() - start
    return result


def _layout(st: Strategy) -> tuple:
    """Runners-up differ in their parallel degrees (dp, tp, pp, cp), not only in vpp, mbs,
    ZeRO stage or offload (the best of each degree layout is kept)."""
    return (st.world, st.dp, st.tp, st.pp, st.cp)


def _beaten_in_layout(found: dict, item, bound: float) -> bool:
    """Whether every candidate of `item` (a family, group or member) is slower than the best plan
    already found with its degree layout: it can then be neither the best plan nor a runner-up
    (those are the best of each layout), and no tie-break can prefer it (ranking keys round the
    objective to 12 digits; the margin keeps a bound within that rounding in the search)."""
    st = item.outer if isinstance(item, Group) else item[0]
    entry = found.get(_layout(st))
    return entry is not None and bound > entry[1].objective * (1 + 1e-11)


def _member_cannot_fit(terms, st: Strategy, layers: int, hw: Hardware,
                       options: SearchOptions) -> bool:
    """Memory lower bounds of one candidate (GPU and host)."""
    mem = memory_lower_bound_bytes(terms, st, layers, member_limits(options.limits, st))
    host = host_lower_bound_bytes(terms, st, layers)
    return mem > hw.capacity_bytes or host > hw.host_mem_bytes_per_gpu


def _rank(model: ModelSpec, hw: Hardware, st: Strategy, terms, ilp: IlpResult,
          options: SearchOptions) -> Ranked:
    """Resolve the ILP's split into a Strategy and cost it with `evaluate()`."""
    resolved = st.with_(stage_layers=tuple(s.layers for s in ilp.stages),
                        stage_recompute=tuple((s.full, s.selective) for s in ilp.stages))
    cost = evaluate(model, resolved, hw, terms, list(ilp.stages))
    return Ranked(strategy=resolved, cost=cost, objective=cost.step_time_s * objective_weight(model, st, options),
                  ilp_status=ilp.status)


def _count_left(heap: list) -> int:
    return sum(item.members if isinstance(item, Group) else 1 for _, _, item in heap)



def _certify(result: SearchResult, heap: list, open_bounds: list[float], threshold: float) -> None:
    """Optimal when nothing below the incumbent is left unexplored and every ILP was optimal."""
    if not result.ranked:
        unexplored = any(b < threshold for b, _, _ in heap) or open_bounds
        result.status = "timeout" if unexplored else "infeasible"
        return
    best = result.ranked[0].objective
    left = [b for b, _, _ in heap if b < min(best, threshold)] + [b for b in open_bounds if b < best]
    lower = min(left, default=best * (1 - MIP_REL_GAP))
    result.lower_bound = lower
    result.gap = max(0.0, (best - lower) / best)
    result.status = "optimal" if not left else "gap"
