"""Small instances for the solve tests, and a brute-force reference through `evaluate()`."""
from __future__ import annotations

import itertools
from dataclasses import replace

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


def brute_force(model, cluster, hw, limits):
    """(best step time, strategy, split) over every candidate, split and recompute that fits."""
    best = (float("inf"), None, None)
    # The search keeps an MoE model's leading dense blocks on the first stage (planner/ilp.py).
    dense_first = model.arch.moe.first_dense_layers if model.arch.moe else 0
    for st in outer_candidates(model, cluster, limits):
        terms = candidate_terms(model, st, hw)
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
                if cost.fits and cost.step_time_s < best[0]:
                    best = (cost.step_time_s, st, stages)
    return best


def hardware_with_capacity(cluster, capacity_bytes: float):
    """The cluster's hardware with a different usable HBM capacity."""
    return replace(from_cluster(cluster), capacity_bytes=capacity_bytes)


def check_against_brute_force(model, cluster, hw, limits, rel: float = 1e-6):
    """solve's best equals `brute_force`'s (or both find nothing); returns the search result,
    or None when nothing fits."""
    import pytest

    from planner.search import SearchOptions, search

    want, _, _ = brute_force(model, cluster, hw, limits)
    got = search(model, cluster, hw, SearchOptions(limits=limits, top_k=0))
    if want == float("inf"):
        assert got.best is None and got.status == "infeasible"
        return None
    assert got.status == "optimal"
    assert got.best.cost.fits
    assert got.best.objective == pytest.approx(want, rel=rel)
    assert not limits.violations(got.best.strategy, model)
    return got
