"""FLOPs and parameter counts of a decoder-only transformer (dense or mixture-of-experts).

The op set per block is: the attention projections (GQA: K and V have g*d columns; MLA: low-rank
query and a compressed joint KV, DeepSeek-V2 §2.1), the attention core (Q K^T and
attention-over-V), the output projection, and the MLP (GELU: h->f->h; SwiGLU: h->2f->h split as
gate and up, then f->h), which in an MoE block is k routed experts plus the shared experts and a
router. Once per model: the logits layer. Backward costs twice the forward (Narayanan et al. 2021
§5.1: gradients with respect to both inputs and weights).
"""
from __future__ import annotations

from dataclasses import dataclass

from planner.specs import Architecture, ModelSpec


@dataclass(frozen=True)
class Gemm:
    """One forward matrix multiply (M x K) @ (K x N) on one GPU."""

    name: str
    m: int
    k: int
    n: int

    @property
    def flops(self) -> float:
        """2 * M * K * N."""
        return 2.0 * self.m * self.k * self.n


def qk_head_dim(arch: Architecture) -> int:
    """Per-head query/key channels (MLA: nope + rope)."""
    return arch.mla.qk_nope_head_dim + arch.mla.qk_rope_head_dim if arch.mla else arch.head_dim


def v_head_dim(arch: Architecture) -> int:
    """Per-head value channels."""
    return arch.mla.v_head_dim if arch.mla else arch.head_dim


def attention_gemms(arch: Architecture, tokens: int, tp: int) -> list[Gemm]:
    """Forward projection GEMMs of one attention block, column/row-parallel over `tp`
    (Shoeybi et al. 2019 §3). MLA (DeepSeek-V2 §2.1.2): the down-projections are replicated, the
    up-projections are split by heads."""
    h, a = arch.hidden, arch.heads
    if arch.mla is None:
        return [Gemm("qkv", tokens, h, (h + 2 * arch.kv_dim) // tp),
                Gemm("proj", tokens, h // tp, h)]
    mla, dqk = arch.mla, qk_head_dim(arch)
    gemms = []
    if mla.q_lora_rank:
        gemms += [Gemm("q_down", tokens, h, mla.q_lora_rank),
                  Gemm("q_up", tokens, mla.q_lora_rank, a * dqk // tp)]
    else:
        gemms.append(Gemm("q", tokens, h, a * dqk // tp))
    gemms += [Gemm("kv_down", tokens, h, mla.kv_lora_rank + mla.qk_rope_head_dim),
              Gemm("kv_up", tokens, mla.kv_lora_rank, a * (mla.qk_nope_head_dim + mla.v_head_dim) // tp),
              Gemm("proj", tokens, a * mla.v_head_dim // tp, h)]
    return gemms


def mlp_gemms(arch: Architecture, tokens: int, width: int, tp: int, name: str = "mlp") -> list[Gemm]:
    """Forward GEMMs of one MLP of inner `width` (SwiGLU: gate and up, then down)."""
    up = 2 * width if arch.mlp == "swiglu" else width
    return [Gemm(f"{name}_up", tokens, arch.hidden, up // tp),
            Gemm(f"{name}_down", tokens, width // tp, arch.hidden)]


def block_gemms(arch: Architecture, tokens: int, tp: int) -> list[Gemm]:
    """The forward GEMMs of one dense transformer block for `tokens` rows, sharded over `tp`."""
    return attention_gemms(arch, tokens, tp) + mlp_gemms(arch, tokens, arch.ffn_hidden, tp)


def moe_mlp_flops_per_token(arch: Architecture) -> float:
    """Forward FLOPs per token of an MoE MLP: k routed experts, the shared experts, the router."""
    moe = arch.moe
    per_width = 2 * arch.hidden * (3 if arch.mlp == "swiglu" else 2)
    return per_width * (moe.top_k * moe.expert_ffn_hidden + moe.shared_ffn_hidden) \
        + 2 * arch.hidden * moe.routed_experts


def attention_core_flops(arch: Architecture, batch: int, q_len: int, kv_len: int, tp: int,
                         causal_skip: bool) -> float:
    """Forward FLOPs of QK^T and attention-over-V on one GPU: 2 b q kv (a/t) (d_qk + d_v).

    For MHA this is Korthikanti et al. 2022 App. A's 2bs^2h for each of the two products. A fused
    causal kernel (FlashAttention) skips the masked upper half of the blocks: about half runs.
    """
    flops = 2.0 * batch * q_len * kv_len * (arch.heads / tp) * (qk_head_dim(arch) + v_head_dim(arch))
    return flops / 2 if causal_skip else flops


def logits_gemm(arch: Architecture, tokens: int, tp: int) -> Gemm:
    """The output layer (vocabulary-parallel): tokens x h @ h x V/t."""
    return Gemm("logits", tokens, arch.hidden, padded_vocab(arch.vocab, tp) // tp)


def padded_vocab(vocab: int, tp: int, multiple: int = 128) -> int:
    """Megatron pads the vocabulary to a multiple of 128 * tp (`--make-vocab-size-divisible-by`)."""
    step = multiple * tp
    return -(-vocab // step) * step


def block_forward_flops_per_token(arch: Architecture, seq_len: int, index: int) -> float:
    """Forward model FLOPs per token of block `index`, counting the full (non-causal) s^2."""
    gemms = attention_gemms(arch, 1, 1)
    if arch.moe is not None and arch.moe.is_moe_layer(index):
        mlp = moe_mlp_flops_per_token(arch)
    else:
        mlp = sum(g.flops for g in mlp_gemms(arch, 1, arch.ffn_hidden, 1))
    core = attention_core_flops(arch, 1, 1, seq_len, 1, causal_skip=False)
    return sum(g.flops for g in gemms) + mlp + core


def model_flops_per_step(model: ModelSpec) -> float:
    """Model FLOPs of one optimizer step (no recompute): 3x the forward, summed op by op.

    For dense models this equals Megatron-LM's `num_floating_point_operations`
    (megatron/training/training.py, r0.8):
      F = 12 B s L h^2 [ (1 + g/a + s/h) + (f/h) m + V / (2 L h) ],  m = 3/2 for SwiGLU,
    and for GPT shapes Korthikanti et al. 2022 Eq. 7 (72 B L s h^2 (1 + s/6h + V/12hL)); full s^2
    attention is counted. MoE blocks count only the active experts (k routed + shared) and the
    router, so MFU is relative to the active parameters.
    """
    a, t = model.arch, model.training
    blocks = sum(block_forward_flops_per_token(a, t.seq_len, i) for i in range(a.layers))
    logits = 2.0 * a.hidden * a.vocab
    return 3.0 * t.global_batch * t.seq_len * (blocks + logits)


def recompute_flops_per_step(model: ModelSpec, full_layers: float, selective_layers: float) -> float:
    """Extra forward FLOPs of recomputation per step, in the same (full-s^2) convention.

    Full recompute repeats a block's forward (1/3 of its fwd+bwd model FLOPs); selective recompute
    repeats only the attention core, 2 b s^2 a (d_qk + d_v) per block (4 b s^2 h for MHA;
    Korthikanti et al. 2022 §5). Counts are blocks over the whole model (dense block FLOPs).
    """
    a, t = model.arch, model.training
    tokens = t.global_batch * t.seq_len
    per_block = sum(block_forward_flops_per_token(a, t.seq_len, i) for i in range(a.layers)) / a.layers
    core = attention_core_flops(a, t.global_batch, t.seq_len, t.seq_len, 1, causal_skip=False)
    return full_layers * per_block * tokens + selective_layers * core


def attention_params(arch: Architecture) -> int:
    """Projection weights (+ biases) of one attention block."""
    gemm_params = sum(g.k * g.n for g in attention_gemms(arch, 1, 1))
    if arch.mla is not None:
        gemm_params += arch.mla.kv_lora_rank + arch.mla.q_lora_rank   # latent norms
    if arch.linear_bias:
        gemm_params += sum(g.n for g in attention_gemms(arch, 1, 1))
    return gemm_params


def mlp_params(arch: Architecture, width: int) -> int:
    """Weights (+ biases) of one MLP of inner `width`."""
    gemms = mlp_gemms(arch, 1, width, 1)
    return sum(g.k * g.n + (g.n if arch.linear_bias else 0) for g in gemms)


def _norm_params(arch: Architecture) -> int:
    return arch.hidden * (2 if arch.norm == "layernorm" else 1)


def block_params(arch: Architecture) -> int:
    """Parameters of one dense transformer block (weights, biases, two norms)."""
    return attention_params(arch) + mlp_params(arch, arch.ffn_hidden) + 2 * _norm_params(arch)


def moe_block_params(arch: Architecture, active: bool = False) -> int:
    """Parameters of one MoE block: all experts, or (active) those one token uses."""
    moe = arch.moe
    experts = moe.top_k if active else moe.routed_experts
    shared = mlp_params(arch, moe.shared_ffn_hidden) if moe.shared_ffn_hidden else 0
    return (attention_params(arch) + experts * mlp_params(arch, moe.expert_ffn_hidden) + shared
            + arch.hidden * moe.routed_experts + 2 * _norm_params(arch))


def embedding_params(arch: Architecture, seq_len: int, tp: int = 1) -> int:
    """Input embedding (padded vocabulary) plus learned positions."""
    return padded_vocab(arch.vocab, tp) * arch.hidden + (seq_len * arch.hidden if arch.learned_positions else 0)


def head_params(arch: Architecture, tp: int = 1) -> int:
    """Final norm plus the output layer (a copy of the embedding when tied and pipelined)."""
    return _norm_params(arch) + padded_vocab(arch.vocab, tp) * arch.hidden


def total_params(model: ModelSpec, active: bool = False) -> int:
    """All parameters (unpadded vocabulary, tied output counted once); `active`: per token."""
    a = model.arch
    head = _norm_params(a) + (0 if a.tied_embeddings else a.vocab * a.hidden)
    emb = a.vocab * a.hidden + (model.training.seq_len * a.hidden if a.learned_positions else 0)
    blocks = sum(moe_block_params(a, active) if a.moe and a.moe.is_moe_layer(i) else block_params(a)
                 for i in range(a.layers))
    return blocks + emb + head
