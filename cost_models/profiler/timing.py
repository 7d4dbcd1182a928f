"""Measurement discipline: warm-up, synchronise, repeat, take the median; cases timed in rotation.

Timing one shape many times in a row lets its operands sit in cache (L2 on a GPU, L1-L3 on a
CPU) and flatters it; `time_rotation` runs a whole batch of cases round-robin so each repeat of a
case follows the other cases (nanoGPT/torchtitan-style benchmarking habits).
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels (a no-op on CPU, where ops run synchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_rotation(cases: Sequence[Callable[[], object]], device: torch.device, *,
                  warmup: int, repeats: int) -> list[float]:
    """Median seconds of one call of each case; cases run round-robin `repeats` times."""
    for fn in cases:
        for _ in range(warmup):
            fn()
    synchronize(device)
    samples: list[list[float]] = [[] for _ in cases]
    for _ in range(repeats):
        for i, fn in enumerate(cases):
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            samples[i].append(time.perf_counter() - start)
    return [statistics.median(s) for s in samples]


def time_loop_s(fn: Callable[[], object], device: torch.device, *, calls: int, repeats: int) -> float:
    """Median wall time per call of `calls` back-to-back calls (launch-overhead bound work)."""
    fn()
    per_call = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        synchronize(device)
        per_call.append((time.perf_counter() - start) / calls)
    return statistics.median(per_call)
