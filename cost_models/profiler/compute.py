"""Compute rates: GEMM throughput per dtype and shape, causal attention (SDPA) forward and
backward, streaming (HBM) bandwidth and the fixed cost of a tiny kernel."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cost_models.flops import block_gemms, logits_gemm
from cost_models.profile_fit import attention_flops
from cost_models.profile_format import AttentionSample, GemmSample, StreamSample
from cost_models.profiler.settings import Settings
from cost_models.profiler.timing import time_loop_s, time_rotation
from planner.specs import ModelSpec

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
"""Precisions fmplan measures, by the names the cost model uses."""

CHUNK = 4
"""Cases timed together in rotation (also the granularity a Ctrl-C can lose)."""


@dataclass(frozen=True)
class GemmCase:
    """One GEMM shape to time and what it stands for."""

    m: int
    k: int
    n: int
    source: str

    @property
    def flops(self) -> float:
        return 2.0 * self.m * self.k * self.n


def supported_precisions(device: torch.device) -> list[str]:
    """Dtypes the device computes in (bf16 on CUDA needs Ampere or newer)."""
    if device.type == "cuda":
        return ["bf16", "fp16", "fp32"] if torch.cuda.is_bf16_supported() else ["fp16", "fp32"]
    return ["fp32", "bf16"]


def model_tp_degrees(model: ModelSpec, settings: Settings) -> list[int]:
    """TP degrees that divide the model's heads, KV heads and FFN width."""
    a = model.arch
    return [t for t in settings.model_tp
            if a.heads % t == 0 and a.kv_heads % t == 0 and a.ffn_hidden % t == 0]


def gemm_cases(settings: Settings, model: ModelSpec | None) -> list[GemmCase]:
    """A generic sweep (square and MLP-like 1:4 shapes) plus the model's own shapes per
    tp/mbs/cp shard (`cost_models.flops.block_gemms` and the logits GEMM), smallest first."""
    cases = {}
    for s in settings.gemm_sizes:
        for m, k, n in ((s, s, s), (s, s, 4 * s), (s, 4 * s, s)):
            cases.setdefault((m, k, n), GemmCase(m, k, n, "sweep"))
    if model is not None:
        for tp in model_tp_degrees(model, settings):
            for mbs in settings.model_mbs:
                for cp in settings.model_cp:
                    tokens = mbs * model.training.seq_len // cp
                    for g in [*block_gemms(model.arch, tokens, tp), logits_gemm(model.arch, tokens, tp)]:
                        label = f"{model.name} {g.name} tp={tp} mbs={mbs} cp={cp}"
                        cases.setdefault((g.m, g.k, g.n), GemmCase(g.m, g.k, g.n, label))
    return sorted(cases.values(), key=lambda c: (c.flops, c.m, c.k, c.n))


def measure_gemms(cases: list[GemmCase], precision: str, device: torch.device, settings: Settings,
                  done: set[tuple], record: Callable[[GemmSample], None],
                  advance: Callable[[int], None]) -> int:
    """Time the cases not in `done`, in rotation, recording each sample as it completes.

    Returns how many were skipped because their predicted time exceeds `settings.max_call_s`,
    predicted from the rate of the largest shape measured so far (rates grow with size, so this
    errs on the side of measuring)."""
    dtype = DTYPES[precision]
    todo = [c for c in cases if (precision, c.m, c.k, c.n) not in done]
    advance(len(cases) - len(todo))
    last_rate, skipped = 0.0, 0
    for start in range(0, len(todo), CHUNK):
        chunk = todo[start:start + CHUNK]
        if last_rate:
            keep = [c for c in chunk if c.flops / last_rate <= settings.max_call_s]
            skipped += len(chunk) - len(keep)
            advance(len(chunk) - len(keep))
            chunk = keep
        if not chunk:
            continue
        operands = [(torch.randn(c.m, c.k, device=device, dtype=dtype),
                     torch.randn(c.k, c.n, device=device, dtype=dtype)) for c in chunk]
        calls = [(lambda a=a, b=b: torch.mm(a, b)) for a, b in operands]
        times = time_rotation(calls, device, warmup=settings.warmup, repeats=settings.repeats)
        for c, t in zip(chunk, times):
            record(GemmSample(dtype=precision, m=c.m, k=c.k, n=c.n, time_s=t, source=c.source))
            last_rate = c.flops / t
        advance(len(chunk))
    return skipped


def attention_cases(settings: Settings, model: ModelSpec | None) -> list[tuple[int, int, int, int, int, str]]:
    """(batch, heads, kv_heads, seq_len, head_dim, source): a sweep and the model's shards."""
    h, d = settings.attention_heads, settings.attention_head_dim
    cases = [(1, h, h, s, d, "sweep") for s in settings.attention_seq_lens]
    if model is not None:
        a = model.arch
        for tp in model_tp_degrees(model, settings):
            for mbs in settings.model_mbs:
                cases.append((mbs, a.heads // tp, a.kv_heads // tp, model.training.seq_len,
                              a.head_dim, f"{model.name} tp={tp} mbs={mbs}"))
    return cases


def measure_attention(cases: Iterable[tuple], precision: str, device: torch.device,
                      settings: Settings, done: set[tuple], record: Callable[[AttentionSample], None],
                      advance: Callable[[int], None], rate_guess_flops_per_s: float) -> int:
    """Time causal SDPA forward and forward+backward per case (backward = the difference)."""
    dtype, skipped = DTYPES[precision], 0
    for batch, heads, kv_heads, seq, d, source in cases:
        key = (precision, batch, heads, kv_heads, seq, d)
        probe = AttentionSample(dtype=precision, batch=batch, heads=heads, kv_heads=kv_heads,
                                seq_len=seq, head_dim=d, fwd_time_s=1.0, bwd_time_s=1.0, source=source)
        if key in done or sum(attention_flops(probe)) / rate_guess_flops_per_s > 3 * settings.max_call_s:
            skipped += key not in done
            advance(1)
            continue
        q = torch.randn(batch, heads, seq, d, device=device, dtype=dtype, requires_grad=True)
        k, v = (torch.randn(batch, kv_heads, seq, d, device=device, dtype=dtype, requires_grad=True)
                for _ in range(2))
        grad = torch.randn(batch, heads, seq, d, device=device, dtype=dtype)
        gqa = heads != kv_heads

        def fwd() -> None:
            with torch.no_grad():
                F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)

        def fwd_bwd() -> None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
            out.backward(grad)

        t_fwd, t_both = time_rotation([fwd, fwd_bwd], device, warmup=settings.warmup,
                                      repeats=settings.repeats)
        record(AttentionSample(dtype=precision, batch=batch, heads=heads, kv_heads=kv_heads,
                               seq_len=seq, head_dim=d, fwd_time_s=t_fwd,
                               bwd_time_s=max(t_both - t_fwd, 0.05 * t_both), source=source))
        advance(1)
    return skipped


def measure_stream(device: torch.device, settings: Settings, done: set[tuple],
                   record: Callable[[StreamSample], None], advance: Callable[[int], None]) -> None:
    """Bandwidth of a streaming copy (reads and writes each byte once: 2x the buffer moved)."""
    todo = [b for b in settings.stream_bytes if ("copy", 2 * b) not in done]
    advance(len(settings.stream_bytes) - len(todo))
    if not todo:
        return
    bufs = [(torch.empty(b // 4, device=device), torch.empty(b // 4, device=device)) for b in todo]
    calls = [(lambda s=s, d=d: d.copy_(s)) for s, d in bufs]
    times = time_rotation(calls, device, warmup=settings.warmup, repeats=settings.repeats)
    for b, t in zip(todo, times):
        record(StreamSample(op="copy", bytes=2 * b, time_s=t))
    advance(len(todo))


def measure_kernel_overhead_s(device: torch.device, settings: Settings) -> float:
    """Wall time per tiny kernel, back to back (launch and dispatch overhead)."""
    x = torch.zeros(1, device=device)
    return time_loop_s(lambda: x.add_(1.0), device, calls=200, repeats=settings.repeats)
