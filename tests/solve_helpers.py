"""Small instances for the solve tests, and a brute-force reference through `evaluate()`."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from cost_models.estimate import evaluate
from cost_models.hardware import from_cluster
from cost_models.terms import candidate_terms
from planner.loading import load_cluster
from planner.space import outer_candidates
from planner.specs import Architecture, ModelSpec, MoESpec, Training
from planner.strategy import StageLayers


def tiny_model(layers: int = 4, hidden: int = 512, seq: int = 128, batch: int = 8) -> ModelSpec:
    """A Llama-shaped model small enough to enumerate every strategy."""
    arch = Architecture(layers=layers, hidden=hidden, heads=8, kv_heads=4, ffn_hidden=4 * hidden,
                        vocab=4096, mlp="swiglu", norm="rmsnorm")
    return ModelSpec(name="tiny", arch=arch, training=Training(seq_len=seq, global_batch=batch))


def tiny_moe_model(layers: int = 4, first_dense: int = 0, batch: int = 8, interval: int = 1) -> ModelSpec:
    """A small mixture-of-experts model (4 experts, top-2, a shared expert); with interval > 1
    one block in every `interval` after the leading dense ones is MoE."""
    moe = MoESpec(routed_experts=4, top_k=2, expert_ffn_hidden=1024, shared_ffn_hidden=512,
                  first_dense_layers=first_dense, layer_interval=interval)
    arch = Architecture(layers=layers, hidden=512, heads=8, kv_heads=4, ffn_hidden=2048,
                        vocab=4096, mlp="swiglu", norm="rmsnorm", moe=moe)
    return ModelSpec(name="tiny-moe", arch=arch, training=Training(seq_len=128, global_batch=batch))


def small_cluster(gpus: int = 4):
    """One node with `gpus` H100s."""
    return replace(load_cluster("dgx-h100", nodes=1), gpus_per_node=gpus)


def stage_options(n: int, limits, st=None):
    """Every (full, selective) recompute count pair for a stage of n blocks (no full recompute
    under the expert-parallel overlap: Strategy.validate's rule)."""
    full_ok = "full" in limits.recompute_modes and not (st is not None and st.ep_comm_overlap)
    sel_ok = "selective" in limits.recompute_modes
    return [(f, s) for f in range(n + 1) for s in range(n + 1 - f)
            if (f == 0 or full_ok) and (s == 0 or sel_ok)]


def splits(layers: int, pp: int, vpp: int):
    """Every composition of `layers` into pp parts of at least vpp."""
    for cut in itertools.product(range(vpp, layers + 1), repeat=pp - 1):
        last = layers - sum(cut)
        if last >= vpp:
            yield (*cut, last)


@dataclass
class CandidateBest:
    """Brute force over one outer candidate's splits and recompute assignments."""

    time_s: float = float("inf")
    """Best step time among the assignments that fit."""
    stages: list | None = None
    peak_bytes: float = float("inf")
    """Smallest peak GPU memory (fitting or not)."""
    host_bytes: float = float("inf")
    """Smallest largest-stage host memory."""


def brute_force_by_candidate(model, cluster, hw, limits) -> dict:
    """{outer strategy: CandidateBest} over every candidate, split and recompute (the search's
    space: an MoE model's leading dense blocks stay on the first stage, planner/ilp.py)."""
    out = {}
    dense_first = model.arch.moe.first_dense_layers if model.arch.moe else 0
    for st in outer_candidates(model, cluster, limits):
        terms = candidate_terms(model, st, hw)
        best = out[st] = CandidateBest()
        for split in splits(model.arch.layers, st.pp, st.vpp):
            if split[0] < dense_first:
                continue
            for choice in itertools.product(*(stage_options(n, limits, st) for n in split)):
                stages = [StageLayers(n, f, s) for n, (f, s) in zip(split, choice)]
                if limits.name != "any":
                    resolved = st.with_(stage_layers=split,
                                        stage_recompute=tuple((x.full, x.selective) for x in stages))
                    if limits.violations(resolved, model):
                        continue
                cost = evaluate(model, st, hw, terms, stages)
                best.peak_bytes = min(best.peak_bytes, cost.peak_memory_bytes)
                best.host_bytes = min(best.host_bytes, max(s.host_bytes for s in cost.stages))
                if cost.fits and cost.step_time_s < best.time_s:
                    best.time_s, best.stages = cost.step_time_s, stages
    return out


def brute_force(model, cluster, hw, limits, by_candidate: dict | None = None):
    """(best step time, strategy, split) over every candidate, split and recompute that fits."""
    by_candidate = by_candidate or brute_force_by_candidate(model, cluster, hw, limits)
    st = min(by_candidate, key=lambda s: by_candidate[s].time_s, default=None)
    if st is None or by_candidate[st].time_s == float("inf"):
        return float("inf"), None, None
    return by_candidate[st].time_s, st, by_candidate[st].stages


def check_bounds(model, cluster, hw, limits, by_candidate: dict) -> None:
    """Every lower bound the search prunes with is below brute force, candidate by candidate:
    the family and group makespan bounds, the group memory bound, the states check, the member
    step, memory and host bounds and the strong step bound (also at least the split-free one)."""
    from planner.bounds import host_lower_bound_bytes, memory_lower_bound_bytes, step_lower_bound_s
    from planner.cache import Cache
    from planner.candidates import expand, families, group_memory_bound
    from planner.search import SearchOptions
    from planner.strong_bound import strong_step_lower_bound_s

    slack, layers = 1 + 1e-9, model.arch.layers
    cache = Cache(model, hw, limits)
    options = SearchOptions(limits=limits)
    group_of = {}
    for family_time, family in families(model, cluster, cache, options):
        for group_time, group in expand(model, family, cache, options):
            group_of[group.degrees] = (family_time, group_time,
                                       group_memory_bound(model, group.outer, cache))
    for st, best in by_candidate.items():
        key = (st.dp, st.tp, st.pp, st.cp, st.vpp, st.mbs, st.sp, st.ep, st.etp, st.ep_comm_overlap)
        family_time, group_time, group_memory = group_of[key]
        terms = candidate_terms(model, st, hw)
        assert family_time <= best.time_s * slack, st.describe()
        assert group_time <= best.time_s * slack, st.describe()
        assert group_memory <= best.peak_bytes * slack, st.describe()
        memory = memory_lower_bound_bytes(terms, st, layers, limits)
        assert memory <= best.peak_bytes * slack, st.describe()
        assert host_lower_bound_bytes(terms, st, layers) <= best.host_bytes * slack, st.describe()
        if best.time_s < float("inf"):
            assert not cache.states_cannot_fit(st, st.zero, st.offload_optimizer, st.offload_params)
        weak = step_lower_bound_s(terms, st, layers)
        strong = strong_step_lower_bound_s(terms, st, layers, hw.capacity_bytes, limits)
        assert weak <= best.time_s * slack, st.describe()
        assert weak * (1 - 1e-12) <= strong <= best.time_s * slack, st.describe()


def hardware_with_capacity(cluster, capacity_bytes: float):
    """The cluster's hardware with a different usable HBM capacity."""
    return replace(from_cluster(cluster), capacity_bytes=capacity_bytes)


def check_against_brute_force(model, cluster, hw, limits, rel: float = 1e-6):
    """Every bound is below brute force (`check_bounds`) and solve's best equals `brute_force`'s
    (or both find nothing); returns the search result, or None when nothing fits."""
    import pytest

    from planner.search import SearchOptions, search

    by_candidate = brute_force_by_candidate(model, cluster, hw, limits)
    check_bounds(model, cluster, hw, limits, by_candidate)
    want, _, _ = brute_force(model, cluster, hw, limits, by_candidate)
    got = search(model, cluster, hw, SearchOptions(limits=limits, top_k=0))
    if want == float("inf"):
        assert got.best is None and got.status == "infeasible"
        return None
    assert got.status == "optimal"
    assert got.best.cost.fits
    assert got.best.objective == pytest.approx(want, rel=rel)
    assert not limits.violations(got.best.strategy, model)
    return got
