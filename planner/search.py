"""The search loop: best-first branch and bound over the outer candidates, an ILP per survivor.

Reads top to bottom:
1. enumerate the candidate *groups* (degrees, mbs, sp, vpp; the group's members differ only in
   ZeRO stage and offload) and give each a cheap makespan lower bound from cached block times;
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
from dataclasses import dataclass, field, replace
from typing import Any

from cost_models.block import block_times, edge_times
from cost_models.breakdown import CostBreakdown
from cost_models.estimate import evaluate
from cost_models.hardware import Hardware
from cost_models.terms import candidate_terms
from cost_models.flops import block_params
from cost_models.memory import (ALLOCATOR_FRACTION, block_activations, in_flight_microbatches,
                                stage_extra_activations, state_bytes_per_param)
from planner.bounds import (group_memory_lower_bound_bytes, host_lower_bound_bytes, integer_min_max,
                            integer_min_max_for_vpp,
                            makespan_lower_bound_s, memory_lower_bound_bytes, pipeline_p2p_s,
                            step_lower_bound_s)
from planner.ilp import MIP_REL_GAP, IlpResult, Solver, solve_split
from planner.strong_bound import strong_step_lower_bound_s
from planner.space import (degree_splits, target_accepts_model, micro_batch_sizes, offload_options,
                           sequence_parallel_options, virtual_stage_counts, world_sizes,
                           zero_stages)
from planner.errors import InputError
from planner.specs import ClusterSpec, ModelSpec
from planner.strategy import Strategy
from planner.targets import EngineLimits


@dataclass(frozen=True, kw_only=True)
class SearchOptions:
    """What to optimise and how long to try."""

    limits: EngineLimits
    """The target engine's limits (planner.targets.TARGETS)."""
    objective: str = "time"
    """time: step time; cost: GPU-hours for `tokens` (then every whole-node count is searched)."""
    tokens: float = 0.0
    """Training tokens (objective cost)."""
    top_k: int = 3
    """Runners-up to return besides the best (each exact: the search proves the top K+1)."""
    time_limit_s: float = 60.0
    """Wall-clock budget of the whole search; when hit, the gap is reported."""
    solver: Solver = "highs"
    allow_idle: bool = False
    """Allow plans that leave GPUs idle (fewer than the cluster's GPUs)."""
    cutoff: float = float("inf")
    """Only plans with objective < cutoff are of interest (used by --deadline)."""


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
    lower_bound: float = 0.0
    """Proven lower bound of the best objective."""
    stats: SearchStats = field(default_factory=SearchStats)
    smallest_memory: tuple[float, Strategy] | None = None
    """(memory lower bound, candidate) of the candidate closest to fitting (for explanations)."""

    @property
    def best(self) -> Ranked | None:
        """The best plan, or None when nothing fits."""
        return self.ranked[0] if self.ranked else None


@dataclass
class _Group:
    """Candidates sharing degrees, mbs, sp and vpp; members differ in ZeRO and offload.
    `checked` once its p2p time and group memory bound have been applied."""

    degrees: tuple[int, int, int, int, int, int, bool]
    """(dp, tp, pp, cp, vpp, mbs, sp); the Strategy is built only if the group is popped."""
    members: int
    checked: bool = False

    @property
    def outer(self) -> Strategy:
        """The group's strategy without ZeRO/offload choices."""
        dp, tp, pp, cp, vpp, mbs, sp = self.degrees
        return Strategy(dp=dp, tp=tp, pp=pp, cp=cp, vpp=vpp, mbs=mbs, sp=sp)


def search(model: ModelSpec, cluster: ClusterSpec, hw: Hardware, options: SearchOptions) -> SearchResult:
    """Find the best plans (see module doc)."""
    if model.arch.moe is not None:
        raise InputError(f"{model.name} is a mixture-of-experts model; `fmplan solve` plans dense "
                         "models only so far", hint="cost one MoE strategy with `fmplan estimate`")
    start = time.perf_counter()
    result = SearchResult()
    stats = result.stats
    cache = _Cache(model, hw, options.limits)
    heap = []
    for order, (bound, group) in enumerate(_groups(model, cluster, cache, options)):
        stats.candidates += group.members
        heap.append((bound, order, group))
    heapq.heapify(heap)
    order = len(heap)
    found: dict[tuple, tuple[tuple, Ranked]] = {}
    open_bounds: list[float] = []

    def threshold() -> float:
        ranked = sorted(key for key, _ in found.values())
        full = len(ranked) > options.top_k
        return min(options.cutoff, ranked[options.top_k][0] if full else float("inf"))

    limit = threshold()
    while heap and heap[0][0] < limit:
        if time.perf_counter() - start > options.time_limit_s:
            break
        bound, _, item = heapq.heappop(heap)
        if isinstance(item, _Group) and not item.checked:
            outer = item.outer
            # Level 2: add the pipeline p2p time; drop the group if no member can fit.
            if _group_memory_bound(model, outer, cache) > hw.capacity_bytes:
                stats.pruned_by_memory += item.members
                continue
            item.checked = True
            p2p = pipeline_p2p_s(model, outer, hw) * _weight(model, outer, options)
            heapq.heappush(heap, (bound + p2p, order, item))
            order += 1
            continue
        if isinstance(item, _Group):
            # Level 3: the members, each with its terms, refined bound and memory bound.
            outer = item.outer
            for zero, off_opt, off_params in _member_choices(outer, options):
                if cache.states_cannot_fit(outer, zero, off_opt, off_params):
                    stats.pruned_by_memory += 1
                    continue
                st = outer.with_(zero=zero, offload_optimizer=off_opt, offload_params=off_params)
                terms = _member_terms(model, hw, st, cache)
                if _member_cannot_fit(terms, st, model.arch.layers, hw, options, result):
                    stats.pruned_by_memory += 1
                    continue
                refined = step_lower_bound_s(terms, st, model.arch.layers) * _weight(model, st, options)
                heapq.heappush(heap, (max(bound, refined), order, (st, terms, False)))
                order += 1
            continue
        st, terms, strong = item
        weight = _weight(model, st, options)
        if not strong:
            # Level 4: the stronger bound (memory-forced recompute, first-stage DP traffic).
            tight = strong_step_lower_bound_s(terms, st, model.arch.layers, hw.capacity_bytes,
                                              options.limits) * weight
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
            open_bounds.append(ilp.bound * _weight(model, st, options))
        if ilp.stages:
            ranked = _rank(model, hw, st, terms, ilp, options)
            # Ties: prefer fewer offloads, a lower ZeRO stage, then less memory.
            key = (float(f"{ranked.objective:.12g}"), st.offload_optimizer + st.offload_params,
                   st.zero, ranked.cost.peak_memory_bytes, order)
            layout = _layout(st)
            if layout not in found or key < found[layout][0]:
                found[layout] = (key, ranked)
            limit = threshold()

    stats.pruned_by_bound = _count_left(heap)
    result.ranked = [r for _, r in sorted(found.values(), key=lambda kv: kv[0])
                     if r.objective < options.cutoff][:options.top_k + 1]
    _certify(result, heap, open_bounds, limit)
    stats.wall_s = time.perf_counter() - start
    return result


def _layout(st: Strategy) -> tuple:
    """Runners-up differ in layout (degrees, vpp, mbs, sp), not only in ZeRO stage or offload."""
    return (st.world, st.dp, st.tp, st.pp, st.cp, st.vpp, st.mbs, st.sp)


def _member_cannot_fit(terms, st: Strategy, layers: int, hw: Hardware, options: SearchOptions,
                       result: SearchResult) -> bool:
    """Memory lower bounds of one candidate; remembers the one closest to fitting."""
    mem = memory_lower_bound_bytes(terms, st, layers, options.limits)
    host = host_lower_bound_bytes(terms, st, layers)
    if result.smallest_memory is None or mem < result.smallest_memory[0]:
        result.smallest_memory = (mem, st)
    return mem > hw.capacity_bytes or host > hw.host_mem_bytes_per_gpu


def _weight(model: ModelSpec, st: Strategy, options: SearchOptions) -> float:
    """Objective per second of step time: 1, or GPU-hours per step-second for T tokens."""
    if options.objective == "time":
        return 1.0
    steps = options.tokens / model.training.tokens_per_step
    return steps * st.world / 3600.0


class _Cache:
    """Per-search caches of the pieces many candidates share.

    `block_times`/`edge_times` read only tp, cp, mbs, sp and the overlap flags of a strategy;
    state bytes only dp*cp, ZeRO and offload (tests/test_solve_bounds.py checks both).
    """

    def __init__(self, model: ModelSpec, hw: Hardware, limits: EngineLimits):
        self.model, self.hw, self.limits = model, hw, limits
        self._shapes: dict[tuple, tuple] = {}
        self._states: dict[int, tuple] = {}
        self._fits: dict[tuple, bool] = {}
        self.terms: dict[tuple, Any] = {}
        """Candidate terms by everything but vpp (see `_member_terms`)."""

    def shape(self, tp: int, cp: int, mbs: int, sp: bool):
        """(BlockTimes, EdgeTimes, smallest stored activation bytes per block)."""
        key = (tp, cp, mbs, sp)
        if key not in self._shapes:
            probe = Strategy(tp=tp, cp=cp, mbs=mbs, sp=sp)
            acts = block_activations(self.model, probe)
            by_mode = {"none": acts.none, "selective": acts.selective, "full": acts.full}
            act_min = min(by_mode[m] for m in ("none", *self.limits.recompute_modes))
            self._shapes[key] = (block_times(self.model, probe, self.hw),
                                 edge_times(self.model, probe, self.hw), act_min)
        return self._shapes[key]

    def min_state_parts(self, dp: int, cp: int) -> tuple[float, float, float]:
        """Smallest GPU (weights, grads, optimizer) bytes per parameter over the ZeRO/offload
        members, each minimised on its own."""
        if dp * cp not in self._states:
            parts = []
            for zero in zero_stages(dp, cp, 1, self.limits):
                for off_opt, off_params in offload_options(zero, self.limits):
                    st = Strategy(dp=dp, cp=cp, zero=zero, offload_optimizer=off_opt,
                                  offload_params=off_params)
                    b = state_bytes_per_param(self.model, st)
                    parts.append((b.weights, b.grads, b.optimizer))
            self._states[dp * cp] = tuple(min(p[k] for p in parts) for k in range(3))
        return self._states[dp * cp]

    def states_cannot_fit(self, outer: Strategy, zero: int, off_opt: bool, off_params: bool) -> bool:
        """Model states alone overflow GPU or host memory on the average stage (the max is at
        least the mean; only block parameters counted): a check that needs no terms."""
        key = (outer.dp * outer.cp, outer.tp * outer.pp, zero, off_opt, off_params)
        if key not in self._fits:
            st = Strategy(dp=outer.dp, cp=outer.cp, zero=zero, offload_optimizer=off_opt,
                          offload_params=off_params)
            states = state_bytes_per_param(self.model, st)
            params = self.model.arch.layers * block_params(self.model.arch) / (outer.tp * outer.pp)
            gpu = (1.0 + ALLOCATOR_FRACTION) * (states.weights + states.grads + states.optimizer) * params
            self._fits[key] = (gpu > self.hw.capacity_bytes
                               or states.host * params > self.hw.host_mem_bytes_per_gpu)
        return self._fits[key]

    def min_state_bytes(self, dp: int, cp: int) -> float:
        """Smallest GPU state bytes per parameter over the ZeRO/offload members."""
        return sum(self.min_state_parts(dp, cp))


def _groups(model: ModelSpec, cluster: ClusterSpec, cache: _Cache, options: SearchOptions):
    """(cheap makespan bound, group) for every group, in a fixed order (the tie-break).

    The bound is `makespan_lower_bound_s` with c = block fwd + bwd without ZeRO traffic (which
    only adds time), so it is below every member's refined bound.
    """
    limits, layers, batch = options.limits, model.arch.layers, model.training.global_batch
    if not target_accepts_model(model, limits):
        return
    worlds = world_sizes(cluster, options.allow_idle or options.objective == "cost")
    for world in worlds:
        for dp, tp, pp, cp in degree_splits(model, world, cluster.gpus_per_node, limits):
            members = sum(len(offload_options(z, limits)) for z in zero_stages(dp, cp, pp, limits))
            weight = _weight(model, Strategy(dp=dp, tp=tp, pp=pp, cp=cp), options)  # per world
            for mbs in micro_batch_sizes(model, dp):
                m = batch // (dp * mbs)
                for sp in sequence_parallel_options(model, tp, cp, limits):
                    block, edge, _ = cache.shape(tp, cp, mbs, sp)
                    block_s = block.fwd + block.bwd
                    first_s, last_s = edge.first_fwd + edge.first_bwd, edge.last_fwd + edge.last_bwd
                    if pp == 1:
                        first_s, last_s = first_s + last_s, 0.0
                    at_one = integer_min_max(layers, pp, 1, block_s, first_s, last_s) if pp > 1 else 0.0
                    for vpp in virtual_stage_counts(model, pp, m, limits):
                        slowest = integer_min_max_for_vpp(layers, pp, vpp, block_s, first_s,
                                                          last_s, at_one)
                        bound = makespan_lower_bound_s(
                            layers=layers, pp=pp, vpp=vpp, micro_batches=m, block_s=block_s,
                            first_s=first_s, last_s=last_s, slowest=slowest) * weight
                        yield bound, _Group((dp, tp, pp, cp, vpp, mbs, sp), members)


def _group_memory_bound(model: ModelSpec, outer: Strategy, cache: _Cache) -> float:
    _, _, act_min = cache.shape(outer.tp, outer.cp, outer.mbs, outer.sp)
    return group_memory_lower_bound_bytes(
        model, outer, state_bytes=cache.min_state_bytes(outer.dp, outer.cp), act_bytes=act_min)


def _member_choices(outer: Strategy, options: SearchOptions):
    """(zero, offload_optimizer, offload_params) of a group's members."""
    for zero in zero_stages(outer.dp, outer.cp, outer.pp, options.limits):
        for off_opt, off_params in offload_options(zero, options.limits):
            yield zero, off_opt, off_params


def _member_strategies(group: _Group, options: SearchOptions):
    """The group's candidates (outer strategies)."""
    outer = group.outer
    for zero, off_opt, off_params in _member_choices(outer, options):
        yield outer.with_(zero=zero, offload_optimizer=off_opt, offload_params=off_params)


def _member_terms(model: ModelSpec, hw: Hardware, st: Strategy, cache: _Cache):
    """A candidate's terms: from the cache's block/edge times, or derived from the same
    candidate with another vpp (only in-flight counts, their extras and p2p depend on vpp)."""
    key = (st.dp, st.tp, st.pp, st.cp, st.mbs, st.sp, st.zero, st.offload_optimizer,
           st.offload_params)
    base = cache.terms.get(key)
    if base is None:
        block, edge, _ = cache.shape(st.tp, st.cp, st.mbs, st.sp)
        cache.terms[key] = candidate_terms(model, st, hw, block=block, edge=edge)
        return cache.terms[key]
    return with_vpp(model, hw, st, base)


def with_vpp(model: ModelSpec, hw: Hardware, st: Strategy, base):
    """`base` (terms of `st` with another vpp) re-evaluated for st.vpp; equal to
    `candidate_terms(model, st, hw)` (tests/test_solve_ilp.py checks it)."""
    m = base.micro_batches
    in_flight = tuple(in_flight_microbatches(i, st, m) for i in range(st.pp))
    extra = tuple(stage_extra_activations(model, st, i, in_flight[i]) for i in range(st.pp))
    return replace(base, in_flight=in_flight, extra_acts=extra, p2p_s=pipeline_p2p_s(model, st, hw))


def _members(model: ModelSpec, hw: Hardware, group: _Group, cache: _Cache, options: SearchOptions):
    """The group's candidates with their terms."""
    for st in _member_strategies(group, options):
        yield st, _member_terms(model, hw, st, cache)





def _rank(model: ModelSpec, hw: Hardware, st: Strategy, terms, ilp: IlpResult,
          options: SearchOptions) -> Ranked:
    """Resolve the ILP's split into a Strategy and cost it with `evaluate()`."""
    resolved = st.with_(stage_layers=tuple(s.layers for s in ilp.stages),
                        stage_recompute=tuple((s.full, s.selective) for s in ilp.stages))
    cost = evaluate(model, resolved, hw, terms, list(ilp.stages))
    return Ranked(strategy=resolved, cost=cost, objective=cost.step_time_s * _weight(model, st, options),
                  ilp_status=ilp.status)


def _count_left(heap: list) -> int:
    return sum(item.members if isinstance(item, _Group) else 1 for _, _, item in heap)



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
