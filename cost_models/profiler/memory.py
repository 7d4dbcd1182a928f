"""Per-block activation, parameter, gradient and optimizer bytes and FLOPs of a real torch block,
measured under FakeTensorMode (no memory is allocated, so any size works on a CPU) and set
against the analytic model (`cost_models.memory.block_activations`, `cost_models.flops`).

Two measurements of the stored activations, which must agree:
* `MemTracker` (torch.distributed._tools.mem_tracker): Activation bytes alive after the block's
  forward minus before it. The block's output is alive then, and its input (the previous block's
  output) is not counted, which balances for a stack of blocks.
* saved-tensor hooks: every tensor autograd keeps for backward, deduplicated by storage and
  attributed to the submodule that last saves it, so each maps to one of Korthikanti et al.
  2022's terms (see `analytic_terms`).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed._tools.mem_tracker import MemTracker
from torch.utils.flop_counter import FlopCounterMode

from cost_models.flops import attention_core_flops, block_gemms, block_params
from cost_models.memory import block_activations, optimizer_bytes_per_param
from cost_models.profiler.block import Block
from planner.specs import ModelSpec
from planner.strategy import Strategy

aten = torch.ops.aten

TERMS = ("attn_norm", "qkv", "core", "proj", "mlp_norm", "up", "act", "down")
"""Submodules of `Block`, in forward order."""


def analytic_terms(model: ModelSpec, tp: int, mbs: int) -> dict[str, float]:
    """`cost_models.memory.block_activations(...).none` (no sp, no cp) split by the submodule
    whose saved tensors each term is (Korthikanti et al. 2022 §4, re-derived for GQA/SwiGLU):
    attn_norm, mlp_norm: the two norm inputs 2sbh each; qkv: QKV input 2sbh; core: Q 2sbh/t,
    K and V 2sb(gd)/t each, and the fp32 log-sum-exp 4asb/t of fused attention; proj: its input
    2sbh/t; up: the MLP input 2sbh; act: gate and up 4sbf/t (SwiGLU) or the GELU input 2sbf/t;
    down: the SwiGLU product or GELU output 2sbf/t."""
    a, s = model.arch, model.training.seq_len
    sbh, sbf, t = s * mbs * a.hidden, s * mbs * a.ffn_hidden, tp
    terms = {
        "attn_norm": 2 * sbh, "qkv": 2 * sbh,
        "core": (2 * sbh + 2 * 2 * s * mbs * a.kv_dim + 4 * a.heads * s * mbs) / t,
        "proj": 2 * sbh / t, "mlp_norm": 2 * sbh, "up": 2 * sbh,
        "act": (4 if a.mlp == "swiglu" else 2) * sbf / t, "down": 2 * sbf / t,
    }
    if a.dropout:
        terms["dropout (not built)"] = 2 * sbh
    return terms


def _sdpa_fwd_flops(query_shape, key_shape, *args, **kwargs) -> int:
    """4 b a s_q s_k d: QK^T and PV over every (unmasked and masked) pair."""
    b, heads, s_q, d = query_shape
    return 4 * b * heads * s_q * key_shape[-2] * d


def _sdpa_bwd_flops(grad_out_shape, query_shape, key_shape, *args, **kwargs) -> int:
    """FlashAttention-2 backward: 5 matmuls vs 2 forward (Dao 2023 §3.2)."""
    return 5 * _sdpa_fwd_flops(query_shape, key_shape) // 2


CPU_SDPA_FLOPS = {aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_fwd_flops,
                  aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_bwd_flops}
"""FlopCounterMode has formulas for the CUDA SDPA kernels only; these cover the CPU kernel."""


class SavedTensors(contextlib.ContextDecorator):
    """Bytes autograd saves for backward, per submodule (the last one to save a storage)."""

    def __init__(self, block: Block, exclude: set[int]):
        self.stack: list[str] = ["block"]
        self.owner: dict[int, tuple[str, int, str]] = {}
        self.exclude = exclude
        self.handles = []
        for name in TERMS:
            module = getattr(block, name)
            self.handles.append(module.register_forward_pre_hook(
                lambda m, args, n=name: self._enter_module(n)))
            self.handles.append(module.register_forward_hook(
                lambda m, args, out: self._leave_module()))
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _enter_module(self, name: str) -> None:
        self.stack.append(name)

    def _leave_module(self) -> None:
        self.stack.pop()

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        key = storage._cdata
        if key not in self.exclude:
            what = f"{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}"
            self.owner[key] = (self.stack[-1], storage.nbytes(), what)
        return t

    def __enter__(self) -> "SavedTensors":
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.hooks.__exit__(*exc)
        for handle in self.handles:
            handle.remove()

    def by_term(self) -> dict[str, float]:
        """Saved bytes per submodule."""
        out = {name: 0.0 for name in TERMS}
        for module, nbytes, _ in self.owner.values():
            out[module] = out.get(module, 0.0) + nbytes
        return out

    def tensors(self) -> list[str]:
        """One line per saved storage: submodule, shape and dtype of the saving view, bytes."""
        return [f"{m}: {what} {n} B" for m, n, what in sorted(self.owner.values())]


@dataclass(frozen=True)
class BlockCheck:
    """Measured vs analytic figures of one block on one TP rank for one micro-batch."""

    config: dict
    measured_bytes: dict[str, float]
    analytic_bytes: dict[str, float]
    memtracker_activation_bytes: float
    """MemTracker's Activation growth over the forward, less the block's output (the next
    block's input, which that block's norm stores)."""
    saved_tensors: list[str]
    states_bytes: dict[str, dict[str, float]]
    """weights / grads / optimizer: {"measured": ..., "analytic": ...}."""
    flops: dict[str, float]

    def to_dict(self) -> dict:
        """JSON-ready (stored in the profile's memory_checks)."""
        return {"config": self.config, "activation_bytes": {
                    "measured": self.measured_bytes, "analytic": self.analytic_bytes,
                    "memtracker_total": self.memtracker_activation_bytes},
                "saved_tensors": self.saved_tensors, "states_bytes": self.states_bytes,
                "flops": self.flops}


def measure_block(model: ModelSpec, tp: int = 1, mbs: int = 1) -> BlockCheck:
    """Build the model's block (bf16, one TP shard), run forward, backward and an AdamW step on
    fp32 master copies under FakeTensorMode, and compare with the analytic model."""
    a, s = model.arch, model.training.seq_len
    dtype = torch.bfloat16
    with FakeTensorMode():
        block = Block(a, tp, dtype)
        x = torch.randn(mbs, s, a.hidden, dtype=dtype, requires_grad=True)
        params = list(block.parameters())
        masters = [torch.nn.Parameter(p.detach().float()) for p in params]
        optimizer = torch.optim.AdamW(masters, foreach=True)
        tracker = MemTracker()
        tracker.track_external(block, x, optimizer)
        with tracker:
            with SavedTensors(block, {p.untyped_storage()._cdata for p in params}) as saved, \
                    FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FLOPS) as fwd_counter:
                out = block(x)
            stats = tracker.memory_tracking[block].snapshots
            act = [next(iter(stats[state][0].values()))["Activation"] for state in stats
                   if state.value in ("Pre-Forward", "Post-Forward")]
            with FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FLOPS) as bwd_counter:
                out.backward(torch.ones_like(out))
            grads = sum(p.grad.untyped_storage().nbytes() for p in params)
            for master, p in zip(masters, params):
                master.grad = p.grad.float()
            optimizer.step()
            opt = next(iter(tracker.get_tracker_snapshot().values()))["Optstate"]
        output_bytes = out.untyped_storage().nbytes()
    weights = sum(p.untyped_storage().nbytes() for p in params)
    n_params = block_params(a) / tp
    measured_states = {"weights": weights, "grads": grads,
                       "optimizer": opt + 2 * weights}  # moments + fp32 master (2x the bf16 bytes)
    analytic_states = {"weights": 2 * n_params,
                       "grads": (4 if model.training.grads_fp32 else 2) * n_params,
                       "optimizer": optimizer_bytes_per_param(model) * n_params}
    gemm_fwd = sum(g.flops for g in block_gemms(a, mbs * s, tp))
    attn_fwd = attention_core_flops(a, mbs, s, s, tp, causal_skip=False)
    return BlockCheck(
        config={"model": model.name, "tp": tp, "mbs": mbs, "seq_len": s, "dtype": "bf16"},
        measured_bytes=saved.by_term(), analytic_bytes=analytic_terms(model, tp, mbs),
        memtracker_activation_bytes=float(act[-1] - act[0] - output_bytes),
        saved_tensors=saved.tensors(),
        states_bytes={k: {"measured": float(measured_states[k]), "analytic": float(analytic_states[k])}
                      for k in measured_states},
        flops={"measured_fwd": float(fwd_counter.get_total_flops()),
               "measured_bwd": float(bwd_counter.get_total_flops()),
               "analytic_fwd": gemm_fwd + attn_fwd, "analytic_bwd": 2 * (gemm_fwd + attn_fwd)})


def analytic_block_total(model: ModelSpec, tp: int, mbs: int) -> float:
    """`block_activations(...).none` for the same shard (a check on `analytic_terms`)."""
    return block_activations(model, Strategy(tp=tp, mbs=mbs, sp=False)).none
