"""Why nothing fits: the binding resource, the nearest miss and what would make it fit.

The nearest miss is exact: the smallest peak GPU memory over the whole space (every candidate,
split and recompute), found best-first by memory lower bound with the ILP minimising memory.
Suggestions are checked the same way, not guessed: another target's limits (e.g. ZeRO-3 where the
engine lacks it) and more nodes of the same kind.
"""
from __future__ import annotations

import heapq
from dataclasses import replace

from cost_models.breakdown import GIB
from cost_models.hardware import Hardware
from planner.bounds import memory_lower_bound_bytes
from planner.ilp import solve_split
from planner.cache import Cache
from planner.candidates import group_memory_bound, groups, members
from planner.search import SearchOptions, SearchResult
from planner.specs import ClusterSpec, ModelSpec
from planner.strategy import Strategy
from planner.targets import ANY

MAX_EXTRA_NODE_TRIES = 8


def min_peak_memory(model: ModelSpec, cluster: ClusterSpec, hw: Hardware, options: SearchOptions,
                    stop_below: float = 0.0) -> tuple[float, Strategy | None]:
    """(smallest peak GPU bytes over the space, a strategy reaching it); stops early once a
    value <= `stop_below` is found (enough to know that something fits)."""
    cache = Cache(model, hw, options.limits)
    heap = []
    for order, (_, group) in enumerate(groups(model, cluster, cache, options)):
        heap.append((group_memory_bound(model, group.outer, cache), order, group))
    heapq.heapify(heap)
    order, best, best_st = len(heap), float("inf"), None
    while heap and heap[0][0] < best and best > stop_below:
        _, _, item = heapq.heappop(heap)
        if not isinstance(item, tuple):
            for st, terms in members(model, hw, item, cache, options):
                bound = memory_lower_bound_bytes(terms, st, model.arch.layers, options.limits)
                heapq.heappush(heap, (bound, order, (st, terms)))
                order += 1
            continue
        st, terms = item
        ilp = solve_split(terms, st, model.arch.layers, capacity_bytes=hw.capacity_bytes,
                          host_capacity_bytes=hw.host_mem_bytes_per_gpu, limits=options.limits,
                          objective="memory", time_limit_s=options.time_limit_s,
                          solver=options.solver)
        if ilp.stages and ilp.objective < best:
            best, best_st = ilp.objective, st
    return best, best_st


def infeasible_message(model: ModelSpec, cluster: ClusterSpec, hw: Hardware,
                       options: SearchOptions, result: SearchResult) -> str:
    """One line: what binds, by how much, and what (checked) change would fit."""
    if result.stats.candidates == 0:
        return (f"no strategy satisfies the divisibility rules on {cluster.gpus} GPUs "
                f"(global_batch={model.training.global_batch}, layers={model.arch.layers}, "
                f"heads={model.arch.heads}); try --allow-idle or another global batch")
    cap = hw.capacity_bytes
    need, st = min_peak_memory(model, cluster, hw, options)
    if need <= cap:
        return (f"host memory binds: plans that fit in {cap / GIB:.1f} GiB of GPU memory need more "
                f"than the {hw.host_mem_bytes_per_gpu / GIB:.1f} GiB of host memory per GPU for "
                "offloaded states; add nodes or host memory")
    where = f" ({st.describe()})" if st is not None else ""
    fixes = _suggestions(model, cluster, hw, options)
    tail = "; " + " or ".join(fixes) + " would fit" if fixes else \
        f"; nothing fits on up to {MAX_EXTRA_NODE_TRIES} more nodes"
    return (f"GPU memory binds: the best plan needs {need / GIB:.1f} GiB per GPU{where}, "
            f"{cap / GIB:.1f} GiB available{tail}")


def _suggestions(model: ModelSpec, cluster: ClusterSpec, hw: Hardware,
                 options: SearchOptions) -> list[str]:
    out = []
    cap = hw.capacity_bytes
    if options.limits.name != "any":
        need, st = min_peak_memory(model, cluster, hw, replace(options, limits=ANY), stop_below=cap)
        if need <= cap and st is not None:
            out.append(f"--target any ({st.describe()})")
    for extra in range(1, MAX_EXTRA_NODE_TRIES + 1):
        bigger = replace(cluster, nodes=cluster.nodes + extra)
        need, _ = min_peak_memory(model, bigger, hw, replace(options, allow_idle=False), stop_below=cap)
        if need <= cap:
            gpus = extra * cluster.gpus_per_node
            out.append(f"{gpus} more GPUs ({cluster.nodes + extra} nodes)")
            break
    return out
