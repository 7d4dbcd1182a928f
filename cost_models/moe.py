"""Mixture-of-experts blocks: time, activations and parameters of one MoE block on one GPU.

Layout (Megatron-Core MoE, Gale et al. 2023 "MegaBlocks" for dropless routing): attention is as in
a dense block; the MLP is a router, k routed experts out of E, and optional shared experts.
Experts are split over `ep` ranks (E/ep local experts each) and each expert's FFN over `etp`
ranks. Tokens leave the sequence-parallel attention shard (T = b s / (cp tp) per GPU), are
dispatched with an all-to-all over the ep group (and gathered over etp), run through the local
experts as a grouped GEMM, and come back with a second all-to-all (combine); the backward repeats
both exchanges (Lepikhin et al. 2020, GShard §2.2; Rajbhandari et al. 2022, DeepSpeed-MoE).
"""
from __future__ import annotations

from dataclasses import dataclass

from cost_models import comm
from cost_models.block import ACT_BYTES, BlockTimes, block_times
from cost_models.flops import attention_params, mlp_gemms, mlp_params
from cost_models.hardware import Hardware
from cost_models.memory import BlockActivations, block_activations, element_bytes
from planner.specs import ModelSpec
from planner.strategy import Strategy

MOE_LOAD_IMBALANCE = 1.15
"""Dropless routing: tokens on the busiest expert-parallel rank relative to an even share. With an
auxiliary load-balancing loss, per-rank load stays within ~10-20% of the mean after warm-up
(Fedus et al. 2022, Switch Transformer §2.2; DeepSeek-V3 §2.1.2 reports balanced expert load)."""


def routed_rows(model: ModelSpec, st: Strategy) -> float:
    """Token-expert rows one GPU's local experts process per micro-batch (busiest rank).

    Each GPU sends T k assignments; an expert owner (etp GPUs) receives etp T k of them on average,
    scaled by the capacity factor (padding) or, dropless, by the load imbalance.
    """
    moe, train = model.arch.moe, model.training
    tokens = st.mbs * train.seq_len / (st.cp * st.tp)
    load = moe.capacity_factor if moe.capacity_factor else MOE_LOAD_IMBALANCE
    return tokens * moe.top_k * st.etp * load


def moe_block_times(model: ModelSpec, st: Strategy, hw: Hardware) -> BlockTimes:
    """Per-micro-batch times of one MoE block: the dense block's attention half, the router,
    the grouped expert GEMMs, shared experts, permutation traffic and the exchanges."""
    arch, prec = model.arch, model.training.precision
    moe = arch.moe
    dense = block_times(model, st, hw)
    tokens_sp = st.mbs * model.training.seq_len // st.cp
    dense_mlp = sum(hw.gemm_time_s(g.m, g.k, g.n, prec) for g in mlp_gemms(arch, tokens_sp, arch.ffn_hidden, st.tp))
    # The dense block's activation-function traffic (SwiGLU 3F / 5F, GELU 2F / 3F) is replaced too.
    dense_ffn_bytes = tokens_sp * arch.ffn_hidden / st.tp * ACT_BYTES
    swiglu = arch.mlp == "swiglu"
    dense_act_fwd = hw.memory_time_s((3 if swiglu else 2) * dense_ffn_bytes, 0)
    dense_act_bwd = hw.memory_time_s((5 if swiglu else 3) * dense_ffn_bytes, 0)

    rows = routed_rows(model, st)
    local = moe.routed_experts // st.ep
    per_expert = max(int(rows / local), 1)
    experts = sum(hw.gemm_time_s(per_expert, g.k, g.n, prec, count=local)
                  for g in mlp_gemms(arch, 1, moe.expert_ffn_hidden, st.etp))
    shared = sum(hw.gemm_time_s(g.m, g.k, g.n, prec)
                 for g in mlp_gemms(arch, tokens_sp, moe.shared_ffn_hidden, st.tp)) if moe.shared_ffn_hidden else 0.0
    tokens = tokens_sp / st.tp
    router = hw.gemm_time_s(int(tokens), arch.hidden, moe.routed_experts, "bf16")
    ffn_bytes = rows * moe.expert_ffn_hidden / st.etp * ACT_BYTES
    permute = hw.memory_time_s(4 * rows * arch.hidden * ACT_BYTES + (3 if arch.mlp == "swiglu" else 2) * ffn_bytes, 4)
    fwd_mlp = experts + shared + router + permute
    bwd_mlp = 2 * (experts + shared + router) + 1.5 * permute

    exchange = 0.0
    if st.ep > 1:
        sent = tokens * moe.top_k * arch.hidden * ACT_BYTES * (moe.capacity_factor or 1.0)
        exchange += 2 * comm.collective_time_s("all_to_all", sent, st.ep, comm.group_link(hw, st.ep, st.etp))
    if st.etp > 1:
        gathered = rows * arch.hidden * ACT_BYTES
        link = comm.group_link(hw, st.etp, 1)
        exchange += comm.collective_time_s("all_gather", gathered, st.etp, link) \
            + comm.collective_time_s("reduce_scatter", gathered, st.etp, link)
    tp_share = 0.5 if not moe.shared_ffn_hidden else 1.0   # attention half (+ shared experts' TP)
    return BlockTimes(
        fwd_compute=dense.fwd_compute - dense_mlp - dense_act_fwd + fwd_mlp,
        bwd_compute=dense.bwd_compute - 2 * dense_mlp - dense_act_bwd + bwd_mlp,
        fwd_tp=dense.fwd_tp * tp_share, bwd_tp=dense.bwd_tp * tp_share,
        fwd_cp=dense.fwd_cp, bwd_cp=dense.bwd_cp,
        recompute_selective=dense.recompute_selective,
        fwd_ep=exchange, bwd_ep=exchange)


def moe_block_activations(model: ModelSpec, st: Strategy) -> BlockActivations:
    """Bytes one MoE block keeps per micro-batch: the dense block's attention part, then the
    router probabilities (fp32), the dispatched expert inputs, the experts' stored FFN tensors
    (SwiGLU: gate, up, product) and outputs, and the shared experts' FFN tensors (16-bit, or
    4-byte elements under fp32 training, like the dense block's)."""
    arch, moe, train = model.arch, model.arch.moe, model.training
    dense = block_activations(model, st)
    s, b, t = train.seq_len // st.cp, st.mbs, st.tp
    dense_mlp = (6 if arch.mlp == "swiglu" else 4) * s * b * arch.ffn_hidden / t
    rows = routed_rows(model, st)
    ffn = (6 if arch.mlp == "swiglu" else 4) * moe.expert_ffn_hidden / st.etp
    experts = rows * (2 * 2 * arch.hidden + ffn)
    router = 4 * (s * b / t) * moe.routed_experts
    shared = (6 if arch.mlp == "swiglu" else 4) * s * b * moe.shared_ffn_hidden / t
    widen = element_bytes(model) / ACT_BYTES  # 16-bit coefficients, as in block_activations
    extra = widen * (experts + shared - dense_mlp) + router
    return BlockActivations(none=dense.none + extra, selective=dense.selective + extra, full=dense.full)


@dataclass(frozen=True)
class MoEParams:
    """Parameters of one MoE block on one GPU, split by the group that shards their states."""

    dense: float
    """Attention, norms, router and shared experts (sharded like a dense block over dp*cp)."""
    experts: float
    """Local routed experts (states sharded over the expert data-parallel group)."""


def moe_block_params(model: ModelSpec, st: Strategy) -> MoEParams:
    """Per-GPU parameters of one MoE block after TP/EP/ETP splitting."""
    arch, moe = model.arch, model.arch.moe
    norms = 2 * arch.hidden * (2 if arch.norm == "layernorm" else 1)
    shared = mlp_params(arch, moe.shared_ffn_hidden) if moe.shared_ffn_hidden else 0
    dense = (attention_params(arch) + shared) / st.tp + norms + arch.hidden * moe.routed_experts
    experts = moe.routed_experts // st.ep * mlp_params(arch, moe.expert_ffn_hidden) / st.etp
    return MoEParams(dense=dense, experts=experts)
