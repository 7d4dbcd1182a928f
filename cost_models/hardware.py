"""Achievable rates of one cluster: compute, memory bandwidth and links.

Built from a device/cluster preset (datasheet numbers times cited efficiencies) or, where a
profile file has measurements, from those (`cost_models.profile_format.ProfileDB`). Everything the
formulas need about the hardware goes through `Hardware`, so a profile overrides the preset in one
place.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from planner.specs import ClusterSpec


@dataclass(frozen=True)
class Link:
    """An alpha-beta link tier: achievable bandwidth (bytes/s) and per-step latency (s)."""

    bandwidth_Bps: float
    latency_s: float


@dataclass(frozen=True, kw_only=True)
class Hardware:
    """Achievable rates the cost model uses (all SI units)."""

    peak_flops: dict[str, float]
    """Dense peak FLOP/s per dtype."""
    gemm_curve: tuple[tuple[float, float], ...]
    """(GEMM GFLOP, fraction of peak) points, ascending."""
    attention_efficiency: tuple[float, float]
    """Fraction of peak for fused attention (forward, backward)."""
    hbm_Bps: float
    """Achievable HBM bandwidth for streaming kernels, bytes/s."""
    kernel_overhead_s: float
    """Fixed cost per kernel, seconds."""
    capacity_bytes: float
    """Memory a framework can allocate per GPU (HBM minus the reserved part)."""
    hbm_bytes: float
    """HBM capacity per GPU."""
    intra: Link
    """Inside a node."""
    inter: Link
    """Between nodes."""
    host_device_Bps: float
    """Host<->device copies per GPU."""
    host_adam_params_per_s_per_gpu: float
    """CPU-Adam throughput available to one GPU's shard."""
    gpus_per_node: int
    """GPUs sharing a node (placement of groups)."""
    host_mem_bytes_per_gpu: float
    """Host memory per GPU."""
    gemm_curves: dict[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    """Per-dtype (GFLOP, fraction of that dtype's peak) curves measured by a profile; a dtype
    without one uses `gemm_curve`."""
    source: str = "preset"
    """`preset` or the profile file that supplied measurements."""

    def peak(self, precision: str) -> float:
        """Dense peak FLOP/s (fp8 falls back to bf16 where the device has no fp8 entry)."""
        return self.peak_flops.get(precision) or self.peak_flops["bf16"]

    def gemm_efficiency(self, flops: float, precision: str | None = None) -> float:
        """Fraction of peak for a GEMM of `flops`, log-linear between the curve's points."""
        gflop = flops / 1e9
        points = self.gemm_curves.get(precision, self.gemm_curve)
        if gflop <= points[0][0]:
            return points[0][1]
        if gflop >= points[-1][0]:
            return points[-1][1]
        for (x0, y0), (x1, y1) in zip(points, points[1:]):
            if x0 <= gflop <= x1:
                w = (math.log(gflop) - math.log(x0)) / (math.log(x1) - math.log(x0))
                return y0 + w * (y1 - y0)
        return points[-1][1]

    def gemm_time_s(self, m: int, k: int, n: int, precision: str, count: int = 1) -> float:
        """Roofline time of `count` GEMMs (M x K)(K x N): max(compute, memory) + launch overhead.

        Compute runs at peak * efficiency(size); memory moves A, B and C once (Williams et al. 2009,
        roofline). fp8 GEMMs read 1-byte operands and write 2-byte outputs; fp32 GEMMs (no
        tensor cores: PyTorch leaves TF32 off for matmuls) read and write 4-byte elements.
        """
        flops = 2.0 * m * k * n
        in_bytes, out_bytes = {"fp8": (1, 2), "fp32": (4, 4)}.get(precision, (2, 2))
        traffic = in_bytes * (m * k + k * n) + out_bytes * m * n
        compute = flops / (self.peak(precision) * self.gemm_efficiency(flops, precision))
        return count * (max(compute, traffic / self.hbm_Bps) + self.kernel_overhead_s)

    def attention_time_s(self, flops: float, backward: bool) -> float:
        """Fused attention at its achievable fraction of the 16-bit peak (plus one launch)."""
        eff = self.attention_efficiency[1 if backward else 0]
        return flops / (self.peak("bf16") * eff) + self.kernel_overhead_s

    def memory_time_s(self, nbytes: float, kernels: int = 1) -> float:
        """Memory-bound kernels moving `nbytes` in total."""
        return nbytes / self.hbm_Bps + kernels * self.kernel_overhead_s


def from_cluster(cluster: ClusterSpec) -> Hardware:
    """Rates from the presets: datasheet numbers times the cited efficiencies."""
    dev = cluster.device
    gib = 1024.0 ** 3
    eff = cluster.collective_efficiency
    return Hardware(
        peak_flops={k: v * 1e12 for k, v in dev.peak_tflops.items()},
        gemm_curve=dev.gemm_efficiency,
        attention_efficiency=dev.attention_efficiency,
        hbm_Bps=dev.hbm_bw_GBps * 1e9 * dev.hbm_efficiency,
        kernel_overhead_s=dev.kernel_overhead_us * 1e-6,
        capacity_bytes=(dev.hbm_gib - dev.reserved_gib) * gib,
        hbm_bytes=dev.hbm_gib * gib,
        intra=Link(cluster.intra_node_bw_GBps * 1e9 * eff, cluster.intra_node_latency_us * 1e-6),
        inter=Link(cluster.inter_node_bw_GBps * 1e9 * eff, cluster.inter_node_latency_us * 1e-6),
        host_device_Bps=cluster.host_device_bw_GBps * 1e9,
        host_adam_params_per_s_per_gpu=cluster.host_adam_params_per_s / cluster.gpus_per_node,
        gpus_per_node=cluster.gpus_per_node,
        host_mem_bytes_per_gpu=cluster.host_mem_gib * gib / cluster.gpus_per_node,
    )
