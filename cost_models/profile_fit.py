"""Fitted values of a profile (derived from its raw samples) and how they override `Hardware`.

What replaces what (everything else keeps the preset's value):
* GEMM: per measured dtype, a curve of achieved main-loop FLOP/s vs GEMM size (median per
  half-decade of GFLOP; the output's store and the launch are taken out, as the model adds them), stored in `Hardware.gemm_curves` as fractions of that dtype's datasheet peak, so
  MFU stays relative to the datasheet while times reproduce the measured rates. A dtype the preset
  lacks gets the best measured rate as its peak.
* Attention: median achieved FLOP/s of causal SDPA forward and backward, in the cost model's FLOP
  convention (`attention_core_flops` with the causal half skipped; backward = 2.5x forward), as
  fractions of the bf16 peak.
* HBM bandwidth (streaming copies), per-kernel overhead (tiny kernels), pinned host<->device copy
  bandwidth, CPU Adam throughput (node-wide, shared by the node's GPUs).
* Links: per tier, one alpha-beta `Link` fitted to every collective of that tier *in the cost
  model's own ring terms* (`cost_models.comm.collective_time_s`), so the model reproduces the
  measured collectives. A profile from one node measures only the intra-node tier.
"""
from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from cost_models.comm import collective_time_s
from cost_models.hardware import Hardware, Link, gemm_element_bytes
from cost_models.profile_format import canonical


@dataclass(frozen=True, kw_only=True)
class CommFit:
    """Alpha-beta fit t = alpha + beta * bytes of one collective and group size."""

    tier: str
    alpha_s: float
    beta_s_per_byte: float
    latency_us: float
    """alpha divided by the ring steps the cost model charges (its per-step latency)."""
    bandwidth_GBps: float
    """The link bandwidth that reproduces beta under the cost model's ring volume."""
    samples: int


@dataclass(frozen=True, kw_only=True)
class FittedProfile:
    """Everything `apply_profile` needs, derived from a profile's samples."""

    gemm_curves_flops_per_s: dict[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    """Per dtype: (GEMM GFLOP, achieved FLOP/s) points, ascending."""
    gemm_best_flops_per_s: dict[str, float] = field(default_factory=dict)
    attention_flops_per_s: tuple[float, float] | None = None
    """Median achieved (forward, backward) FLOP/s of causal attention."""
    stream_bandwidth_GBps: float | None = None
    kernel_overhead_s: float | None = None
    host_copy_GBps: dict[str, float] = field(default_factory=dict)
    """`pinned` / `pageable`: harmonic mean of h2d and d2h at the largest size."""
    host_optimizer_params_per_s: float | None = None
    comm: dict[str, dict[int, CommFit]] = field(default_factory=dict)
    links: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per tier: latency_us, bandwidth_GBps, samples."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (string keys, lists)."""
        doc = asdict(self)
        doc["comm"] = {k: {str(n): asdict(f) for n, f in sorted(v.items())}
                       for k, v in sorted(self.comm.items())}
        return doc


def fit_profile(profile: Any) -> FittedProfile:
    """Fit every section that has samples (a `cost_models.profile_format.Profile`); the result
    does not depend on the order samples were measured in."""
    s = canonical(profile).samples
    stream_GBps = _largest_rate(s["stream"])
    overhead_s = statistics.median(profile.kernel_overhead_s) if profile.kernel_overhead_s else 0.0
    return FittedProfile(
        gemm_curves_flops_per_s=_gemm_curves(s["gemm"], stream_GBps, overhead_s),
        gemm_best_flops_per_s={d: max(2.0 * g.m * g.k * g.n / g.time_s for g in s["gemm"]
                                      if g.dtype == d) for d in {g.dtype for g in s["gemm"]}},
        attention_flops_per_s=_attention_rates(s["attention"]),
        stream_bandwidth_GBps=stream_GBps,
        kernel_overhead_s=statistics.median(profile.kernel_overhead_s) if profile.kernel_overhead_s else None,
        host_copy_GBps=_copy_rates(s["host_copy"]),
        host_optimizer_params_per_s=(max(o.params / o.time_s for o in s["host_optimizer"])
                                     if s["host_optimizer"] else None),
        comm=_comm_fits(s["comm"]),
        links=_link_fits(s["comm"]),
    )


def attention_flops(sample: Any) -> tuple[float, float]:
    """Forward and backward FLOPs of a causal attention sample in the cost model's convention:
    4 b s^2 (a d) / 2 forward (Korthikanti et al. 2022 App. A, causal half skipped), 2.5x that
    backward (FlashAttention-2 recomputes S and P: 5 matmuls vs 2; Dao 2023 §3.2)."""
    fwd = 4.0 * sample.batch * sample.seq_len ** 2 * sample.heads * sample.head_dim / 2
    return fwd, 2.5 * fwd


def _gemm_curves(samples: tuple, stream_GBps: float | None,
                 overhead_s: float) -> dict[str, tuple[tuple[float, float], ...]]:
    """Main-loop FLOP/s per size bin: each sample's time less the launch and the store of its
    output at the measured stream bandwidth (`Hardware.gemm_time_s` adds both back), never less
    than half the measured time (a noisy stream rate must not make a GEMM look free)."""
    bins: dict[str, dict[int, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for g in samples:
        gflop = 2.0 * g.m * g.k * g.n / 1e9
        store_s = gemm_element_bytes(g.dtype)[1] * g.m * g.n / (stream_GBps * 1e9) if stream_GBps else 0.0
        main_loop_s = max(g.time_s - store_s - overhead_s, g.time_s / 2)
        bins[g.dtype][math.floor(2 * math.log10(gflop))].append((gflop, gflop * 1e9 / main_loop_s))
    return {dtype: tuple((statistics.median(x for x, _ in pts), statistics.median(r for _, r in pts))
                         for _, pts in sorted(by_bin.items()))
            for dtype, by_bin in sorted(bins.items())}


def _attention_rates(samples: tuple) -> tuple[float, float] | None:
    dtypes = [d for d in ("bf16", "fp16", "fp32") if any(a.dtype == d for a in samples)]
    if not dtypes:
        return None
    chosen = [a for a in samples if a.dtype == dtypes[0]]
    fwd = statistics.median(attention_flops(a)[0] / a.fwd_time_s for a in chosen)
    bwd = statistics.median(attention_flops(a)[1] / a.bwd_time_s for a in chosen)
    return fwd, bwd


def _largest_rate(samples: tuple) -> float | None:
    if not samples:
        return None
    top = max(s.bytes for s in samples)
    return statistics.median(s.bytes / s.time_s for s in samples if s.bytes == top) / 1e9


def _copy_rates(samples: tuple) -> dict[str, float]:
    rates = {}
    for pinned, name in ((True, "pinned"), (False, "pageable")):
        chosen = [c for c in samples if c.pinned == pinned]
        if not chosen:
            continue
        top = max(c.bytes for c in chosen)
        times = [statistics.median(c.time_s for c in chosen if c.direction == d and c.bytes == top)
                 for d in ("h2d", "d2h") if any(c.direction == d and c.bytes == top for c in chosen)]
        rates[name] = top * len(times) / sum(times) / 1e9
    return rates


def _weighted_fit(rows: list[tuple[float, float, float]]) -> tuple[float, float] | None:
    """Least squares of t ~ x*alpha + y*beta minimising relative error, alpha >= 0, beta > 0.

    Rows are (x, y, t); dividing by t weights small and large messages alike."""
    sxx = sum((x / t) ** 2 for x, y, t in rows)
    syy = sum((y / t) ** 2 for x, y, t in rows)
    sxy = sum(x * y / t ** 2 for x, y, t in rows)
    sx = sum(x / t for x, y, t in rows)
    sy = sum(y / t for x, y, t in rows)
    det = sxx * syy - sxy * sxy
    if len(rows) >= 2 and det > 1e-12 * sxx * syy:
        alpha = (sx * syy - sy * sxy) / det
        beta = (sxx * sy - sxy * sx) / det
        if alpha >= 0 and beta > 0:
            return alpha, beta
    if syy > 0 and sy > 0:
        return 0.0, sy / syy
    return None


def _ring_terms(collective: str, nbytes: float, group: int) -> tuple[float, float]:
    """(latency steps, bytes per unit bandwidth) the cost model charges for one collective."""
    steps = collective_time_s(collective, nbytes, group, Link(math.inf, 1.0))
    volume = collective_time_s(collective, nbytes, group, Link(1.0, 0.0))
    return steps, volume


def _comm_fits(samples: tuple) -> dict[str, dict[int, CommFit]]:
    groups: dict[tuple[str, int, str], list] = defaultdict(list)
    for c in samples:
        groups[(c.collective, c.group_size, c.tier)].append(c)
    fits: dict[str, dict[int, CommFit]] = defaultdict(dict)
    for (kind, n, tier), items in sorted(groups.items()):
        fit = _weighted_fit([(1.0, float(c.bytes), c.time_s) for c in items])
        if fit is None:
            continue
        alpha, beta = fit
        steps, volume = _ring_terms(kind, 1.0, n)
        fits[kind][n] = CommFit(tier=tier, alpha_s=alpha, beta_s_per_byte=beta,
                                latency_us=1e6 * alpha / steps,
                                bandwidth_GBps=volume / beta / 1e9, samples=len(items))
    return dict(fits)


def _link_fits(samples: tuple) -> dict[str, dict[str, float]]:
    links = {}
    for tier in ("intra", "inter"):
        rows = []
        for c in samples:
            if c.tier == tier:
                steps, volume = _ring_terms(c.collective, float(c.bytes), c.group_size)
                rows.append((steps, volume, c.time_s))
        fit = _weighted_fit(rows) if rows else None
        if fit is not None:
            links[tier] = {"latency_us": 1e6 * fit[0], "bandwidth_GBps": 1.0 / fit[1] / 1e9,
                           "samples": float(len(rows))}
    return links


def device_matches(device: Any, preset_name: str) -> bool:
    """Whether a profile's device is the cluster's: kinds agree and, for accelerators, the
    preset's model token (H100, A100, MI300X, ...) appears in the measured device name."""
    preset = preset_name.upper()
    if device.kind == "cpu" or preset.startswith("CPU"):
        return device.kind == "cpu" and preset.startswith("CPU")
    token = re.match(r"[A-Z]*\d+[A-Z]*", preset)
    return bool(token) and token.group(0) in device.name.upper()


def hardware_overrides(hw: Hardware, fitted: FittedProfile, gpus_per_node: int) -> dict[str, Any]:
    """Keyword arguments for `dataclasses.replace(hw, ...)`: the measured rates (module doc)."""
    out: dict[str, Any] = {}
    peaks = dict(hw.peak_flops)
    for dtype, best in fitted.gemm_best_flops_per_s.items():
        peaks.setdefault(dtype, best)
    curves = dict(hw.gemm_curves)
    for dtype, points in fitted.gemm_curves_flops_per_s.items():
        curves[dtype] = tuple((gflop, rate / peaks[dtype]) for gflop, rate in points)
    if fitted.gemm_curves_flops_per_s:
        out.update(peak_flops=peaks, gemm_curves=curves)
    if fitted.attention_flops_per_s:
        bf16 = peaks.get("bf16") or max(peaks.values())
        out["attention_efficiency"] = tuple(r / bf16 for r in fitted.attention_flops_per_s)
    if fitted.stream_bandwidth_GBps:
        out["hbm_Bps"] = fitted.stream_bandwidth_GBps * 1e9
    if fitted.kernel_overhead_s:
        out["kernel_overhead_s"] = fitted.kernel_overhead_s
    if "pinned" in fitted.host_copy_GBps:
        out["host_device_Bps"] = fitted.host_copy_GBps["pinned"] * 1e9
    if fitted.host_optimizer_params_per_s:
        out["host_adam_params_per_s_per_gpu"] = fitted.host_optimizer_params_per_s / gpus_per_node
    for tier, link in fitted.links.items():
        out[tier] = Link(link["bandwidth_GBps"] * 1e9, link["latency_us"] * 1e-6)
    return out
