"""Per-candidate cost terms: everything about a strategy's cost that does not depend on the
per-stage layer split or per-stage recompute, so that a stage's time and memory are linear in
its block counts. `estimate()` evaluates these terms for one split; the ILP optimises over splits
with the very same coefficients (so "optimal under the model" means under `estimate()`).

A model has at most two kinds of block: dense blocks and, for mixture-of-experts models, MoE
blocks (`BlockKind`); each kind has its own per-block time, activations and parameters.
"""
from __future__ import annotations

from dataclasses import dataclass

from cost_models import comm
from cost_models.block import BlockTimes, EdgeTimes, block_times, edge_times
from cost_models.flops import block_params, embedding_params, head_params
from cost_models.hardware import Hardware
from cost_models.memory import (ZERO3_PREFETCH_BLOCKS, BlockActivations, StateBytes,
                                block_activations, element_bytes, in_flight_microbatches,
                                optimizer_bytes_per_param, stage_extra_activations,
                                state_bytes_per_param)
from cost_models.moe import moe_block_activations, moe_block_params, moe_block_times
from cost_models.pipeline import p2p_transfers_on_critical_path
from planner.specs import ModelSpec, moe_blocks_before
from planner.strategy import Strategy

GRAD_BUCKET_PARAMS = 40_000_000
"""Megatron-Core's default DDP bucket (`--ddp-bucket-size` = max(40M, 1M * dp) parameters); the
last bucket is reduced after the backward ends and cannot overlap."""


@dataclass(frozen=True)
class BlockKind:
    """Per-block terms of one kind of block (dense or MoE) on one GPU, per micro-batch."""

    times: BlockTimes
    acts: BlockActivations
    params: float
    """Parameters whose states shard over dp*cp (after TP)."""
    expert_params: float
    """Routed-expert parameters, whose states shard over the expert data-parallel group."""
    zero_fwd_s: float
    """Exposed ZeRO-2/3 traffic in the forward."""
    zero_bwd_s: float
    """Exposed ZeRO-2/3 traffic in the backward."""

    @property
    def none_s(self) -> float:
        """Time of a block that stores everything."""
        return self.times.fwd + self.times.bwd + self.zero_fwd_s + self.zero_bwd_s

    @property
    def full_s(self) -> float:
        """Time of a fully recomputed block."""
        return self.none_s + self.times.recompute_full

    @property
    def selective_s(self) -> float:
        """Time of a selectively recomputed block."""
        return self.none_s + self.times.recompute_selective


@dataclass(frozen=True)
class CandidateTerms:
    """Linear coefficients of stage time and memory for one outer strategy."""

    micro_batches: int
    dense: BlockKind
    moe: BlockKind | None
    """MoE blocks (None for dense models)."""
    first_dense_layers: int
    """Leading blocks that are dense in an MoE model (all blocks for a dense model)."""
    moe_interval: int
    """After the leading dense blocks, the last block of every group of this many is MoE
    (`MoESpec.layer_interval`; 1 for dense models)."""
    edge: EdgeTimes
    states: StateBytes
    """Per-parameter bytes of parameters sharded over dp*cp."""
    expert_states: StateBytes
    """Per-parameter bytes of routed-expert parameters (sharded over the expert DP group)."""
    first_params: float
    """Embedding parameters on stage 0 (after TP)."""
    last_params: float
    """Final norm + output layer parameters on the last stage (after TP)."""
    in_flight: tuple[float, ...]
    """Micro-batches of activations held per stage (in whole-stage units)."""
    extra_acts: tuple[float, ...]
    """Embedding/logits activation bytes per stage."""
    zero3_buffer_bytes: float
    """Unsharded prefetch buffers under ZeRO-3."""
    paired_block_bytes: float
    """Under ep_comm_overlap, one more block's activations on every stage: a paired forward
    stores its block before the paired backward frees its own (0 otherwise)."""
    grad_comm_s_per_param: float
    """Step-level gradient reduction time per dp*cp-sharded parameter (ZeRO 0/1)."""
    expert_grad_comm_s_per_param: float
    """The same for routed-expert parameters over the expert data-parallel group."""
    grad_tail_s: float
    """The last bucket's reduction, never hidden."""
    param_gather_s_per_param: float
    """Step-level parameter all-gather per parameter (ZeRO-1 distributed optimizer)."""
    expert_param_gather_s_per_param: float
    """The same for routed-expert parameters."""
    optimizer_s_per_param: float
    """Optimizer step time per dp*cp-sharded parameter held (before sharding)."""
    expert_optimizer_s_per_param: float
    """Optimizer step time per routed-expert parameter held (before sharding)."""
    p2p_s: float
    """Exposed pipeline send/recv per step."""

    @property
    def block(self) -> BlockTimes:
        """Times of a dense block."""
        return self.dense.times

    @property
    def acts(self) -> BlockActivations:
        """Activations of a dense block."""
        return self.dense.acts

    @property
    def block_params(self) -> float:
        """Parameters of one dense block on one GPU (after TP, before ZeRO)."""
        return self.dense.params

    @property
    def zero_block_fwd_s(self) -> float:
        return self.dense.zero_fwd_s

    @property
    def zero_block_bwd_s(self) -> float:
        return self.dense.zero_bwd_s

    @property
    def block_none_s(self) -> float:
        """Per micro-batch time of a dense block that stores everything."""
        return self.dense.none_s

    @property
    def block_full_s(self) -> float:
        """Per micro-batch time of a fully recomputed dense block."""
        return self.dense.full_s

    @property
    def block_selective_s(self) -> float:
        """Per micro-batch time of a selectively recomputed dense block."""
        return self.dense.selective_s

    def edge_s(self, stage: int, pp: int) -> tuple[float, float]:
        """Forward and backward time of the embedding/output layer on `stage`."""
        fwd = bwd = 0.0
        if stage == 0:
            fwd, bwd = fwd + self.edge.first_fwd, bwd + self.edge.first_bwd
        if stage == pp - 1:
            fwd, bwd = fwd + self.edge.last_fwd, bwd + self.edge.last_bwd
        return fwd, bwd

    def moe_blocks_before(self, index: int) -> int:
        """MoE blocks among blocks 0 .. index-1 (`MoESpec.moe_layers_before`)."""
        if self.moe is None:
            return 0
        return moe_blocks_before(index, self.first_dense_layers, self.moe_interval)

    def stage_params(self, stage: int, pp: int, blocks: float, moe_blocks: float = 0) -> float:
        """dp*cp-sharded parameters held by a GPU of `stage` (before ZeRO)."""
        params = blocks * self.dense.params + (moe_blocks * self.moe.params if moe_blocks else 0.0)
        if stage == 0:
            params += self.first_params
        if stage == pp - 1:
            params += self.last_params
        return params

    def stage_expert_params(self, moe_blocks: float) -> float:
        """Routed-expert parameters held by a GPU with `moe_blocks` MoE blocks."""
        return moe_blocks * self.moe.expert_params if moe_blocks else 0.0


def _zero_block_s(gather_params: list[tuple[float, int]], link_of, st: Strategy, hw: Hardware,
                  times: BlockTimes, grad_bytes: int) -> tuple[float, float]:
    """Exposed ZeRO-2/3 traffic of one block per micro-batch, forward and backward.

    ZeRO-3 gathers the block's 16-bit weights before its forward and backward; ZeRO-2/3
    reduce-scatter its gradients after the backward (Rajbhandari et al. 2020 §5; FSDP), each over
    the group that shards those parameters. Prefetching hides them behind the block's compute.
    """
    gather = scatter = 0.0
    for params, group in gather_params:
        if group <= 1 or params <= 0:
            continue
        link = link_of(group)
        if st.zero == 3:
            gather += comm.collective_time_s("all_gather", 2 * params, group, link)
            if st.offload_params:
                gather += 2 * params / group / hw.host_device_Bps
        scatter += comm.collective_time_s("reduce_scatter", grad_bytes * params, group, link)
    return comm.exposed_s(gather, times.fwd_compute), comm.exposed_s(gather + scatter, times.bwd_compute)


def candidate_terms(model: ModelSpec, st: Strategy, hw: Hardware, *,
                    block: BlockTimes | None = None, edge: EdgeTimes | None = None) -> CandidateTerms:
    """Evaluate the split-independent cost terms of strategy `st` on hardware `hw`.

    `block` and `edge` may pass `block_times`/`edge_times` already computed for a strategy with
    the same tp, cp, mbs, sp and overlap flags (the search caches them across candidates).
    """
    arch, train = model.arch, model.training
    m = st.micro_batches(model)
    n_shard, n_expert = st.dp * st.cp, st.expert_dp()
    grad_bytes = 4 if train.grads_fp32 else 2

    def link_of(group: int):
        stride = st.tp if group == n_shard else st.ep * st.etp
        return comm.ring_link(hw, group, stride)

    dense_times = block or block_times(model, st, hw)
    dense_params = block_params(arch) / st.tp
    zero = (0.0, 0.0)
    if st.zero >= 2:
        zero = _zero_block_s([(dense_params, n_shard)], link_of, st, hw, dense_times, grad_bytes)
    dense = BlockKind(dense_times, block_activations(model, st), dense_params, 0.0, *zero)
    moe = None
    if arch.moe is not None:
        moe_times, split = moe_block_times(model, st, hw), moe_block_params(model, st)
        zero = (0.0, 0.0)
        if st.zero >= 2:
            zero = _zero_block_s([(split.dense, n_shard), (split.experts, n_expert)], link_of, st, hw,
                                 moe_times, grad_bytes)
        moe = BlockKind(moe_times, moe_block_activations(model, st), split.dense, split.experts, *zero)

    first = embedding_params(arch, train.seq_len, st.tp) / st.tp
    last = head_params(arch, st.tp) / st.tp if not (arch.tied_embeddings and st.pp == 1) else \
        arch.hidden / st.tp
    in_flight = tuple(in_flight_microbatches(i, st, m) for i in range(st.pp))
    extra = tuple(stage_extra_activations(model, st, i, in_flight[i]) for i in range(st.pp))

    def step_comm(group: int) -> tuple[float, float]:
        if st.zero >= 2 or group <= 1:
            return 0.0, 0.0
        kind = "all_reduce" if st.zero == 0 else "reduce_scatter"
        grad = comm.collective_time_s(kind, grad_bytes * 1e9, group, link_of(group)) / 1e9
        gather = comm.collective_time_s("all_gather", 2e9, group, link_of(group)) / 1e9 \
            if st.zero == 1 else 0.0
        return grad, gather

    grad_per_param, param_per_param = step_comm(n_shard)
    expert_grad, expert_gather = step_comm(n_expert) if moe else (0.0, 0.0)
    avg_params = (dense_params * arch.layers + first + last) / st.pp
    tail_params = min(GRAD_BUCKET_PARAMS / st.tp, avg_params)
    grad_tail = grad_per_param * tail_params if st.overlap_grad_reduce else 0.0

    p2p = 0.0
    if st.pp > 1:
        # Scatter/gather optimisation: each TP rank sends 1/t of the activation (Narayanan §4.1).
        nbytes = st.mbs * (train.seq_len // st.cp) * arch.hidden * 2 / st.tp
        link_pp = comm.group_link(hw, st.pp, st.tp * st.cp * st.dp)
        p2p = p2p_transfers_on_critical_path(st.pp, m, st.vpp) * comm.collective_time_s(
            "p2p", nbytes, 2, link_pp)

    return CandidateTerms(
        micro_batches=m, dense=dense, moe=moe,
        first_dense_layers=arch.moe.first_dense_layers if arch.moe else arch.layers,
        moe_interval=arch.moe.layer_interval if arch.moe else 1,
        edge=edge or edge_times(model, st, hw), states=state_bytes_per_param(model, st),
        expert_states=state_bytes_per_param(model, st, shard=n_expert),
        first_params=first, last_params=last, in_flight=in_flight, extra_acts=extra,
        zero3_buffer_bytes=ZERO3_PREFETCH_BLOCKS * element_bytes(model) * max(
            dense_params, moe.params + moe.expert_params if moe else 0.0) if st.zero == 3 else 0.0,
        paired_block_bytes=_paired_block_bytes(dense, moe, st),
        grad_comm_s_per_param=grad_per_param, expert_grad_comm_s_per_param=expert_grad,
        grad_tail_s=grad_tail, param_gather_s_per_param=param_per_param,
        expert_param_gather_s_per_param=expert_gather,
        optimizer_s_per_param=_optimizer_s_per_param(model, st, hw, n_shard),
        expert_optimizer_s_per_param=_optimizer_s_per_param(model, st, hw, n_expert),
        p2p_s=p2p)


def _paired_block_bytes(dense: BlockKind, moe: BlockKind | None, st: Strategy) -> float:
    """Activations held beyond the in-flight micro-batches under ep_comm_overlap.

    Megatron-Core's combined 1F1B runs the forward of block i of micro-batch A and the backward
    of a block of micro-batch B together; A's block stores all its activations before B's
    attention backward frees B's (`TransformerLayerSchedulePlan.run`; the
    `ep_overlap_early_attn_memory_release` option exists to shorten that). The schedule's extra
    warm-up forward (`get_pp_rank_microbatches`) replaces the forward a plain 1F1B step stores
    before its backward, so the peak grows by one block, not one micro-batch: charged as the
    larger block kind storing everything, whatever the stage's recompute.
    """
    if not st.ep_comm_overlap:
        return 0.0
    return max(dense.acts.none, moe.acts.none if moe else 0.0)


def _optimizer_s_per_param(model: ModelSpec, st: Strategy, hw: Hardware, group: int) -> float:
    """Optimizer step per parameter held by the GPU (before sharding over `group`).

    On the GPU it is memory-bound: read gradients twice (norm for clipping, then the update),
    read and write the K optimizer bytes, write 16-bit weights: 2G + 2K + 2 bytes per parameter
    (34 for mixed-precision Adam). Offloaded (ZeRO-Offload, Ren et al. 2021) it runs on the CPU
    at the host's Adam rate, after copying fp32 gradients down and 16-bit weights up over PCIe.
    """
    shard = group if st.zero >= 1 else 1
    if st.offload_optimizer:
        return (1 / hw.host_adam_params_per_s_per_gpu + 6 / hw.host_device_Bps) / shard
    g = 4 if model.training.grads_fp32 else 2
    k = optimizer_bytes_per_param(model)
    return (2 * g + 2 * k + 2) / hw.hbm_Bps / shard
