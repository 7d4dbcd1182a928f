"""Per-candidate cost terms: everything about a strategy's cost that does not depend on the
per-stage layer split or per-stage recompute, so that a stage's time and memory are linear in
its block counts. `estimate()` evaluates these terms for one split; the ILP optimises over splits
with the very same coefficients (so "optimal under the model" means under `estimate()`).
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
from cost_models.pipeline import p2p_transfers_on_critical_path
from planner.specs import ModelSpec
from planner.strategy import Strategy

GRAD_BUCKET_PARAMS = 40_000_000
"""Megatron-Core's default DDP bucket (`--ddp-bucket-size` = max(40M, 1M * dp) parameters); the
last bucket is reduced after the backward ends and cannot overlap."""


@dataclass(frozen=True)
class CandidateTerms:
    """Linear coefficients of stage time and memory for one outer strategy."""

    micro_batches: int
    block: BlockTimes
    edge: EdgeTimes
    acts: BlockActivations
    states: StateBytes
    block_params: float
    """Parameters of one block on one GPU (after TP, before ZeRO)."""
    first_params: float
    """Embedding parameters on stage 0 (after TP)."""
    last_params: float
    """Final norm + output layer parameters on the last stage (after TP)."""
    in_flight: tuple[float, ...]
    """Micro-batches of activations held per stage (in whole-stage units)."""
    extra_acts: tuple[float, ...]
    """Embedding/logits activation bytes per stage."""
    zero_block_fwd_s: float
    """Exposed ZeRO-2/3 traffic per block per micro-batch in the forward."""
    zero_block_bwd_s: float
    """Exposed ZeRO-2/3 traffic per block per micro-batch in the backward."""
    zero3_buffer_bytes: float
    """Unsharded prefetch buffers under ZeRO-3."""
    grad_comm_s_per_param: float
    """Step-level gradient reduction time per parameter held (ZeRO 0/1)."""
    grad_tail_s: float
    """The last bucket's reduction, never hidden."""
    param_gather_s_per_param: float
    """Step-level parameter all-gather per parameter (ZeRO-1 distributed optimizer)."""
    optimizer_s_per_param: float
    """Optimizer step time per parameter held (before sharding)."""
    p2p_s: float
    """Exposed pipeline send/recv per step."""

    @property
    def block_none_s(self) -> float:
        """Per micro-batch time of a block that stores everything."""
        return self.block.fwd + self.block.bwd + self.zero_block_fwd_s + self.zero_block_bwd_s

    @property
    def block_full_s(self) -> float:
        """Per micro-batch time of a fully recomputed block."""
        return self.block_none_s + self.block.recompute_full

    @property
    def block_selective_s(self) -> float:
        """Per micro-batch time of a selectively recomputed block."""
        return self.block_none_s + self.block.recompute_selective

    def edge_s(self, stage: int, pp: int) -> tuple[float, float]:
        """Forward and backward time of the embedding/output layer on `stage`."""
        fwd = bwd = 0.0
        if stage == 0:
            fwd, bwd = fwd + self.edge.first_fwd, bwd + self.edge.first_bwd
        if stage == pp - 1:
            fwd, bwd = fwd + self.edge.last_fwd, bwd + self.edge.last_bwd
        return fwd, bwd

    def stage_params(self, stage: int, pp: int, blocks: float) -> float:
        """Parameters held by a GPU of `stage` with `blocks` blocks (before ZeRO)."""
        params = blocks * self.block_params
        if stage == 0:
            params += self.first_params
        if stage == pp - 1:
            params += self.last_params
        return params


def candidate_terms(model: ModelSpec, st: Strategy, hw: Hardware) -> CandidateTerms:
    """Evaluate the split-independent cost terms of strategy `st` on hardware `hw`."""
    arch, train = model.arch, model.training
    m = st.micro_batches(model)
    block = block_times(model, st, hw)
    states = state_bytes_per_param(model, st)
    b_params = block_params(arch) / st.tp
    first = embedding_params(arch, train.seq_len, st.tp) / st.tp
    last = head_params(arch, st.tp) / st.tp if not (arch.tied_embeddings and st.pp == 1) else \
        arch.hidden / st.tp
    in_flight = tuple(in_flight_microbatches(i, st, m) for i in range(st.pp))
    extra = tuple(stage_extra_activations(model, st, i, in_flight[i]) for i in range(st.pp))

    n_shard = st.dp * st.cp
    link = comm.group_link(hw, n_shard, st.tp)
    grad_bytes = 4 if train.grads_fp32 else 2
    zero_fwd = zero_bwd = 0.0
    if st.zero >= 2 and n_shard > 1:
        # Per micro-batch: ZeRO-3 gathers each block's 16-bit weights before its forward and
        # backward; ZeRO-2/3 reduce-scatter its gradients after the backward (Rajbhandari et al.
        # 2020 §5; FSDP). Prefetching hides them behind the neighbouring block's compute.
        gather = comm.collective_time_s("all_gather", 2 * b_params, n_shard, link) if st.zero == 3 else 0.0
        if st.offload_params:
            gather += 2 * b_params / n_shard / hw.host_device_Bps
        scatter = comm.collective_time_s("reduce_scatter", grad_bytes * b_params, n_shard, link)
        zero_fwd = comm.exposed_s(gather, block.fwd_compute)
        zero_bwd = comm.exposed_s(gather + scatter, block.bwd_compute)

    grad_per_param = param_per_param = 0.0
    if st.zero <= 1 and n_shard > 1:
        kind = "all_reduce" if st.zero == 0 else "reduce_scatter"
        grad_per_param = comm.collective_time_s(kind, grad_bytes * 1e9, n_shard, link) / 1e9
        if st.zero == 1:
            param_per_param = comm.collective_time_s("all_gather", 2 * 1e9, n_shard, link) / 1e9
    avg_params = (b_params * arch.layers + first + last) / st.pp
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
        micro_batches=m, block=block, edge=edge_times(model, st, hw),
        acts=block_activations(model, st), states=states, block_params=b_params,
        first_params=first, last_params=last, in_flight=in_flight, extra_acts=extra,
        zero_block_fwd_s=zero_fwd, zero_block_bwd_s=zero_bwd,
        zero3_buffer_bytes=(ZERO3_PREFETCH_BLOCKS * element_bytes(model) * b_params
                            if st.zero == 3 else 0.0),
        grad_comm_s_per_param=grad_per_param, grad_tail_s=grad_tail,
        param_gather_s_per_param=param_per_param,
        optimizer_s_per_param=_optimizer_s_per_param(model, st, hw),
        p2p_s=p2p)


def _optimizer_s_per_param(model: ModelSpec, st: Strategy, hw: Hardware) -> float:
    """Optimizer step per parameter held by the GPU (before sharding).

    On the GPU it is memory-bound: read gradients twice (norm for clipping, then the update),
    read and write the K optimizer bytes, write 16-bit weights: 2G + 2K + 2 bytes per parameter
    (34 for mixed-precision Adam). Offloaded (ZeRO-Offload, Ren et al. 2021) it runs on the CPU
    at the host's Adam rate, after copying fp32 gradients down and 16-bit weights up over PCIe.
    """
    shard = st.dp * st.cp if st.zero >= 1 else 1
    if st.offload_optimizer:
        return (1 / hw.host_adam_params_per_s_per_gpu + 6 / hw.host_device_Bps) / shard
    g = 4 if model.training.grads_fp32 else 2
    k = optimizer_bytes_per_param(model)
    return (2 * g + 2 * k + 2) / hw.hbm_Bps / shard
