"""The outer search space: small generators, one per strategy dimension (as in Calculon's
`get_all_*` helpers), each applying that dimension's divisibility rules and the target engine's
limits. `outer_candidates` combines them; the ILP later decides the per-stage layer split and
recompute of each candidate.

Every candidate passes `Strategy.validate` (checked by the tests), so the search never hands the
cost model a strategy it would reject.
"""
from __future__ import annotations

from collections.abc import Iterator

from planner.specs import ClusterSpec, ModelSpec
from planner.strategy import Strategy, balanced_split
from planner.targets import EngineLimits


def divisors(n: int) -> list[int]:
    """Positive divisors of n, ascending."""
    small = [d for d in range(1, int(n ** 0.5) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def world_sizes(cluster: ClusterSpec, allow_idle: bool) -> list[int]:
    """GPU counts a plan may use: all of them, or with `allow_idle` any whole number of nodes
    (a plan is launched on whole nodes, and its plan.yaml names that many). Ascending."""
    if not allow_idle:
        return [cluster.gpus]
    return list(range(cluster.gpus_per_node, cluster.gpus + 1, cluster.gpus_per_node))


def tensor_parallel_degrees(model: ModelSpec, gpus_per_node: int, limits: EngineLimits) -> list[int]:
    """tp within a node, dividing heads, kv_heads and ffn_hidden (no KV-head replication)."""
    if not limits.tensor_parallel:
        return [1]
    a = model.arch
    return [t for t in divisors(gpus_per_node)
            if a.heads % t == 0 and a.kv_heads % t == 0 and a.ffn_hidden % t == 0]


def context_parallel_degrees(model: ModelSpec, limits: EngineLimits) -> list[int]:
    """cp with seq_len divisible by 2*cp (load-balanced causal chunks); 1 always."""
    if not limits.context_parallel:
        return [1]
    seq = model.training.seq_len
    return [1] + [c for c in divisors(seq // 2) if c > 1]


def pipeline_degrees(model: ModelSpec, limits: EngineLimits) -> list[int]:
    """pp from 1 to the number of layers (every stage holds at least one block); an engine that
    splits evenly needs pp to divide the layers."""
    if not limits.pipeline:
        return [1]
    layers = model.arch.layers
    if limits.stage_split == "balanced":
        return [p for p in range(1, layers + 1) if min(balanced_split(layers, p)) >= 1]
    if limits.stage_split == "even":
        return [p for p in range(1, layers + 1) if layers % p == 0]
    return list(range(1, layers + 1))


def target_accepts_model(model: ModelSpec, limits: EngineLimits) -> bool:
    """Whether the engine can train this model at all (precision, MoE, shipped model shapes)."""
    if model.training.precision not in limits.precisions:
        return False
    if model.arch.moe is not None and not limits.moe:
        return False
    return limits.known_models is None or limits.known_model(model.arch) is not None


def degree_splits(model: ModelSpec, world: int, gpus_per_node: int,
                  limits: EngineLimits) -> Iterator[tuple[int, int, int, int]]:
    """(dp, tp, pp, cp) with dp*tp*pp*cp = world and dp dividing the global batch."""
    batch = model.training.global_batch
    pps = set(pipeline_degrees(model, limits))
    cps = context_parallel_degrees(model, limits)
    for tp in tensor_parallel_degrees(model, gpus_per_node, limits):
        if world % tp:
            continue
        for cp in cps:
            if (world // tp) % cp:
                continue
            for pp in divisors(world // (tp * cp)):
                dp = world // (tp * cp * pp)
                if pp in pps and batch % dp == 0:
                    yield dp, tp, pp, cp


def micro_batch_sizes(model: ModelSpec, dp: int) -> list[int]:
    """mbs dividing the per-replica batch global_batch / dp."""
    return divisors(model.training.global_batch // dp)


def virtual_stage_counts(model: ModelSpec, pp: int, micro_batches: int,
                         limits: EngineLimits) -> list[int]:
    """vpp: 1, or interleaved chunks when m % pp == 0 and every stage can hold vpp blocks."""
    if pp == 1 or not limits.interleaved or micro_batches % pp:
        return [1]
    layers = model.arch.layers
    most = min(balanced_split(layers, pp)) if limits.stage_split == "balanced" else layers // pp
    return list(range(1, most + 1))


def zero_stages(dp: int, cp: int, pp: int, limits: EngineLimits) -> list[int]:
    """ZeRO stages (those that combine with a pipeline when pp > 1); with a shard group of one
    (dp*cp = 1) sharding is a no-op, so only 0 (and 3, which parameter offload needs) are
    distinct."""
    stages = [z for z in limits.zero_stages if pp == 1 or z in limits.pipeline_zero_stages]
    if dp * cp == 1:
        return [z for z in stages if z in (0, 3)]
    return stages


def offload_options(zero: int, limits: EngineLimits) -> list[tuple[bool, bool]]:
    """(offload_optimizer, offload_params) pairs; parameters only under ZeRO-3, optimizer
    states only with the ZeRO stages the engine offloads them with, both or neither when the
    engine has one switch."""
    optimizer = limits.offload_optimizer and zero in limits.offload_optimizer_zero_stages
    params = zero == 3 and limits.offload_params
    pairs = [(False, False), (True, False), (False, True), (True, True)]
    allowed = [(o, p) for o, p in pairs if (optimizer or not o) and (params or not p)]
    if limits.offload_all_or_none:
        allowed = [(o, p) for o, p in allowed if o == p]
    return allowed


def sequence_parallel_options(model: ModelSpec, tp: int, cp: int, limits: EngineLimits) -> list[bool]:
    """sp on and off when tp > 1 (both searched: the ILP, not an assumption, decides); MoE
    models with tp > 1 need sp (Megatron-Core's rule)."""
    if tp == 1:
        return [False]
    seq_ok = (model.training.seq_len // cp) % tp == 0
    if not (limits.sequence_parallel and seq_ok):
        return [] if model.arch.moe is not None else [False]
    return [True] if model.arch.moe is not None else [True, False]


def expert_parallel_options(model: ModelSpec, dp: int, tp: int, cp: int, gpus_per_node: int,
                            limits: EngineLimits) -> list[tuple[int, int]]:
    """(ep, etp) for an MoE model (Strategy._validate_experts): ep divides the routed experts,
    etp the expert FFN width and stays within a node, and ep*etp divides the tp*cp*dp ranks
    the experts are drawn from; the engine's fixed rules (etp tied to tp, no biased
    tensor-parallel experts) apply here, the ZeRO-dependent one per member. (1, 1) for dense."""
    moe = model.arch.moe
    if moe is None:
        return [(1, 1)]
    ranks = tp * cp * dp
    options = []
    for etp in divisors(gpus_per_node):
        if moe.expert_ffn_hidden % etp or ranks % etp:
            continue
        for ep in divisors(ranks // etp):
            if moe.routed_experts % ep:
                continue
            if (ep > 1 or etp > 1) and not limits.expert_parallel:
                continue
            if limits.expert_tensor_parallel == "tp_without_ep" and etp != (tp if ep == 1 else 1):
                continue
            if etp > 1 and model.arch.linear_bias and not limits.expert_tensor_parallel_bias:
                continue
            options.append((ep, etp))
    return options


def ep_comm_overlap_options(model: ModelSpec, ep: int, pp: int, vpp: int, micro_batches: int,
                            limits: EngineLimits) -> list[bool]:
    """The expert-parallel all-to-all overlap off and, for an MoE model with ep > 1 and at least
    two micro-batches to pair on an engine that has it (interleaved when it needs that), on: it
    trades one block's activations and no full recompute for hidden exchanges, so the ILP, not
    an assumption, decides. (One micro-batch has nothing to pair with: same time, more memory.)"""
    if model.arch.moe is None or ep == 1 or micro_batches < 2 or not limits.ep_comm_overlap:
        return [False]
    if limits.ep_comm_overlap_needs_interleaved and pp > 1 and vpp == 1:
        return [False]
    return [False, True]


def expert_member_ok(st: Strategy, model: ModelSpec, limits: EngineLimits) -> bool:
    """The ZeRO-dependent engine rule: ep within the sharded ranks cp*tp*(dp if ZeRO > 0)."""
    if model.arch.moe is None or not limits.expert_parallel_from_shards:
        return True
    return (st.cp * st.tp * (st.dp if st.zero > 0 else 1)) % st.ep == 0


def outer_candidates(model: ModelSpec, cluster: ClusterSpec, limits: EngineLimits,
                     allow_idle: bool = False) -> Iterator[Strategy]:
    """Every outer strategy (no per-stage split or recompute yet), in a fixed order."""
    if not target_accepts_model(model, limits):
        return
    for world in world_sizes(cluster, allow_idle):
        for dp, tp, pp, cp in degree_splits(model, world, cluster.gpus_per_node, limits):
            for mbs in micro_batch_sizes(model, dp):
                m = model.training.global_batch // (dp * mbs)
                for vpp in virtual_stage_counts(model, pp, m, limits):
                    for sp in sequence_parallel_options(model, tp, cp, limits):
                        for ep, etp in expert_parallel_options(model, dp, tp, cp,
                                                               cluster.gpus_per_node, limits):
                            for overlap in ep_comm_overlap_options(model, ep, pp, vpp, m,
                                                                   limits):
                                yield from _members(model, limits, Strategy(
                                    dp=dp, tp=tp, pp=pp, cp=cp, vpp=vpp, mbs=mbs, ep=ep, etp=etp,
                                    sp=sp, ep_comm_overlap=overlap))


def _members(model: ModelSpec, limits: EngineLimits, outer: Strategy) -> Iterator[Strategy]:
    """`outer` with every ZeRO stage and offload choice the engine allows."""
    for zero in zero_stages(outer.dp, outer.cp, outer.pp, limits):
        for off_opt, off_params in offload_options(zero, limits):
            st = outer.with_(zero=zero, offload_optimizer=off_opt, offload_params=off_params)
            if expert_member_ok(st, model, limits):
                yield st
