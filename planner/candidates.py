"""The search's candidates: groups of outer strategies with cheap bounds, their members, and
the caches that let many candidates share block times, state bytes and terms.

A group shares degrees, mbs, sp and vpp; its members differ in ZeRO stage and offload. Groups are
what the best-first search orders first; members get their own `CandidateTerms` only when their
group is popped.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Any

from cost_models.block import BlockTimes, EdgeTimes, block_times, edge_times
from cost_models.flops import block_params
from cost_models.hardware import Hardware
from cost_models.memory import (ALLOCATOR_FRACTION, block_activations, in_flight_microbatches,
                                stage_extra_activations, state_bytes_per_param)
from cost_models.moe import moe_block_activations, moe_block_params, moe_block_times
from cost_models.terms import candidate_terms
from planner.bounds import (group_memory_lower_bound_bytes, integer_min_max,
                            integer_min_max_for_vpp, makespan_lower_bound_s, pipeline_p2p_s,
                            step_lower_bound_s)
from planner.ilp import Solver
from planner.space import (degree_splits, expert_member_ok, expert_parallel_options,
                           micro_batch_sizes, offload_options, sequence_parallel_options,
                           target_accepts_model, virtual_stage_counts, world_sizes, zero_stages)
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


@dataclass
class Group:
    """Candidates sharing degrees, mbs, sp and vpp; members differ in ZeRO and offload.
    `checked` once its p2p time and group memory bound have been applied."""

    degrees: tuple[int, int, int, int, int, int, bool, int, int]
    """(dp, tp, pp, cp, vpp, mbs, sp, ep, etp); the Strategy is built only if the group is popped."""
    members: int
    checked: bool = False
    p2p_s: float = 0.0
    """The group's pipeline p2p time (same for all its members), set when it is checked."""

    @property
    def outer(self) -> Strategy:
        """The group's strategy without ZeRO/offload choices."""
        dp, tp, pp, cp, vpp, mbs, sp, ep, etp = self.degrees
        return Strategy(dp=dp, tp=tp, pp=pp, cp=cp, vpp=vpp, mbs=mbs, sp=sp, ep=ep, etp=etp)


def objective_weight(model: ModelSpec, st: Strategy, options: SearchOptions) -> float:
    """Objective per second of step time: 1, or GPU-hours per step-second for T tokens."""
    if options.objective == "time":
        return 1.0
    steps = options.tokens / model.training.tokens_per_step
    return steps * st.world / 3600.0


@dataclass(frozen=True, kw_only=True)
class Shape:
    """What the candidates sharing tp, cp, mbs, sp, ep and etp have in common."""

    block: BlockTimes
    """Times of a dense block."""
    edge: EdgeTimes
    dense_act: float
    """Smallest stored activation bytes of a dense block over the allowed recompute modes."""
    moe_act: float
    """The same for an MoE block (= dense_act for a dense model)."""
    dense_s: float
    """fwd + bwd seconds of a dense block (no ZeRO traffic)."""
    moe_s: float
    """fwd + bwd seconds of an MoE block (= dense_s for a dense model)."""


class Cache:
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
        """Candidate terms by everything but vpp (see `member_terms`)."""

    def shape(self, tp: int, cp: int, mbs: int, sp: bool, ep: int = 1, etp: int = 1) -> Shape:
        """Block and edge times and smallest stored activations per block kind (`Shape`)."""
        key = (tp, cp, mbs, sp, ep, etp)
        if key not in self._shapes:
            probe = Strategy(tp=tp, cp=cp, mbs=mbs, sp=sp, ep=ep, etp=etp)
            modes = ("none", *self.limits.recompute_modes)
            dense_times, dense_acts = block_times(self.model, probe, self.hw), block_activations(self.model, probe)
            moe_times, moe_acts = dense_times, dense_acts
            if self.model.arch.moe is not None:
                moe_times = moe_block_times(self.model, probe, self.hw)
                moe_acts = moe_block_activations(self.model, probe)
            self._shapes[key] = Shape(
                block=dense_times, edge=edge_times(self.model, probe, self.hw),
                dense_act=min(getattr(dense_acts, mode) for mode in modes),
                moe_act=min(getattr(moe_acts, mode) for mode in modes),
                dense_s=dense_times.fwd + dense_times.bwd, moe_s=moe_times.fwd + moe_times.bwd)
        return self._shapes[key]

    def min_state_parts(self, dp: int, cp: int, shard: int | None = None) -> tuple[float, float, float]:
        """Smallest GPU (weights, grads, optimizer) bytes per parameter over the ZeRO/offload
        members, each minimised on its own; `shard` is the group that shards the parameters'
        states (default dp*cp; an MoE model's expert data-parallel group for routed experts)."""
        key = (dp * cp, shard)
        if key not in self._states:
            parts = []
            for zero in zero_stages(dp, cp, 1, self.limits):
                for off_opt, off_params in offload_options(zero, self.limits):
                    st = Strategy(dp=dp, cp=cp, zero=zero, offload_optimizer=off_opt,
                                  offload_params=off_params)
                    b = state_bytes_per_param(self.model, st, shard=shard)
                    parts.append((b.weights, b.grads, b.optimizer))
            self._states[key] = tuple(min(p[k] for p in parts) for k in range(3))
        return self._states[key]

    def states_cannot_fit(self, outer: Strategy, zero: int, off_opt: bool, off_params: bool) -> bool:
        """Model states alone overflow GPU or host memory on the average stage (the max is at
        least the mean; only block parameters counted, each block with its kind: an MoE model's
        d dense blocks and L - d MoE blocks, whose routed experts' states shard over the expert
        data-parallel group): a check that needs no terms."""
        key = (outer.dp * outer.cp, outer.tp, outer.pp, outer.ep, outer.etp, zero, off_opt, off_params)
        if key not in self._fits:
            st = Strategy(dp=outer.dp, cp=outer.cp, zero=zero, offload_optimizer=off_opt,
                          offload_params=off_params)
            states = state_bytes_per_param(self.model, st)
            gpu_state = states.weights + states.grads + states.optimizer
            arch, layers = self.model.arch, self.model.arch.layers
            dense = block_params(arch) / outer.tp
            gpu, host = layers * dense * gpu_state, layers * dense * states.host
            if arch.moe is not None:
                d, split = arch.moe.first_dense_layers, moe_block_params(self.model, outer)
                experts = state_bytes_per_param(self.model, st, shard=outer.expert_dp())
                expert_state = experts.weights + experts.grads + experts.optimizer
                gpu = d * dense * gpu_state + (layers - d) * (split.dense * gpu_state
                                                              + split.experts * expert_state)
                host = d * dense * states.host + (layers - d) * (split.dense * states.host
                                                                 + split.experts * experts.host)
            self._fits[key] = ((1.0 + ALLOCATOR_FRACTION) * gpu / outer.pp > self.hw.capacity_bytes
                               or host / outer.pp > self.hw.host_mem_bytes_per_gpu)
        return self._fits[key]

    def step_bound(self, terms, st: Strategy) -> float:
        """`step_lower_bound_s` of a member (its integer min-max is memoised in bounds.py)."""
        return step_lower_bound_s(terms, st, self.model.arch.layers)

    def min_state_bytes(self, dp: int, cp: int, shard: int | None = None) -> float:
        """Smallest GPU state bytes per parameter over the ZeRO/offload members."""
        return sum(self.min_state_parts(dp, cp, shard))


def groups(model: ModelSpec, cluster: ClusterSpec, cache: Cache, options: SearchOptions):
    """(cheap makespan bound, group) for every group, in a fixed order (the tie-break).

    The bound is `makespan_lower_bound_s` with c = block fwd + bwd without ZeRO traffic (which
    only adds time), so it is below every member's refined bound; for an MoE model c is the MoE
    block's and stage 0 carries its d dense blocks (`bounds.kind_split`).
    """
    limits, layers, batch = options.limits, model.arch.layers, model.training.global_batch
    if not target_accepts_model(model, limits):
        return
    d = model.arch.moe.first_dense_layers if model.arch.moe is not None else 0
    worlds = world_sizes(cluster, options.allow_idle or options.objective == "cost")
    for world in worlds:
        for dp, tp, pp, cp in degree_splits(model, world, cluster.gpus_per_node, limits):
            weight = objective_weight(model, Strategy(dp=dp, tp=tp, pp=pp, cp=cp), options)  # per world
            experts = expert_parallel_options(model, dp, tp, cp, cluster.gpus_per_node, limits)
            members = {ep: _member_count(model, Strategy(dp=dp, tp=tp, pp=pp, cp=cp, ep=ep), limits)
                       for ep in {ep for ep, _ in experts}}
            for mbs in micro_batch_sizes(model, dp):
                m = batch // (dp * mbs)
                for sp, (ep, etp) in itertools.product(
                        sequence_parallel_options(model, tp, cp, limits), experts):
                    shape = cache.shape(tp, cp, mbs, sp, ep, etp)
                    edge, c = shape.edge, shape.moe_s
                    first_s = edge.first_fwd + edge.first_bwd + d * (shape.dense_s - shape.moe_s)
                    last_s = edge.last_fwd + edge.last_bwd
                    if pp == 1:
                        first_s, last_s = first_s + last_s, 0.0
                    at_one = integer_min_max(layers, pp, 1, c, first_s, last_s, d) if pp > 1 else 0.0
                    for vpp in virtual_stage_counts(model, pp, m, limits):
                        slowest = integer_min_max_for_vpp(layers, pp, vpp, c, first_s, last_s,
                                                          at_one, d)
                        bound = makespan_lower_bound_s(
                            layers=layers, pp=pp, vpp=vpp, micro_batches=m, block_s=c,
                            first_s=first_s, last_s=last_s, slowest=slowest, first_blocks=d) * weight
                        yield bound, Group((dp, tp, pp, cp, vpp, mbs, sp, ep, etp), members[ep])


def _member_count(model: ModelSpec, outer: Strategy, limits: EngineLimits) -> int:
    """Members (ZeRO stage x offload choices) of the groups with outer's dp, tp, pp, cp, ep."""
    return sum(len(offload_options(z, limits)) for z in zero_stages(outer.dp, outer.cp, outer.pp, limits)
               if expert_member_ok(outer.with_(zero=z), model, limits))


def group_memory_bound(model: ModelSpec, outer: Strategy, cache: Cache) -> float:
    """`group_memory_lower_bound_bytes` with the cached per-kind pieces."""
    shape = cache.shape(outer.tp, outer.cp, outer.mbs, outer.sp, outer.ep, outer.etp)
    expert_state = (cache.min_state_bytes(outer.dp, outer.cp, outer.expert_dp())
                    if model.arch.moe is not None else 0.0)
    return group_memory_lower_bound_bytes(
        model, outer, state_bytes=cache.min_state_bytes(outer.dp, outer.cp),
        act_bytes=shape.dense_act, expert_state_bytes=expert_state, moe_act_bytes=shape.moe_act)


def member_choices(model: ModelSpec, outer: Strategy, options: SearchOptions):
    """(zero, offload_optimizer, offload_params) of a group's members."""
    for zero in zero_stages(outer.dp, outer.cp, outer.pp, options.limits):
        if not expert_member_ok(outer.with_(zero=zero), model, options.limits):
            continue
        for off_opt, off_params in offload_options(zero, options.limits):
            yield zero, off_opt, off_params


def member_strategies(model: ModelSpec, group: Group, options: SearchOptions):
    """The group's candidates (outer strategies)."""
    outer = group.outer
    for zero, off_opt, off_params in member_choices(model, outer, options):
        yield outer.with_(zero=zero, offload_optimizer=off_opt, offload_params=off_params)


def member_base_terms(model: ModelSpec, hw: Hardware, st: Strategy, cache: Cache):
    """Terms of `st` at whatever vpp the cache first saw this candidate with (block/edge times
    from the cache); `member_terms` turns them into st's own."""
    key = (st.dp, st.tp, st.pp, st.cp, st.mbs, st.sp, st.ep, st.etp, st.zero,
           st.offload_optimizer, st.offload_params)
    base = cache.terms.get(key)
    if base is None:
        shape = cache.shape(st.tp, st.cp, st.mbs, st.sp, st.ep, st.etp)
        base = cache.terms[key] = candidate_terms(model, st, hw, block=shape.block, edge=shape.edge)
    return base


def member_terms(model: ModelSpec, hw: Hardware, st: Strategy, base):
    """st's terms from `base` (the same candidate, possibly at another vpp: only in-flight
    counts, their extras and p2p depend on vpp)."""
    if tuple(base.in_flight) == tuple(in_flight_microbatches(i, st, base.micro_batches)
                                      for i in range(st.pp)):
        return base if base.p2p_s == pipeline_p2p_s(model, st, hw) else with_vpp(model, hw, st, base)
    return with_vpp(model, hw, st, base)


def with_vpp(model: ModelSpec, hw: Hardware, st: Strategy, base):
    """`base` (terms of `st` with another vpp) re-evaluated for st.vpp; equal to
    `candidate_terms(model, st, hw)` (tests/test_solve_ilp.py checks it)."""
    m = base.micro_batches
    in_flight = tuple(in_flight_microbatches(i, st, m) for i in range(st.pp))
    extra = tuple(stage_extra_activations(model, st, i, in_flight[i]) for i in range(st.pp))
    return replace(base, in_flight=in_flight, extra_acts=extra, p2p_s=pipeline_p2p_s(model, st, hw))


def members(model: ModelSpec, hw: Hardware, group: Group, cache: Cache, options: SearchOptions):
    """The group's candidates with their terms."""
    for st in member_strategies(model, group, options):
        yield st, member_terms(model, hw, st, member_base_terms(model, hw, st, cache))
