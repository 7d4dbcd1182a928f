"""Per-GPU memory: model states by ZeRO stage, activations by recompute mode, stage extras.

Activation bytes follow Korthikanti et al. 2022 §4 (16-bit activations, 1-byte dropout masks),
re-derived per tensor so GQA, SwiGLU and fused attention change the coefficients:

* regions outside tensor parallelism (two norm inputs 4sbh, QKV input 2sbh, MLP input 2sbh,
  dropout masks 2*sbh when dropout is used) are replicated on every TP rank, or split by t under
  sequence parallelism;
* TP regions split by t: Q 2sbh, K and V 2sb(gd) each, projection input 2sbh, the MLP's stored
  tensors 4sbf (GELU: its input and output) or 6sbf (SwiGLU: gate, up, product);
* multi-head latent attention replaces the QKV input, Q, K, V and projection input by its
  latents and decompressed heads (`attention_activations`);
* unfused attention stores the a*s^2 scores: softmax output 2as^2b, and with dropout its mask
  as^2b and output 2as^2b (the 5as^2b term); fused attention stores only the fp32 log-sum-exp.

For GPT shapes (f = 4h, g = a, dropout, unfused attention) this gives exactly the paper's
sbh(34 + 5as/h) without parallelism and sbh(10 + 24/t + 5as/(ht)) with TP (Table 2).
"""
from __future__ import annotations

from dataclasses import dataclass

from cost_models.block import ACT_BYTES
from cost_models.flops import block_params, embedding_params, head_params
from planner.specs import Architecture, ModelSpec
from planner.strategy import Strategy

ALLOCATOR_FRACTION = 0.05
"""Allowance for caching-allocator fragmentation, as a fraction of allocated bytes. PyTorch's
caching allocator rounds blocks and keeps freed segments; 5% is at the low end of the overhead
reported by torch.cuda.memory_stats (reserved vs allocated) for steady-state LLM training."""

def element_bytes(model: ModelSpec) -> int:
    """Bytes of one stored weight or activation element: 4 under pure fp32 training, else 2
    (bf16/fp16, and fp8 GEMMs, which keep 16-bit weights and activations)."""
    return 4 if model.training.precision == "fp32" else 2


ZERO3_PREFETCH_BLOCKS = 2
"""Unsharded blocks alive under ZeRO-3/FSDP: the one computing and the one prefetched."""


@dataclass(frozen=True)
class BlockActivations:
    """Bytes one block keeps per micro-batch, by recompute mode."""

    none: float
    selective: float
    full: float


def block_activations(model: ModelSpec, st: Strategy) -> BlockActivations:
    """Stored activation bytes of one block for one micro-batch on one GPU (see module doc)."""
    a, train = model.arch, model.training
    s, b, h, t = train.seq_len // st.cp, st.mbs, a.hidden, st.tp
    sbh = s * b * h
    sp_div = t if st.sp else 1
    attn_outside, attn_tp = attention_activations(a, s * b)
    outside = (4 + 2) * sbh + attn_outside + (2 * sbh if a.dropout else 0)
    tp_region = attn_tp + (6 if a.mlp == "swiglu" else 4) * s * b * a.ffn_hidden
    if train.flash_attention:
        scores = 4 * a.heads * s * b
    else:
        scores = (5 if a.dropout else 2) * a.heads * s * train.seq_len * b
    widen = element_bytes(model) / ACT_BYTES  # the coefficients above count 16-bit tensors
    kept = widen * (outside / sp_div + tp_region / t)
    return BlockActivations(
        none=kept + scores / t,
        selective=kept,
        full=element_bytes(model) * sbh / sp_div,
    )


def attention_activations(arch: Architecture, tokens: int) -> tuple[float, float]:
    """16-bit bytes the attention keeps for `tokens` tokens, outside and inside the TP region
    (the norms' inputs and the MLP's tensors are counted by the caller).

    Multi-head attention: the QKV input 2sbh outside; Q 2sbh, K and V 2sb(gd) each and the
    projection input (the attention output) 2sbh inside. Multi-head latent attention as
    Megatron-Core's `MLASelfAttention` runs it (transformer/multi_latent_attention.py, TE layer
    spec with `--qk-layernorm`): outside, the down-projections' input 2sbh and each latent twice,
    as the input and the output its norm keeps for the fused norm + up-projection
    (`TELayerNormColumnParallelLinear`): 2 * 2sb(q_lora_rank + kv_lora_rank); inside, the fused
    attention's query and key of a(d_nope + d_rope) channels each (the shared rotary key is
    expanded to every head and concatenated before the kernel), its value a d_v and output a d_v:
    2sb a (2(d_nope + d_rope) + 2 d_v). RoPE keeps no input; the up-projections' outputs are
    split into those tensors, not kept beside them.
    """
    if arch.mla is None:
        return 2 * tokens * arch.hidden, tokens * (4 * arch.hidden + 4 * arch.kv_dim)
    mla = arch.mla
    latents = 2 * 2 * tokens * (mla.q_lora_rank + mla.kv_lora_rank)
    heads = 2 * tokens * arch.heads * (2 * (mla.qk_nope_head_dim + mla.qk_rope_head_dim)
                                       + 2 * mla.v_head_dim)
    return 2 * tokens * arch.hidden + latents, heads


def in_flight_microbatches(stage: int, st: Strategy, micro_batches: int) -> float:
    """Micro-batches whose activations a stage holds at its peak, in units of a whole stage.

    1F1B: stage i holds min(p - i, m) (Narayanan et al. 2021 §2.2.1). Interleaved: Megatron runs
    (p - i - 1) * 2 + (v - 1) * p warm-up chunk-micro-batches plus one, each of 1/v of the stage's
    blocks, which for stage 0 is Korthikanti's L(1 + (p-1)/(p*v)) (2022, §4.2.3).
    """
    p, v = st.pp, st.vpp
    if p == 1:
        return 1.0
    if v == 1:
        return float(min(p - stage, micro_batches))
    chunks = min(micro_batches * v, (p - stage - 1) * 2 + (v - 1) * p + 1)
    return chunks / v


@dataclass(frozen=True)
class StateBytes:
    """Model-state bytes per parameter on the GPU (after sharding) and on the host."""

    weights: float
    grads: float
    optimizer: float
    host: float


def optimizer_bytes_per_param(model: ModelSpec) -> float:
    """K of the ZeRO paper: fp32 master (4) + Adam moments (4 + 4), or SGD momentum (4)."""
    train = model.training
    if train.precision == "fp32":  # the weights are the fp32 master; moments are fp32
        return 2 * 4 if train.optimizer == "adam" else 4
    moment = 4 if train.master_weights_fp32 else 2
    moments = 2 if train.optimizer == "adam" else 1
    return (4 if train.master_weights_fp32 else 0) + moments * moment


def state_bytes_per_param(model: ModelSpec, st: Strategy, shard: int | None = None) -> StateBytes:
    """Rajbhandari et al. 2020 (ZeRO) accounting: 16-bit weights 2, grads G, optimizer K bytes
    (pure fp32 training: weights 4, grads 4, K = 8 for Adam).

    ZeRO-1 shards K over the dp*cp group (or `shard` ranks: the expert data-parallel group for MoE
    experts), ZeRO-2 also the grads, ZeRO-3 also the weights. Grads are G = 4 when accumulated in
    fp32 (Megatron's main_grad buffer, which its distributed optimizer keeps whole), else 2.
    Offloaded states move to the host; under ZeRO-2/3 the gradient shard goes with the optimizer
    (only the host keeps it).
    """
    n = shard or st.dp * st.cp
    k = optimizer_bytes_per_param(model)
    g = 4 if model.training.grads_fp32 or model.training.precision == "fp32" else 2
    w = float(element_bytes(model))
    weights = w / n if st.zero >= 3 else w
    grads = g / n if st.zero >= 2 else float(g)
    optimizer = k / n if st.zero >= 1 else float(k)
    host = 0.0
    if st.offload_optimizer:
        host += optimizer + 4.0 / max(n if st.zero >= 2 else 1, 1)
        optimizer = 0.0
        if st.zero >= 2:  # the reduce-scattered shard moves to the host's fp32 copy (Ren et al.
            grads = 0.0   # 2021 §4.1; FSDP2 CPUOffloadPolicy): the GPU keeps only buckets
    if st.offload_params:
        host += weights
        weights = 0.0
    return StateBytes(weights, grads, optimizer, host)


def stage_params(model: ModelSpec, st: Strategy, stage: int, blocks: int) -> float:
    """Parameters held (before ZeRO sharding) by one GPU of pipeline stage `stage`."""
    a, t = model.arch, st.tp
    params = blocks * block_params(a) / t
    if stage == 0:
        params += embedding_params(a, model.training.seq_len, t) / t
    if stage == st.pp - 1 and not (a.tied_embeddings and st.pp == 1):
        params += head_params(a, t) / t
    return params


def stage_extra_activations(model: ModelSpec, st: Strategy, stage: int, in_flight: float) -> float:
    """Embedding and output-layer activations (Korthikanti et al. 2022 §4.3 and App. B).

    First stage: embedding dropout masks, s*b*h/t bytes per in-flight micro-batch when dropout is
    used. Last stage (one micro-batch at a time): final norm input and logits input 2sbh/t each,
    and the logits: fp32 softmax 4sbV/t plus the 16-bit logits 2sbV/t alive while it is built
    (2 -> 4 bytes per element under fp32 training).
    """
    a, train = model.arch, model.training
    s, b, t = train.seq_len // st.cp, st.mbs, st.tp
    sp_div = t if st.sp else 1
    extra = 0.0
    if stage == 0 and a.dropout:
        extra += in_flight * s * b * a.hidden / sp_div
    if stage == st.pp - 1:
        e = element_bytes(model)
        extra += 2 * e * s * b * a.hidden / sp_div + (4 + e) * s * b * a.vocab / t
    return extra
