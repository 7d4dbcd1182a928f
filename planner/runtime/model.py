"""A decoder-only transformer in plain torch, shaped by an `Architecture`.

Llama style (RMSNorm, RoPE, GQA, SwiGLU, no biases) or GPT style (LayerNorm, GELU MLP, linear
biases, learned positions), chosen by the Architecture fields, so the runtime holds exactly the
parameters `cost_models.flops.block_params` counts. Module names follow torchtitan's Llama
(`tok_embeddings`, `layers` as a ModuleDict keyed by the global layer index, `norm`, `output`) so
pipeline stages can drop the layers they do not own and keep the global names.

Dropout is never applied (its random masks would differ between parallel layouts and break the
loss comparison); the prediction is made for a model without dropout.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from cost_models.flops import padded_vocab
from planner.runtime.moe import MoEFeedForward
from planner.specs import Architecture

ROPE_THETA = 10_000.0
"""RoPE base frequency (Su et al. 2021; Llama 2)."""


def _norm(arch: Architecture) -> nn.Module:
    if arch.norm == "rmsnorm":
        return nn.RMSNorm(arch.hidden, eps=1e-5)
    return nn.LayerNorm(arch.hidden, eps=1e-5)


def _rotate(x: torch.Tensor) -> torch.Tensor:
    """RoPE on (batch, seq, heads, head_dim): rotate channel pairs by position-dependent angles."""
    seq, dim = x.shape[1], x.shape[-1]
    inv_freq = 1.0 / ROPE_THETA ** (torch.arange(0, dim, 2, device=x.device, dtype=torch.float32) / dim)
    angles = torch.outer(torch.arange(seq, device=x.device, dtype=torch.float32), inv_freq)
    cos, sin = angles.cos()[None, :, None, :].to(x.dtype), angles.sin()[None, :, None, :].to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


def _attention_core(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal fused attention on (batch, heads, seq, head_dim); GQA without copying K and V."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


class Attention(nn.Module):
    """Multi-head attention with grouped K/V heads. Head counts are read from the (possibly
    tensor-parallel) weight shapes at run time, so the same code runs on a TP shard."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        d, bias = arch.head_dim, arch.linear_bias
        self.head_dim = d
        self.rope = not arch.learned_positions
        self.wq = nn.Linear(arch.hidden, arch.heads * d, bias=bias)
        self.wk = nn.Linear(arch.hidden, arch.kv_heads * d, bias=bias)
        self.wv = nn.Linear(arch.hidden, arch.kv_heads * d, bias=bias)
        self.wo = nn.Linear(arch.heads * d, arch.hidden, bias=bias)
        self.recompute_core = False
        """Selective recompute: keep Q, K, V and recompute the attention core in the backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        q = self.wq(x).view(batch, seq, -1, self.head_dim)
        k = self.wk(x).view(batch, seq, -1, self.head_dim)
        v = self.wv(x).view(batch, seq, -1, self.head_dim)
        if self.rope:
            q, k = _rotate(q), _rotate(k)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if self.recompute_core:
            out = checkpoint(_attention_core, q, k, v, use_reentrant=False, preserve_rng_state=False)
        else:
            out = _attention_core(q, k, v)
        return self.wo(out.transpose(1, 2).reshape(batch, seq, -1))


class FeedForward(nn.Module):
    """SwiGLU (w2(silu(w1 x) * w3 x), Shazeer 2020) or GELU (w2(gelu(w1 x)))."""

    def __init__(self, arch: Architecture, width: int | None = None) -> None:
        super().__init__()
        bias, width = arch.linear_bias, width or arch.ffn_hidden
        self.swiglu = arch.mlp == "swiglu"
        self.w1 = nn.Linear(arch.hidden, width, bias=bias)
        self.w2 = nn.Linear(width, arch.hidden, bias=bias)
        self.w3 = nn.Linear(arch.hidden, width, bias=bias) if self.swiglu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.w3 is not None:
            return self.w2(F.silu(self.w1(x)) * self.w3(x))
        return self.w2(F.gelu(self.w1(x), approximate="tanh"))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then + mlp(norm(.)); the MLP is a
    mixture of experts (`planner.runtime.moe`) when `moe` is set."""

    def __init__(self, arch: Architecture, moe: bool = False) -> None:
        super().__init__()
        self.attention_norm = _norm(arch)
        self.attention = Attention(arch)
        self.ffn_norm = _norm(arch)
        self.feed_forward = MoEFeedForward(arch, FeedForward) if moe else FeedForward(arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x))
        return h + self.feed_forward(self.ffn_norm(h))


class Decoder(nn.Module):
    """The whole model, or one pipeline chunk of it when some parts are set to None."""

    def __init__(self, arch: Architecture, seq_len: int, tp: int, tie: bool) -> None:
        super().__init__()
        vocab = padded_vocab(arch.vocab, tp)
        self.tok_embeddings: nn.Module | None = nn.Embedding(vocab, arch.hidden)
        self.pos_embeddings: nn.Module | None = (
            nn.Embedding(seq_len, arch.hidden) if arch.learned_positions else None)
        self.layers = nn.ModuleDict({str(i): Block(arch, arch.moe is not None and arch.moe.is_moe_layer(i))
                                     for i in range(arch.layers)})
        self.norm: nn.Module | None = _norm(arch)
        self.output: nn.Module | None = nn.Linear(arch.hidden, vocab, bias=False)
        if tie:
            self.output.weight = self.tok_embeddings.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (batch, seq) on the first chunk, hidden states on the others."""
        h = tokens
        if self.tok_embeddings is not None:
            h = self.tok_embeddings(tokens)
            if self.pos_embeddings is not None:
                positions = torch.arange(tokens.shape[1], device=tokens.device)[None]
                h = h + self.pos_embeddings(positions)  # (1, seq, hidden): TP/SP shard it as h
        for layer in self.layers.values():
            h = layer(h)
        if self.norm is not None:
            h = self.norm(h)
        if self.output is not None:
            h = self.output(h)
        return h


def build_decoder(arch: Architecture, seq_len: int, *, tp: int, pp: int, seed: int) -> Decoder:
    """The full model, initialised identically on every rank from `seed` (fp32, on the CPU).

    Embeddings are tied only without pipeline parallelism (as in Megatron, which otherwise keeps
    a second copy on the last stage), matching `cost_models.memory.stage_params`.
    """
    torch.manual_seed(seed)
    return Decoder(arch, seq_len, tp, tie=arch.tied_embeddings and pp == 1)


def localize_experts(model: Decoder, ep_group: dist.ProcessGroup | None,
                     etp_group: dist.ProcessGroup | None) -> None:
    """Keep, in every MoE block of `model` (or of a pipeline chunk of it), only this rank's
    experts over `ep_group` and its slice of each over `etp_group` (`MoEFeedForward.localize`)."""
    for block in model.layers.values():
        if isinstance(block.feed_forward, MoEFeedForward):
            block.feed_forward.localize(ep_group, etp_group)


def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the micro-batch."""
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(0, 1))


def synthetic_batch(vocab: int, global_batch: int, seq_len: int, step: int,
                    seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniformly random tokens for one step: (inputs, labels), each (global_batch, seq_len).
    Every rank draws the same global batch and takes its own slice."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    tokens = torch.randint(0, vocab, (global_batch, seq_len + 1), generator=gen)
    return tokens[:, :-1], tokens[:, 1:]
