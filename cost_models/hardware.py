"""Achievable rates of one cluster: compute, memory bandwidth and links.

Built from a device/cluster preset (datasheet numbers times cited efficiencies) or, where a
profile file has measurements, from those (`cost_models.profile_format.ProfileDB`). Everything the
formulas need about the hardware goes through `Hardware`, so a profile overrides the preset in one
place.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from planner.specs import ClusterSpec
from planner.stacks import DEFAULT_STACK, StackSpec, load_stack

ATTENTION_HALF_SEQ = 256.0
"""Key length at which a tiled causal attention kernel runs at half its long-sequence rate:
rate(s) = rate_max * s / (s + 256). With 128-wide tiles, the diagonal tiles of a causal mask are
half empty and each tile row pays a prologue/epilogue, about two tiles of 128 keys in all; the
FlashAttention-2/3 benchmarks (Dao 2023 Fig. 4-6; Shah et al. 2024 Fig. 5-6) show causal kernels
at 512 tokens near two thirds of their 16k rate."""


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
    """Fraction of peak for the stack's fused attention kernel at long sequences (fwd, bwd)."""
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
    stack: str = DEFAULT_STACK
    """The software stack these rates are for (`planner.stacks`)."""
    fused_cross_entropy: bool = True
    """The stack fuses the loss (vocab-parallel cross-entropy) instead of eager fp32 ops."""

    def scaled(self, constants: dict[str, float]) -> "Hardware":
        """These rates scaled by calibration constants (`planner.stacks.CALIBRATION_CONSTANTS`;
        missing names stay 1). Efficiencies are clamped at 1 (the datasheet peak)."""
        g = constants.get("gemm_scale", 1.0)
        a = constants.get("attention_scale", 1.0)
        fwd, bwd = self.attention_efficiency
        return replace(
            self, gemm_curve=tuple((x, min(1.0, y * g)) for x, y in self.gemm_curve),
            gemm_curves={k: tuple((x, min(1.0, y * g)) for x, y in v) for k, v in self.gemm_curves.items()},
            attention_efficiency=(min(1.0, fwd * a), min(1.0, bwd * a)),
            hbm_Bps=self.hbm_Bps * constants.get("hbm_scale", 1.0),
            inter=Link(self.inter.bandwidth_Bps * constants.get("inter_node_bw_scale", 1.0),
                       self.inter.latency_s))

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
        """Time of `count` GEMMs (M x K)(K x N): the main loop, then the output's store, plus launch.

        The main loop runs at peak * efficiency(size) or at the rate its operand reads allow,
        whichever is slower (Williams et al. 2009, roofline). Each output tile is stored after its
        K loop ends (the epilogue: CUTLASS's sm90 "cooperative" warp-specialized kernels and the
        pre-Hopper multistage kernels run it after the tile's MMAs, cutlass/gemm/kernel/
        sm90_gemm_tma_warpspecialized_cooperative.hpp), so writing C adds M*N*out_bytes at HBM
        bandwidth: the cost of short K loops that makes small-hidden GEMMs slower per FLOP
        ("larger GEMMs have higher arithmetic intensity", Megatron-LM README, weak-scaling table).
        fp8 GEMMs read 1-byte operands and write 2-byte outputs; fp32 GEMMs (no tensor cores:
        PyTorch leaves TF32 off for matmuls) read and write 4-byte elements.
        """
        flops = 2.0 * m * k * n
        in_bytes, out_bytes = gemm_element_bytes(precision)
        main_loop = max(flops / (self.peak(precision) * self.gemm_efficiency(flops, precision)),
                        in_bytes * (m * k + k * n) / self.hbm_Bps)
        return count * (main_loop + out_bytes * m * n / self.hbm_Bps + self.kernel_overhead_s)

    def gemm_backward_time_s(self, m: int, k: int, n: int, precision: str, count: int = 1) -> float:
        """Backward of `count` GEMMs (M x K)(K x N), each by its own shape: the data gradient
        (M x N)(N x K) and the weight gradient (K x M)(M x N), whose K loop runs over the M tokens."""
        return self.gemm_time_s(m, n, k, precision, count) + self.gemm_time_s(k, m, n, precision, count)

    def attention_time_s(self, flops: float, backward: bool, kv_len: float) -> float:
        """Fused attention over `kv_len` keys at the kernel's achievable fraction of the 16-bit
        peak, slower for short sequences (`ATTENTION_HALF_SEQ`), plus one launch."""
        eff = self.attention_efficiency[1 if backward else 0] * kv_len / (kv_len + ATTENTION_HALF_SEQ)
        return flops / (self.peak("bf16") * eff) + self.kernel_overhead_s

    def memory_time_s(self, nbytes: float, kernels: int = 1) -> float:
        """Memory-bound kernels moving `nbytes` in total."""
        return nbytes / self.hbm_Bps + kernels * self.kernel_overhead_s


def gemm_element_bytes(precision: str) -> tuple[int, int]:
    """(operand, output) bytes per element of a GEMM at `precision`."""
    return {"fp8": (1, 2), "fp32": (4, 4)}.get(precision, (2, 2))


def attention_efficiency(cluster: ClusterSpec, stack: StackSpec) -> tuple[float, float]:
    """The stack's attention kernel's (fwd, bwd) fraction of peak on the cluster's device."""
    dev = cluster.device
    return dev.attention_kernels.get(stack.attention_kernel, dev.attention_efficiency)


def die(device_name: str) -> str:
    """The GPU die of a device preset (`A100-40GB` -> `A100`): what calibrations are keyed by."""
    return device_name.split("-")[0]


def from_cluster(cluster: ClusterSpec, stack: StackSpec | None = None) -> Hardware:
    """Rates from the presets for `stack` (default megatron-core): datasheet numbers times the
    cited efficiencies, with the stack's kernels and its calibration for this GPU die."""
    dev = cluster.device
    stack = stack or load_stack(DEFAULT_STACK)
    return _preset(cluster, stack).scaled(stack.calibration.get(die(dev.name), {}))


def _preset(cluster: ClusterSpec, stack: StackSpec) -> Hardware:
    dev = cluster.device
    gib = 1024.0 ** 3
    eff = cluster.collective_efficiency
    return Hardware(
        peak_flops={k: v * 1e12 for k, v in dev.peak_tflops.items()},
        gemm_curve=dev.gemm_efficiency,
        attention_efficiency=attention_efficiency(cluster, stack),
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
        stack=stack.name, fused_cross_entropy=stack.fused_cross_entropy,
    )
