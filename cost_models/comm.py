"""Alpha-beta collective costs and the placement of parallel groups on link tiers.

Ring algorithms (Thakur, Rabenseifner & Gropp 2005; NCCL's ring): with n ranks and a buffer of
S bytes, all-reduce moves 2(n-1)/n * S per rank in 2(n-1) steps; all-gather and reduce-scatter
move (n-1)/n * S in n-1 steps (S is the full, gathered size). All-to-all moves (n-1)/n * S in one
step: NCCL runs it as grouped point-to-point sends and receives to every peer at once, so it pays
one latency, and a group spanning nodes moves its intra-node share over NVLink while the rest
crosses the NICs (`all_to_all_time_s`). Each step costs the tier's latency alpha; bytes cost
1/beta of the tier's achievable bandwidth.

Placement (DESIGN.md): ranks are laid out tp innermost, then cp, dp, pp. A group of n ranks at
stride `stride` stays inside a node when stride * n <= GPUs per node; otherwise it crosses nodes
and runs at the inter-node tier (each GPU drives its own NIC, so that tier is per-GPU bandwidth).
"""
from __future__ import annotations

from typing import Literal

from cost_models.hardware import Hardware, Link

Collective = Literal["all_reduce", "all_gather", "reduce_scatter", "all_to_all", "p2p"]


def group_link(hw: Hardware, size: int, stride: int) -> Link:
    """The tier a group of `size` ranks at `stride` runs on: intra-node or inter-node."""
    return hw.intra if stride * size <= hw.gpus_per_node else hw.inter


def ring_link(hw: Hardware, size: int, stride: int) -> Link:
    """The tier a ring collective (all-reduce, all-gather, reduce-scatter) of `size` ranks at
    `stride` runs on. Inside a node it is NVLink. Across nodes, NCCL builds one ring per NIC
    (channel) and each node's ring crosses to the next node once per channel, so the k ranks a
    node holds drive k NICs in parallel: the bus bandwidth is k times one GPU's NIC, up to
    NVLink's (NCCL's ring algorithm; nccl-tests PERFORMANCE.md defines bus bandwidth; multi-node
    DGX A100 all-reduce reaches ~190 GB/s bus bandwidth on 8x 25 GB/s HDR NICs). A group with one
    rank per node (stride >= GPUs per node) runs at one NIC's bandwidth, as `group_link` says."""
    link = group_link(hw, size, stride)
    per_node = max(1, hw.gpus_per_node // stride)
    if link is hw.intra or per_node == 1:
        return link
    return Link(min(hw.intra.bandwidth_Bps, per_node * hw.inter.bandwidth_Bps), link.latency_s)


def strides(tp: int, cp: int, dp: int) -> dict[str, int]:
    """Rank stride of each group under tp-innermost placement (tp, cp, dp, pp)."""
    return {"tp": 1, "cp": tp, "dp": tp * cp, "dpcp": tp, "pp": tp * cp * dp}


def collective_time_s(kind: Collective, nbytes: float, size: int, link: Link) -> float:
    """Time of one collective over `size` ranks; `nbytes` is the full (unsharded) buffer."""
    if size <= 1 or nbytes <= 0:
        return 0.0
    n = size
    if kind == "all_reduce":
        return 2 * (n - 1) * link.latency_s + 2 * (n - 1) / n * nbytes / link.bandwidth_Bps
    if kind in ("all_gather", "reduce_scatter"):
        return (n - 1) * link.latency_s + (n - 1) / n * nbytes / link.bandwidth_Bps
    if kind == "all_to_all":
        return link.latency_s + (n - 1) / n * nbytes / link.bandwidth_Bps
    if kind == "p2p":
        return link.latency_s + nbytes / link.bandwidth_Bps
    raise ValueError(f"unknown collective {kind!r}")


def all_to_all_time_s(hw: Hardware, nbytes: float, size: int, stride: int,
                      inter_bytes: float | None = None) -> float:
    """All-to-all of `nbytes` per rank (its whole send buffer, 1/size of it to each rank) over
    `size` ranks at `stride`. Inside a node it is `collective_time_s`. Across nodes each node
    holds g = GPUs per node / stride of the ranks: (g-1)/n of the buffer goes over NVLink while
    (n-g)/n crosses the GPU's NIC, concurrently, so the slower of the two sets the time.
    `inter_bytes` overrides the bytes that cross nodes (a dispatcher that sends a token once per
    destination node sends less than (n-g)/n of the buffer)."""
    if size <= 1 or nbytes <= 0:
        return 0.0
    if stride * size <= hw.gpus_per_node:
        return collective_time_s("all_to_all", nbytes, size, hw.intra)
    local = max(1, hw.gpus_per_node // stride)
    crossing = (size - local) / size * nbytes if inter_bytes is None else inter_bytes
    return hw.inter.latency_s + max((local - 1) / size * nbytes / hw.intra.bandwidth_Bps,
                                    crossing / hw.inter.bandwidth_Bps)


OVERLAP_CONTENTION = 0.3
"""Slowdown of computation while a collective runs beside it, as a fraction of the overlapped
time: NCCL kernels occupy SMs and HBM bandwidth, so "hidden" communication is not free.
Rashidi et al. (ISCA 2021, "Enabling Compute-Communication Overlap in Distributed Deep Learning
Training Platforms") measure compute kernels slowed by up to 1.4x under concurrent collectives;
Jangda et al. (ASPLOS 2022, CoCoNet) report 10-30% for overlapped GEMM + all-reduce."""


def exposed_s(comm_s: float, window_s: float) -> float:
    """Wall time a collective adds when overlapped with `window_s` of independent compute:
    the part that sticks out, plus contention on the overlapped part:
        max(C - W, 0) + kappa * min(C, W)  =  kappa * C + (1 - kappa) * max(C - W, 0)."""
    return OVERLAP_CONTENTION * comm_s + (1 - OVERLAP_CONTENTION) * max(0.0, comm_s - window_s)
