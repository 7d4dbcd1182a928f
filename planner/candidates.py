"""The search's candidates: families and groups of outer strategies with cheap bounds, and
their members.

A group shares degrees, mbs, sp, ep, etp and vpp; its members differ in ZeRO stage and offload.
A family holds the groups that differ only in vpp. Families are what the best-first search
orders first, then groups; members get their own `CandidateTerms` only when their group is
popped. The shared pieces are cached in planner/cache.py.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from cost_models.hardware import Hardware
from cost_models.memory import in_flight_microbatches, stage_extra_activations
from cost_models.terms import candidate_terms
from planner.bounds import (group_memory_lower_bound_bytes, integer_min_max, split_by_kind,
                            integer_min_max_for_vpp, makespan_lower_bound_s, pipeline_p2p_s)
from planner.cache import Cache
from planner.ilp import Solver
from planner.space import (degree_splits, ep_comm_overlap_options, expert_member_ok,
                           expert_parallel_options,
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
    progress: Callable[[Any], None] | None = None
    """Called with a `search.SearchProgress` at every step of the search (the CLI's live line)."""


@dataclass
class Group:
    """Candidates sharing degrees, mbs, sp and vpp; members differ in ZeRO and offload.
    `checked` once its p2p time and group memory bound have been applied."""

    degrees: tuple[int, int, int, int, int, int, bool, int, int, bool]
    """(dp, tp, pp, cp, vpp, mbs, sp, ep, etp, ep_comm_overlap); the Strategy is built only if
    the group is popped."""
    members: int
    """Candidates in the group (in all its groups for a family)."""
    vpps: tuple[int, ...] = ()
    """A family of groups that differ only in vpp: their vpp values (`candidates.expand`)."""
    checked: bool = False
    p2p_s: float = 0.0
    """The group's pipeline p2p time (same for all its members), set when it is checked."""

    @property
    def outer(self) -> Strategy:
        """The group's strategy without ZeRO/offload choices."""
        dp, tp, pp, cp, vpp, mbs, sp, ep, etp, overlap = self.degrees
        return Strategy(dp=dp, tp=tp, pp=pp, cp=cp, vpp=vpp, mbs=mbs, sp=sp, ep=ep, etp=etp,
                        ep_comm_overlap=overlap)


def objective_weight(model: ModelSpec, st: Strategy, options: SearchOptions) -> float:
    """Objective per second of step time: 1, or GPU-hours per step-second for T tokens."""
    if options.objective == "time":
        return 1.0
    steps = options.tokens / model.training.tokens_per_step
    return steps * st.world / 3600.0


def families(model: ModelSpec, cluster: ClusterSpec, cache: Cache, options: SearchOptions):
    """(cheap bound, family) for every family of groups that differ only in vpp, in a fixed
    order (the tie-break); `expand` turns a popped family into its groups.

    A group's bound is `makespan_lower_bound_s` with c = block fwd + bwd without ZeRO traffic
    (which only adds time), so it is below every member's refined bound; for an MoE model c is
    the MoE block's and stage 0 carries its d dense blocks (`bounds.kind_split`). Groups with and
    without the all-to-all overlap form separate families (their block times differ). The family's
    bound is below each of its groups': with S the block sum and T_v the integer min-max for v,
    T_v >= T_1 (larger minimum counts) and S >= T_1 (every stage's value is >= 0), so
    S/v + (m - 1/v) T_v >= m T_1 + (S - T_1)/v >= m T_1 + (S - T_1)/v_max.
    """
    limits, layers, batch = options.limits, model.arch.layers, model.training.global_batch
    if not target_accepts_model(model, limits):
        return
    d = _dense_blocks(model)
    worlds = world_sizes(cluster, options.allow_idle or options.objective == "cost")
    for world in worlds:
        for dp, tp, pp, cp in degree_splits(model, world, cluster.gpus_per_node, limits):
            weight = objective_weight(model, Strategy(dp=dp, tp=tp, pp=pp, cp=cp), options)  # per world
            experts = expert_parallel_options(model, dp, tp, cp, cluster.gpus_per_node, limits)
            members = {ep: _member_count(model, Strategy(dp=dp, tp=tp, pp=pp, cp=cp, ep=ep), limits)
                       for ep in {ep for ep, _ in experts}}
            for mbs in micro_batch_sizes(model, dp):
                m = batch // (dp * mbs)
                vpps = tuple(virtual_stage_counts(model, pp, m, limits))
                for sp, (ep, etp), overlap in itertools.product(
                        sequence_parallel_options(model, tp, cp, limits), experts, (False, True)):
                    chosen = tuple(v for v in vpps if overlap in ep_comm_overlap_options(
                        model, ep, pp, v, m, limits))
                    if not chosen:
                        continue
                    c, first_s, last_s = _block_and_edges(model, cache, tp, cp, mbs, sp, ep, etp,
                                                          overlap)
                    total = layers * c + first_s + last_s
                    bound = m * total
                    if pp > 1:
                        at_one = integer_min_max(layers, pp, 1, c, first_s, last_s, d)
                        bound = m * at_one + min((total - at_one) / v for v in (1, max(chosen)))
                    yield bound * weight, Group((dp, tp, pp, cp, chosen[0], mbs, sp, ep, etp, overlap),
                                                members[ep] * len(chosen), vpps=chosen)


def expand(model: ModelSpec, family: Group, cache: Cache, options: SearchOptions):
    """(bound, group) for each vpp of a family (see `families`)."""
    dp, tp, pp, cp, _, mbs, sp, ep, etp, overlap = family.degrees
    layers, d = model.arch.layers, _dense_blocks(model)
    m = model.training.global_batch // (dp * mbs)
    weight = objective_weight(model, family.outer, options)
    c, first_s, last_s = _block_and_edges(model, cache, tp, cp, mbs, sp, ep, etp, overlap)
    at_one = integer_min_max(layers, pp, 1, c, first_s, last_s, d) if pp > 1 else 0.0
    for vpp in family.vpps:
        slowest = integer_min_max_for_vpp(layers, pp, vpp, c, first_s, last_s, at_one, d)
        bound = makespan_lower_bound_s(
            layers=layers, pp=pp, vpp=vpp, micro_batches=m, block_s=c, first_s=first_s,
            last_s=last_s, slowest=slowest, first_blocks=d) * weight
        members = family.members // len(family.vpps)
        yield bound, Group((dp, tp, pp, cp, vpp, mbs, sp, ep, etp, overlap), members)


def groups(model: ModelSpec, cluster: ClusterSpec, cache: Cache, options: SearchOptions):
    """(cheap makespan bound, group) for every group, in a fixed order."""
    for _, family in families(model, cluster, cache, options):
        yield from expand(model, family, cache, options)


def _dense_blocks(model: ModelSpec) -> int:
    """An MoE model's leading dense blocks (on stage 0); 0 for a dense model."""
    return model.arch.moe.first_dense_layers if model.arch.moe is not None else 0


def _block_and_edges(model: ModelSpec, cache: Cache, tp: int, cp: int, mbs: int, sp: bool,
                     ep: int, etp: int, overlap: bool = False) -> tuple[float, float, float]:
    """(c, first, last) of the group bound: the (MoE) block's fwd + bwd, stage 0's edge plus its
    dense blocks' shift, the last stage's edge (pp = 1: both edges on stage 0 is the caller's
    sum first + last), split by kind as `bounds.kind_split` does."""
    shape = cache.shape(tp, cp, mbs, sp, ep, etp, overlap)
    edge = shape.edge
    moe = model.arch.moe
    c, shift = split_by_kind(moe.first_dense_layers, moe.layer_interval, shape.dense_s,
                             shape.moe_s) if moe is not None else (shape.dense_s, 0.0)
    return c, edge.first_fwd + edge.first_bwd + shift, edge.last_fwd + edge.last_bwd


def _member_count(model: ModelSpec, outer: Strategy, limits: EngineLimits) -> int:
    """Members (ZeRO stage x offload choices) of the groups with outer's dp, tp, pp, cp, ep."""
    stages = zero_stages(outer.dp, outer.cp, outer.pp, limits)
    return sum(len(offload_options(z, limits)) for z in stages
               if expert_member_ok(outer.with_(zero=z), model, limits))


def group_memory_bound(model: ModelSpec, outer: Strategy, cache: Cache) -> float:
    """`group_memory_lower_bound_bytes` with the cached per-kind pieces."""
    dense_act, moe_act = cache.smallest_activations(outer.tp, outer.cp, outer.mbs, outer.sp,
                                                    outer.ep, outer.etp, outer.ep_comm_overlap)
    expert_state = (cache.min_state_bytes(outer.dp, outer.cp, outer.expert_dp())
                    if model.arch.moe is not None else 0.0)
    return group_memory_lower_bound_bytes(
        model, outer, state_bytes=cache.min_state_bytes(outer.dp, outer.cp),
        act_bytes=dense_act, expert_state_bytes=expert_state, moe_act_bytes=moe_act)


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
    key = (st.dp, st.tp, st.pp, st.cp, st.mbs, st.sp, st.ep, st.etp, st.ep_comm_overlap, st.zero,
           st.offload_optimizer, st.offload_params)
    base = cache.terms.get(key)
    if base is None:
        shape = cache.shape(st.tp, st.cp, st.mbs, st.sp, st.ep, st.etp, st.ep_comm_overlap)
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
