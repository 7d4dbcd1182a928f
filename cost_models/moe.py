"""Mixture-of-experts blocks: time, activations and parameters of one MoE block on one GPU.

Layout (Megatron-Core MoE, Gale et al. 2023 "MegaBlocks" for dropless routing): attention is as in
a dense block; the MLP is a router, k routed experts out of E, and optional shared experts.
Experts are split over `ep` ranks (E/ep local experts each) and each expert's FFN over `etp`
ranks. Tokens leave the sequence-parallel attention shard (T = b s / (cp tp) per GPU), are
dispatched with an all-to-all over the ep group (and gathered over etp), run through the local
experts as a grouped GEMM, and come back with a second all-to-all (combine); the backward repeats
both exchanges (Lepikhin et al. 2020, GShard §2.2; Rajbhandari et al. 2022, DeepSpeed-MoE).
The exchanges are exposed, unless `Strategy.ep_comm_overlap` pairs each block's forward with
another micro-batch's backward of it (`paired_exchange_s`).
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


def moe_block_times(model: ModelSpec, st: Strategy, hw: Hardware,
                    dense: BlockTimes | None = None) -> BlockTimes:
    """Per-micro-batch times of one MoE block: the dense block's attention half, the router,
    the grouped expert GEMMs, shared experts, permutation traffic and the exchanges. `dense`
    may pass `block_times(model, st, hw)` when the caller has it (the search's cache)."""
    arch, prec = model.arch, model.training.precision
    moe = arch.moe
    dense = dense or block_times(model, st, hw)
    tokens_sp = st.mbs * model.training.seq_len // st.cp
    dense_gemms = mlp_gemms(arch, tokens_sp, arch.ffn_hidden, st.tp)
    dense_mlp = sum(hw.gemm_time_s(g.m, g.k, g.n, prec) for g in dense_gemms)
    dense_mlp_bwd = sum(hw.gemm_backward_time_s(g.m, g.k, g.n, prec) for g in dense_gemms)
    # The dense block's activation-function traffic (SwiGLU 3F / 5F, GELU 2F / 3F) is replaced too.
    dense_ffn_bytes = tokens_sp * arch.ffn_hidden / st.tp * ACT_BYTES
    swiglu = arch.mlp == "swiglu"
    dense_act_fwd = hw.memory_time_s((3 if swiglu else 2) * dense_ffn_bytes, 0)
    dense_act_bwd = hw.memory_time_s((5 if swiglu else 3) * dense_ffn_bytes, 0)

    rows = routed_rows(model, st)
    local = moe.routed_experts // st.ep
    per_expert = max(int(rows / local), 1)
    expert_gemms = mlp_gemms(arch, 1, moe.expert_ffn_hidden, st.etp)
    experts = sum(hw.gemm_time_s(per_expert, g.k, g.n, prec, count=local) for g in expert_gemms)
    # Expert backward by shape: the weight gradient's K loop runs over the expert's tokens only.
    experts_dgrad_gemm = sum(hw.gemm_time_s(per_expert, g.n, g.k, prec, count=local) for g in expert_gemms)
    experts_wgrad_gemm = sum(hw.gemm_time_s(g.k, per_expert, g.n, prec, count=local) for g in expert_gemms)
    shared_gemms = mlp_gemms(arch, tokens_sp, moe.shared_ffn_hidden, st.tp) if moe.shared_ffn_hidden else []
    shared = sum(hw.gemm_time_s(g.m, g.k, g.n, prec) for g in shared_gemms)
    shared_bwd = sum(hw.gemm_backward_time_s(g.m, g.k, g.n, prec) for g in shared_gemms)
    tokens = tokens_sp / st.tp
    router = hw.gemm_time_s(int(tokens), arch.hidden, moe.routed_experts, moe.router_dtype)
    router_bwd = hw.gemm_backward_time_s(int(tokens), arch.hidden, moe.routed_experts, moe.router_dtype)
    ffn_bytes = rows * moe.expert_ffn_hidden / st.etp * ACT_BYTES
    permute = hw.memory_time_s(4 * rows * arch.hidden * ACT_BYTES + (3 if arch.mlp == "swiglu" else 2) * ffn_bytes, 4)
    # Computation before the dispatch (attention half, router, shared experts) and after it
    # (routed experts, permutation), forward and backward (data + weight gradients).
    pre_fwd = dense.fwd_compute - dense_mlp - dense_act_fwd + router + shared
    pre_bwd = dense.bwd_compute - dense_mlp_bwd - dense_act_bwd + router_bwd + shared_bwd
    experts_fwd = experts + permute
    experts_dgrad, experts_wgrad = experts_dgrad_gemm + 1.5 * permute, experts_wgrad_gemm

    dispatch = combine = 0.0
    if st.ep > 1:
        sent = tokens * moe.top_k * arch.hidden * ACT_BYTES * (moe.capacity_factor or 1.0)
        a2a = comm.all_to_all_time_s(hw, sent, st.ep, st.etp)
        dispatch, combine = dispatch + a2a, combine + a2a
    if st.etp > 1:
        gathered = rows * arch.hidden * ACT_BYTES
        link = comm.group_link(hw, st.etp, 1)
        dispatch += comm.collective_time_s("all_gather", gathered, st.etp, link)
        combine += comm.collective_time_s("reduce_scatter", gathered, st.etp, link)
    fwd_ep = bwd_ep = dispatch + combine
    if st.ep_comm_overlap:
        fwd_ep, bwd_ep = paired_exchange_s(dispatch, combine, pre_fwd=pre_fwd, pre_bwd=pre_bwd,
                                           experts_fwd=experts_fwd, experts_dgrad=experts_dgrad,
                                           experts_wgrad=experts_wgrad)
    tp_share = 0.5 if not moe.shared_ffn_hidden else 1.0   # attention half (+ shared experts' TP)
    return BlockTimes(
        fwd_compute=pre_fwd + experts_fwd, bwd_compute=pre_bwd + experts_dgrad + experts_wgrad,
        fwd_tp=dense.fwd_tp * tp_share, bwd_tp=dense.bwd_tp * tp_share,
        fwd_cp=dense.fwd_cp, bwd_cp=dense.bwd_cp,
        recompute_selective=dense.recompute_selective,
        fwd_ep=fwd_ep, bwd_ep=bwd_ep, ep_unpaired=2 * (dispatch + combine) - fwd_ep - bwd_ep)


def paired_exchange_s(dispatch: float, combine: float, *, pre_fwd: float, pre_bwd: float,
                      experts_fwd: float, experts_dgrad: float,
                      experts_wgrad: float) -> tuple[float, float]:
    """Exposed exchange of one block when its forward (micro-batch A) runs paired with the same
    block's backward of another micro-batch B (`Strategy.ep_comm_overlap`); returns the part
    charged to the forward and to the backward.

    Megatron-Core's combined 1F1B with delayed weight gradients
    (`TransformerLayerSchedulePlan.run` in models/common/model_chunk_schedule_plan.py, following
    DeepSeek-V3's DualPipe chunk, arXiv:2412.19437 §3.2.1 Fig. 4) issues, on two streams:
        communication: combine_bwd(B) | dispatch_fwd(A) -> dispatch_bwd(B)           | combine_fwd(A)
        computation:   pre_fwd(A)     | experts_dgrad(B) -> experts_wgrad(B), fwd(A) | pre_bwd(B)
    so each exchange hides behind the computation beside it, and what sticks out plus the
    contention share is exposed (comm.exposed_s, kappa = comm.OVERLAP_CONTENTION):
        exposed(C, W) = kappa C + (1 - kappa) max(0, C - W).
    """
    fwd = comm.exposed_s(dispatch, experts_dgrad) + comm.exposed_s(combine, pre_bwd)
    bwd = comm.exposed_s(combine, pre_fwd) + comm.exposed_s(dispatch, experts_wgrad + experts_fwd)
    return fwd, bwd


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
