"""Host side: host<->device copy bandwidth (pinned and pageable) and the CPU optimizer step that
optimizer offload runs (ZeRO-Offload's CPU Adam; here torch's own AdamW on fp32 CPU tensors)."""
from __future__ import annotations

from collections.abc import Callable

import torch

from cost_models.profile_format import CopySample, OptimizerSample
from cost_models.profiler.settings import Settings
from cost_models.profiler.timing import time_rotation

CPU_COPY_SKIP = ("the device is the host CPU: there is no host-device link, offloading is a "
                 "memcpy in the same memory (see the `stream` samples); the preset's value is kept")


def measure_copies(device: torch.device, settings: Settings, done: set[tuple],
                   record: Callable[[CopySample], None], advance: Callable[[int], None]) -> None:
    """Pinned and pageable copies in both directions (CUDA only; callers skip on CPU)."""
    cases = [(direction, pinned, b) for b in settings.copy_bytes for pinned in (True, False)
             for direction in ("h2d", "d2h")]
    todo = [c for c in cases if c not in done]
    advance(len(cases) - len(todo))
    calls = []
    for direction, pinned, nbytes in todo:
        host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=pinned)
        dev = torch.empty(nbytes, dtype=torch.uint8, device=device)
        src, dst = (host, dev) if direction == "h2d" else (dev, host)
        calls.append(lambda s=src, d=dst: d.copy_(s, non_blocking=False))
    if not calls:
        return
    times = time_rotation(calls, device, warmup=settings.warmup, repeats=settings.repeats)
    for (direction, pinned, nbytes), t in zip(todo, times):
        record(CopySample(direction=direction, pinned=pinned, bytes=nbytes, time_s=t))
    advance(len(todo))


def measure_cpu_adam(settings: Settings, done: set[tuple], record: Callable[[OptimizerSample], None],
                     advance: Callable[[int], None]) -> None:
    """Seconds per AdamW step over fp32 CPU parameters with all intra-op threads (node-wide).

    torch's foreach AdamW, not DeepSpeed's SIMD CPU-Adam (Ren et al. 2021), which is faster; the
    offload estimate is then conservative."""
    threads = torch.get_num_threads()
    todo = [p for p in settings.adam_params if ("adamw", p, threads) not in done]
    advance(len(settings.adam_params) - len(todo))
    for params in todo:
        weight = torch.nn.Parameter(torch.randn(params))
        weight.grad = torch.randn(params)
        opt = torch.optim.AdamW([weight], lr=1e-4, foreach=True)
        (t,) = time_rotation([opt.step], torch.device("cpu"), warmup=settings.warmup,
                             repeats=settings.repeats)
        record(OptimizerSample(optimizer="adamw", params=params, threads=threads, time_s=t))
        advance(1)
