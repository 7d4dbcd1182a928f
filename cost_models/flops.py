"""FLOPs and parameter counts of a decoder-only transformer.

The op set per block is: QKV projection (GQA: K and V have g*d columns), attention core
(Q K^T and attention-over-V), output projection, MLP (GELU: h->f->h; SwiGLU: h->2f->h split as gate
and up, then f->h) and, once per model, the logits layer. Backward costs twice the forward
(Narayanan et al. 2021, §5.1: "the backward pass requires double the number of floating-point
operations since we need to calculate the gradients with respect to both input and weight").
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


def block_gemms(arch: Architecture, tokens: int, tp: int) -> list[Gemm]:
    """The forward GEMMs of one transformer block for `tokens` rows, sharded over `tp`.

    Column-parallel QKV and MLP-up shard N; row-parallel projections shard K (Shoeybi et al. 2019,
    Megatron-LM §3). For SwiGLU the up-projection produces gate and up (2f columns).
    """
    h, f = arch.hidden, arch.ffn_hidden
    up = 2 * f if arch.mlp == "swiglu" else f
    return [
        Gemm("qkv", tokens, h, (h + 2 * arch.kv_dim) // tp),
        Gemm("proj", tokens, h // tp, h),
        Gemm("mlp_up", tokens, h, up // tp),
        Gemm("mlp_down", tokens, f // tp, h),
    ]


def attention_core_flops(arch: Architecture, batch: int, q_len: int, kv_len: int, tp: int,
                         causal_skip: bool) -> float:
    """Forward FLOPs of QK^T and attention-over-V on one GPU: 4 * b * q * kv * h / t.

    Korthikanti et al. 2022 App. A count 2*b*s^2*h for each of the two products. A fused causal
    kernel (FlashAttention) skips the masked upper half of the blocks, so it executes about half.
    """
    flops = 4.0 * batch * q_len * kv_len * arch.hidden / tp
    return flops / 2 if causal_skip else flops


def logits_gemm(arch: Architecture, tokens: int, tp: int) -> Gemm:
    """The output layer (vocabulary-parallel): tokens x h @ h x V/t."""
    return Gemm("logits", tokens, arch.hidden, padded_vocab(arch.vocab, tp) // tp)


def padded_vocab(vocab: int, tp: int, multiple: int = 128) -> int:
    """Megatron pads the vocabulary to a multiple of 128 * tp (`--make-vocab-size-divisible-by`)."""
    step = multiple * tp
    return -(-vocab // step) * step


def model_flops_per_step(model: ModelSpec, padded_for_tp: int = 1) -> float:
    """Model FLOPs of one optimizer step (no recompute), Megatron-Core's convention.

    Megatron-LM `num_floating_point_operations` (megatron/training/training.py, r0.8):
      F = 12 B s L h^2 [ (1 + g/a + s/h) (q/h) + (f/h) k m + V / (2 L h) ]
    with q = a*d = h, k = 1 for dense models, m = 3/2 for SwiGLU. For GPT shapes this equals
    Korthikanti et al. 2022 Eq. 7 (72 B L s h^2 (1 + s/6h + V/12hL)). Full s^2 attention is counted.
    """
    a, t = model.arch, model.training
    b, s, L, h = t.global_batch, t.seq_len, a.layers, a.hidden
    gated = 1.5 if a.mlp == "swiglu" else 1.0
    vocab = padded_vocab(a.vocab, padded_for_tp) if padded_for_tp > 1 else a.vocab
    return 12.0 * b * s * L * h * h * (
        (1 + a.kv_heads / a.heads + s / h) + (a.ffn_hidden / h) * gated + vocab / (2 * L * h))


def recompute_flops_per_step(model: ModelSpec, full_layers: float, selective_layers: float) -> float:
    """Extra forward FLOPs of recomputation per step, in the same (full-s^2) convention.

    Full recompute repeats a block's forward (1/3 of its fwd+bwd model FLOPs); selective recompute
    repeats only the attention core, 4 B s^2 h per block (Korthikanti et al. 2022 Eq. 8).
    `full_layers`/`selective_layers` count blocks over the whole model.
    """
    a, t = model.arch, model.training
    b, s, h = t.global_batch, t.seq_len, a.hidden
    gated = 1.5 if a.mlp == "swiglu" else 1.0
    per_block_fwd = 4.0 * b * s * h * h * ((1 + a.kv_heads / a.heads + s / h) + (a.ffn_hidden / h) * gated)
    core_fwd = 4.0 * b * s * s * h
    return full_layers * per_block_fwd + selective_layers * core_fwd


def block_params(arch: Architecture) -> int:
    """Parameters of one transformer block (weights, biases, norms)."""
    h, f, kv = arch.hidden, arch.ffn_hidden, arch.kv_dim
    attn = h * (h + 2 * kv) + h * h
    mlp = h * f * (3 if arch.mlp == "swiglu" else 2)
    bias = (h + 2 * kv) + h + (2 * f if arch.mlp == "swiglu" else f) + h if arch.linear_bias else 0
    norms = 2 * h * (2 if arch.norm == "layernorm" else 1)
    return attn + mlp + bias + norms


def embedding_params(arch: Architecture, seq_len: int, tp: int = 1) -> int:
    """Input embedding (padded vocabulary) plus learned positions."""
    return padded_vocab(arch.vocab, tp) * arch.hidden + (seq_len * arch.hidden if arch.learned_positions else 0)


def head_params(arch: Architecture, tp: int = 1) -> int:
    """Final norm plus the output layer (a copy of the embedding when tied and pipelined)."""
    return arch.hidden * (2 if arch.norm == "layernorm" else 1) + padded_vocab(arch.vocab, tp) * arch.hidden


def total_params(model: ModelSpec) -> int:
    """All parameters of the model (unpadded vocabulary, tied output counted once)."""
    a = model.arch
    head = a.hidden * (2 if a.norm == "layernorm" else 1) + (0 if a.tied_embeddings else a.vocab * a.hidden)
    emb = a.vocab * a.hidden + (model.training.seq_len * a.hidden if a.learned_positions else 0)
    return a.layers * block_params(a) + emb + head
