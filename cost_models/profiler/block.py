"""A real torch transformer block shaped like the model, as one tensor-parallel rank holds it.

Submodules mirror the terms of the analytic activation model (`cost_models.memory`) so that the
tensors each one saves for backward can be set against Korthikanti et al. 2022's terms: the
attention norm, the QKV projection, the attention core (RoPE + causal SDPA), the output
projection, the MLP norm, the MLP up (gate+up for SwiGLU) projection, the activation, and the
MLP down projection. Sharding follows Megatron-LM (column-parallel QKV/up, row-parallel
projection/down; Shoeybi et al. 2019 §3) without sequence parallelism: norms see the full s*b*h.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from planner.specs import Architecture


class Norm(nn.Module):
    """torch's RMSNorm / LayerNorm over the hidden size."""

    def __init__(self, arch: Architecture, dtype: torch.dtype):
        super().__init__()
        cls = nn.RMSNorm if arch.norm == "rmsnorm" else nn.LayerNorm
        self.norm = cls(arch.hidden, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class AttentionCore(nn.Module):
    """Rotary embedding of Q and K (Su et al. 2021) and causal SDPA with grouped KV heads."""

    def __init__(self, heads: int, kv_heads: int, head_dim: int, rotary: bool):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim, self.rotary = heads, kv_heads, head_dim, rotary

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        b, s, _ = qkv.shape
        d = self.head_dim
        q, k, v = qkv.split([self.heads * d, self.kv_heads * d, self.kv_heads * d], dim=-1)
        q = q.view(b, s, self.heads, d).transpose(1, 2)
        k = k.view(b, s, self.kv_heads, d).transpose(1, 2)
        v = v.view(b, s, self.kv_heads, d).transpose(1, 2)
        if self.rotary:
            q, k = _rotate(q), _rotate(k)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                             enable_gqa=self.heads != self.kv_heads)
        return out.transpose(1, 2).reshape(b, s, self.heads * d)


def _rotate(x: torch.Tensor) -> torch.Tensor:
    """x * cos + rotate_half(x) * sin, the unfused RoPE of the Llama reference code."""
    s, d = x.shape[-2], x.shape[-1]
    inv_freq = 1.0 / (10000 ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    angles = torch.outer(torch.arange(s, dtype=torch.float32), inv_freq)
    cos = torch.cat([angles.cos(), angles.cos()], dim=-1).to(x.dtype)
    sin = torch.cat([angles.sin(), angles.sin()], dim=-1).to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class Activation(nn.Module):
    """SwiGLU silu(gate) * up (Shazeer 2020), or GELU."""

    def __init__(self, swiglu: bool):
        super().__init__()
        self.swiglu = swiglu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.swiglu:
            gate, up = x.chunk(2, dim=-1)
            return F.silu(gate) * up
        return F.gelu(x)


class Block(nn.Module):
    """Pre-norm decoder block: x + proj(attn(norm(x))), then x + down(act(up(norm(x))))."""

    def __init__(self, arch: Architecture, tp: int, dtype: torch.dtype):
        super().__init__()
        h, d, bias = arch.hidden, arch.head_dim, arch.linear_bias
        heads, kv_heads, ffn = arch.heads // tp, arch.kv_heads // tp, arch.ffn_hidden // tp
        up = 2 * ffn if arch.mlp == "swiglu" else ffn
        self.attn_norm = Norm(arch, dtype)
        self.qkv = nn.Linear(h, (heads + 2 * kv_heads) * d, bias=bias, dtype=dtype)
        self.core = AttentionCore(heads, kv_heads, d, rotary=not arch.learned_positions)
        self.proj = nn.Linear(heads * d, h, bias=bias, dtype=dtype)
        self.mlp_norm = Norm(arch, dtype)
        self.up = nn.Linear(h, up, bias=bias, dtype=dtype)
        self.act = Activation(arch.mlp == "swiglu")
        self.down = nn.Linear(ffn, h, bias=bias, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.proj(self.core(self.qkv(self.attn_norm(x))))
        return x + self.down(self.act(self.up(self.mlp_norm(x))))
