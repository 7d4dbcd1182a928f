"""What a rank holds and how long its steps take: the measured side of `fmplan validate`.

Model states are measured by walking the real tensors after a step (unique storages, so DDP's
gradient buckets and tied weights count once; DTensor shards count their local part). The peak
comes from `torch.distributed._tools.mem_tracker.MemTracker` (every tensor created or held during
the tracked steps, by category) and, on CUDA, also from the caching allocator's
`max_memory_allocated` over the timed steps.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.distributed._tools.mem_tracker import MemTracker
from torch.distributed.tensor import DTensor

STATE_KEYS = ("weights", "grads", "optimizer")
TRACKER_KEYS = {"Parameter": "params", "Buffer": "buffers", "Gradient": "grads",
                "Activation": "activations", "Temp": "temporaries", "Optstate": "optimizer",
                "Other": "other"}
"""MemTracker's categories (its `_MemRefType` values) and the names used in our reports."""


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if isinstance(t, DTensor) else t


def storage_bytes(tensors: Iterable[torch.Tensor | None]) -> dict[str, int]:
    """Bytes of the unique storages behind `tensors`, by device type ("cpu", "cuda")."""
    seen: set[tuple[str, int]] = set()
    total: dict[str, int] = {}
    for t in tensors:
        if t is None:
            continue
        local = _local(t)
        storage = local.untyped_storage()
        key = (local.device.type, storage.data_ptr())
        if key in seen or storage.nbytes() == 0:
            continue
        seen.add(key)
        total[local.device.type] = total.get(local.device.type, 0) + storage.nbytes()
    return total


def state_bytes(modules: list[nn.Module], optimizer_tensors: list[torch.Tensor]) -> dict[str, dict[str, int]]:
    """Weights, grads and optimizer states this rank holds, by device type."""
    params = [p for m in modules for p in m.parameters()]
    return {
        "weights": storage_bytes(params),
        "grads": storage_bytes(p.grad for p in params),
        "optimizer": storage_bytes(optimizer_tensors),
    }


class RepeatedCallMemTracker(MemTracker):
    """MemTracker that accepts a root module called several times per step (gradient
    accumulation, pipeline micro-batches). Stock MemTracker raises NotImplementedError on a
    root's second forward ("multiple iterative calls"); we need only the global peak, so the
    root's per-module statistics are dropped and restarted instead. Parameters and grad hooks
    are tracked once per storage either way, so nothing is counted twice."""

    def _pre_fw_hook(self, module: nn.Module, inputs) -> None:
        if module in self.memory_tracking and not self._mod_tracker.is_bw:
            parents = set(self._mod_tracker.parents) - {self._mod_tracker.get_known_fqn(module)}
            if parents == {"Global"}:
                del self.memory_tracking[module]
        super()._pre_fw_hook(module, inputs)


class StepMeter:
    """Runs training steps: the first ones under MemTracker (the warm-up), the rest timed."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.tracker_peak: dict[str, int] = {}
        self.step_times_s: list[float] = []
        self.cuda_peak_bytes: int | None = None

    def tracked(self, step: Callable[[], float], count: int, externals: list) -> list[float]:
        """Run `count` steps under MemTracker; keep the peak snapshot's categories (bytes)."""
        tracker = RepeatedCallMemTracker()
        tracker.track_external(*externals)
        with tracker:
            losses = [step() for _ in range(count)]
        snapshot = tracker.get_tracker_snapshot("peak")
        merged: dict[str, int] = {}
        for dev_snap in snapshot.values():
            for key, value in dev_snap.items():
                name = TRACKER_KEYS.get(key, "total" if key == "Total" else key)
                merged[name] = merged.get(name, 0) + int(value)
        self.tracker_peak = merged
        return losses

    def timed(self, step: Callable[[], float], count: int) -> list[float]:
        """Run `count` steps, each timed with the device synchronised at both ends."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        losses = []
        for _ in range(count):
            self._sync()
            start = time.perf_counter()
            losses.append(step())
            self._sync()
            self.step_times_s.append(time.perf_counter() - start)
        if self.device.type == "cuda":
            self.cuda_peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
        return losses

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @property
    def median_step_s(self) -> float | None:
        """Median of the timed steps."""
        return statistics.median(self.step_times_s) if self.step_times_s else None
