"""The result of `estimate()`: step time, memory and MFU with their breakdowns."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

GIB = 1024.0 ** 3
TIME_KEYS = ("compute", "recompute", "tp_comm", "cp_comm", "ep_comm", "dp_comm_exposed",
             "pp_bubble", "pp_p2p", "optimizer")
MEMORY_KEYS = ("weights", "grads", "optimizer", "activations", "other")


@dataclass(frozen=True)
class StageCost:
    """One pipeline stage: its blocks, per-micro-batch time and peak memory (bytes)."""

    stage: int
    layers: int
    full_recompute: int
    selective_recompute: int
    time_per_microbatch_s: float
    memory_bytes: dict[str, float]
    host_bytes: float

    @property
    def peak_bytes(self) -> float:
        """Sum of the memory parts."""
        return sum(self.memory_bytes.values())


@dataclass(frozen=True)
class CostBreakdown:
    """Everything `estimate()` predicts for one strategy."""

    step_time_s: float
    time_s: dict[str, float]
    """Step time split into TIME_KEYS (they add up to step_time_s)."""
    tokens_per_s: float
    model_flops_per_step: float
    hardware_flops_per_step: float
    gpus: int
    peak_flops_per_gpu: float
    stages: list[StageCost]
    critical_stage: int
    peak_stage: int
    capacity_bytes: float
    host_capacity_bytes_per_gpu: float
    micro_batches: int
    notes: list[str] = field(default_factory=list)

    @property
    def mfu(self) -> float:
        """Model FLOPs utilisation: model FLOPs / (step time * GPUs * dense bf16 peak)."""
        return self.model_flops_per_step / (self.step_time_s * self.gpus * self.peak_flops_per_gpu)

    @property
    def model_tflops_per_gpu(self) -> float:
        """Achieved model TFLOP/s per GPU (no recompute counted)."""
        return self.model_flops_per_step / self.step_time_s / self.gpus / 1e12

    @property
    def hardware_tflops_per_gpu(self) -> float:
        """Achieved TFLOP/s per GPU counting recompute."""
        return self.hardware_flops_per_step / self.step_time_s / self.gpus / 1e12

    @property
    def peak_memory_bytes(self) -> float:
        """The largest per-GPU memory over stages."""
        return self.stages[self.peak_stage].peak_bytes

    @property
    def host_bytes_per_gpu(self) -> float:
        """Host memory one GPU's offloaded states need."""
        return max(s.host_bytes for s in self.stages)

    @property
    def fits(self) -> bool:
        """Whether GPU memory (and host memory when offloading) suffices."""
        return (self.peak_memory_bytes <= self.capacity_bytes
                and self.host_bytes_per_gpu <= self.host_capacity_bytes_per_gpu)

    def overflow(self) -> str | None:
        """Which resource overflows and by how much, or None."""
        if self.peak_memory_bytes > self.capacity_bytes:
            return (f"GPU memory: needs {self.peak_memory_bytes / GIB:.1f} GiB/GPU on stage "
                    f"{self.peak_stage}; {self.capacity_bytes / GIB:.1f} GiB available")
        if self.host_bytes_per_gpu > self.host_capacity_bytes_per_gpu:
            return (f"host memory: needs {self.host_bytes_per_gpu / GIB:.1f} GiB per GPU for "
                    f"offloaded states; {self.host_capacity_bytes_per_gpu / GIB:.1f} GiB available")
        return None

    def to_dict(self) -> dict:
        """A JSON-ready dict with the documented keys (times in s, memory in GiB)."""
        peak = self.stages[self.peak_stage]
        return {
            "step_time_s": self.step_time_s,
            "tokens_per_s": self.tokens_per_s,
            "mfu": self.mfu,
            "model_tflops_per_gpu": self.model_tflops_per_gpu,
            "hardware_tflops_per_gpu": self.hardware_tflops_per_gpu,
            "peak_memory_gib": self.peak_memory_bytes / GIB,
            "capacity_gib": self.capacity_bytes / GIB,
            "fits": self.fits,
            "overflow": self.overflow(),
            "memory_gib": {k: peak.memory_bytes[k] / GIB for k in MEMORY_KEYS},
            "host_memory_gib_per_gpu": self.host_bytes_per_gpu / GIB,
            "time_s": dict(self.time_s),
            "micro_batches": self.micro_batches,
            "gpus": self.gpus,
            "critical_stage": self.critical_stage,
            "peak_stage": self.peak_stage,
            "stages": [
                {**{k: v for k, v in asdict(s).items() if k != "memory_bytes"},
                 "memory_gib": {k: v / GIB for k, v in s.memory_bytes.items()},
                 "peak_memory_gib": s.peak_bytes / GIB}
                for s in self.stages],
            "notes": list(self.notes),
        }
