"""Time of one transformer block (and of the embedding/output layers) per micro-batch on one GPU.

These per-block terms are what both `estimate()` and the ILP consume: a stage's time is linear in
its block counts, so the solver can decide layer splits and recompute exactly under this model.
"""
from __future__ import annotations

from dataclasses import dataclass

from cost_models import comm
from cost_models.flops import attention_core_flops, block_gemms, logits_gemm
from cost_models.hardware import Hardware
from planner.specs import ModelSpec
from planner.strategy import Strategy

ACT_BYTES = 2
"""Stored activations are 16-bit, also under fp8 GEMMs (Transformer Engine keeps bf16 I/O)."""


CE_BYTES_PER_LOGIT = {True: 16, False: 36}
"""HBM bytes per logit element of the loss, forward + backward. Fused (Megatron's vocab-parallel
cross-entropy, `tensor_parallel/cross_entropy.py`): the fp32 logits are read and written twice,
4 x 4 bytes. Eager PyTorch (`cross_entropy(logits.float())`, HF and torchtitan): the upcast reads
2 and writes 4, log-softmax reads 4 and writes 4, its backward reads 4 + 4 and writes 4, the
gradient's downcast reads 4 and writes 2, and the bf16 logits were written (2): 36 bytes."""


@dataclass(frozen=True)
class BlockTimes:
    """Seconds per micro-batch for one transformer block on one GPU."""

    fwd_compute: float
    """Forward GEMMs, attention and memory-bound kernels."""
    bwd_compute: float
    """Backward (data and weight gradients)."""
    fwd_tp: float
    """Exposed tensor-parallel communication in the forward."""
    bwd_tp: float
    """Exposed tensor-parallel communication in the backward."""
    fwd_cp: float
    """Exposed context-parallel K/V exchange in the forward."""
    bwd_cp: float
    """Exposed context-parallel exchange in the backward."""
    recompute_selective: float
    """Re-running the attention core (selective recompute)."""
    fwd_ep: float = 0.0
    """Expert-parallel token exchange in the forward (MoE blocks)."""
    bwd_ep: float = 0.0
    """Expert-parallel token exchange in the backward (MoE blocks)."""
    ep_unpaired: float = 0.0
    """Exchange time the pairing of fwd_ep and bwd_ep hides (ep_comm_overlap), paid again by a
    forward and a backward that run unpaired: the pipeline's fill and drain."""

    @property
    def fwd(self) -> float:
        """Forward wall time including exposed communication."""
        return self.fwd_compute + self.fwd_tp + self.fwd_cp + self.fwd_ep

    @property
    def bwd(self) -> float:
        """Backward wall time including exposed communication (no recompute)."""
        return self.bwd_compute + self.bwd_tp + self.bwd_cp + self.bwd_ep

    @property
    def recompute_full(self) -> float:
        """Re-running the whole forward (full recompute), communication included."""
        return self.fwd


@dataclass(frozen=True)
class EdgeTimes:
    """Seconds per micro-batch for the embedding (first stage) and output layer + loss (last)."""

    first_fwd: float
    first_bwd: float
    last_fwd: float
    last_bwd: float
    tp_comm: float
    """The part of the four above that is tensor-parallel communication."""


def _tokens(model: ModelSpec, st: Strategy) -> int:
    return st.mbs * model.training.seq_len // st.cp


@dataclass(frozen=True)
class ElementwiseTraffic:
    """HBM bytes of one block's memory-bound kernels per micro-batch, forward and backward."""

    fwd_bytes: float
    bwd_bytes: float
    kernels: int
    """Kernel launches per pass."""


def elementwise_traffic(model: ModelSpec, st: Strategy) -> ElementwiseTraffic:
    """Bytes moved by one block's memory-bound kernels (reads + writes of 16-bit tensors).

    Per op, forward / backward, in units of the tensor X = tokens * h (or F = tokens * f / t):
    norm 2X / 3X (reads x and dy, writes dx); residual add 3X / 3X (gradient accumulation);
    dropout 2.5X / 2.5X (1-byte mask); RoPE on Q and K 2 / 2; GELU 2F / 3F; SwiGLU 3F / 5F;
    unfused softmax over the a*s^2 scores 2S / 3S, its dropout 2.5S / 2.5S. X regions shrink by t
    under sequence parallelism (Korthikanti et al. 2022 §4.2.2), else they are replicated on
    every TP rank.
    """
    a, train = model.arch, model.training
    t, tokens = st.tp, _tokens(model, st)
    x = tokens * a.hidden * ACT_BYTES / (t if st.sp else 1)
    ffn = tokens * a.ffn_hidden * ACT_BYTES / t
    fwd = 2 * (2 * x) + 2 * (3 * x)
    bwd = 2 * (3 * x) + 2 * (3 * x)
    kernels = 4
    if a.dropout:
        fwd, bwd, kernels = fwd + 2 * 2.5 * x, bwd + 2 * 2.5 * x, kernels + 2
    if not a.learned_positions:
        rope = 2 * tokens * (a.hidden + a.kv_dim) * ACT_BYTES / t
        fwd, bwd, kernels = fwd + rope, bwd + rope, kernels + 1
    fwd += (3 if a.mlp == "swiglu" else 2) * ffn
    bwd += (5 if a.mlp == "swiglu" else 3) * ffn
    kernels += 1
    if not train.flash_attention:
        scores = st.mbs * a.heads * (train.seq_len // st.cp) * train.seq_len * ACT_BYTES / t
        fwd += 2 * scores + (2.5 * scores if a.dropout else 0)
        bwd += 3 * scores + (2.5 * scores if a.dropout else 0)
        kernels += 2 if a.dropout else 1
    return ElementwiseTraffic(fwd, bwd, kernels)


def _attention_core_s(model: ModelSpec, st: Strategy, hw: Hardware, backward: bool) -> float:
    a, train = model.arch, model.training
    flops = attention_core_flops(a, st.mbs, train.seq_len // st.cp, train.seq_len, st.tp,
                                 causal_skip=train.flash_attention)
    if train.flash_attention:
        # FlashAttention-2 backward recomputes S and P: 5 matmuls vs 2 forward (Dao 2023, §3.2).
        return hw.attention_time_s(flops * (2.5 if backward else 1.0), backward, train.seq_len)
    heads = st.mbs * a.heads // st.tp
    q, kv, d = train.seq_len // st.cp, train.seq_len, a.head_dim
    one = hw.gemm_time_s(q, d, kv, "bf16", heads) + hw.gemm_time_s(q, kv, d, "bf16", heads)
    return one * (2 if backward else 1)


def block_times(model: ModelSpec, st: Strategy, hw: Hardware) -> BlockTimes:
    """Per-micro-batch times of one block under strategy `st` (degrees, mbs, sp, overlap flags)."""
    prec = model.training.precision
    tokens = _tokens(model, st)
    gemms = block_gemms(model.arch, tokens, st.tp)
    gemm_fwd = sum(hw.gemm_time_s(g.m, g.k, g.n, prec) for g in gemms)
    gemm_bwd = sum(hw.gemm_backward_time_s(g.m, g.k, g.n, prec) for g in gemms)
    ew = elementwise_traffic(model, st)
    ew_fwd = hw.memory_time_s(ew.fwd_bytes, ew.kernels)
    ew_bwd = hw.memory_time_s(ew.bwd_bytes, ew.kernels)
    attn_fwd = _attention_core_s(model, st, hw, backward=False)
    attn_bwd = _attention_core_s(model, st, hw, backward=True)
    fwd_compute = gemm_fwd + attn_fwd + ew_fwd
    bwd_compute = gemm_bwd + attn_bwd + ew_bwd

    tp_fwd = tp_bwd = 0.0
    if st.tp > 1:
        link = comm.group_link(hw, st.tp, 1)
        act = tokens * model.arch.hidden * ACT_BYTES
        # Two all-reduces per block per pass (Shoeybi et al. 2019 Fig. 4), or with sequence
        # parallelism two all-gathers + two reduce-scatters of the same volume (Korthikanti §4.2.2).
        if st.sp:
            one = 2 * (comm.collective_time_s("all_gather", act, st.tp, link)
                       + comm.collective_time_s("reduce_scatter", act, st.tp, link))
        else:
            one = 2 * comm.collective_time_s("all_reduce", act, st.tp, link)
        tp_fwd = comm.exposed_s(one, gemm_fwd) if st.tp_comm_overlap else one
        tp_bwd = comm.exposed_s(one, gemm_bwd) if st.tp_comm_overlap else one

    cp_fwd = cp_bwd = 0.0
    if st.cp > 1:
        # Ring attention: cp-1 exchanges of the local K and V (2 * tokens * g*d / t), overlapped
        # with the attention core of the chunk in hand (Liu et al. 2023; Megatron-Core CP).
        link = comm.group_link(hw, st.cp, st.tp)
        kv_bytes = 2 * tokens * model.arch.kv_dim * ACT_BYTES / st.tp
        ring = (st.cp - 1) * comm.collective_time_s("p2p", kv_bytes, 2, link)
        cp_fwd = comm.exposed_s(ring, attn_fwd)
        cp_bwd = comm.exposed_s(2 * ring, attn_bwd)

    selective = attn_fwd
    if not model.training.flash_attention:
        scores_bytes = st.mbs * model.arch.heads * (model.training.seq_len // st.cp) \
            * model.training.seq_len * ACT_BYTES / st.tp
        selective += hw.memory_time_s(2 * scores_bytes + (2.5 * scores_bytes if model.arch.dropout else 0))
    return BlockTimes(fwd_compute, bwd_compute, tp_fwd, tp_bwd, cp_fwd, cp_bwd, selective)


def edge_times(model: ModelSpec, st: Strategy, hw: Hardware) -> EdgeTimes:
    """Embedding lookup (first stage) and output layer + cross-entropy (last stage).

    The vocabulary-parallel embedding ends in an all-reduce (or reduce-scatter with sp); the
    output layer's input gradient needs the same collective in the backward. Cross-entropy reads
    and writes the fp32 logits a few times: `CE_BYTES_PER_LOGIT` fused or eager.
    """
    a, prec = model.arch, model.training.precision
    tokens = _tokens(model, st)
    act = tokens * a.hidden * ACT_BYTES
    g = logits_gemm(a, tokens, st.tp)
    logits_fwd = hw.gemm_time_s(g.m, g.k, g.n, prec)
    ce_bytes = tokens * g.n * CE_BYTES_PER_LOGIT[hw.fused_cross_entropy]
    ce = hw.memory_time_s(ce_bytes, 3)
    emb = hw.memory_time_s(2 * act / (st.tp if st.sp else 1), 1)
    tp = 0.0
    if st.tp > 1:
        kind = "reduce_scatter" if st.sp else "all_reduce"
        tp = comm.collective_time_s(kind, act, st.tp, comm.group_link(hw, st.tp, 1))
    return EdgeTimes(first_fwd=emb + tp, first_bwd=emb, last_fwd=logits_fwd + ce,
                     last_bwd=hw.gemm_backward_time_s(g.m, g.k, g.n, prec) + ce + tp, tp_comm=2 * tp)
