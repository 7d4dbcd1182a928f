"""The strong bound's first-stage term prices the level the *other* stages need for the blocks
stage 0 leaves them (planner/strong_bound.py `_integer_levels`): a small stage 0 exposes less
gradient reduction but pushes its blocks onto the rest. Still a lower bound (brute force through
`evaluate()` where data-parallel traffic dominates) and close to the ILP on Llama-3-405B."""
from __future__ import annotations

from dataclasses import replace

import pytest

from cost_models.hardware import Link, from_cluster
from cost_models.terms import candidate_terms
from planner.ilp import solve_split
from planner.loading import load_cluster, load_model
from planner.strategy import Strategy
from planner.strong_bound import strong_step_lower_bound_s
from planner.targets import ANY
from solve_helpers import brute_force_by_candidate, check_bounds, small_cluster, tiny_model


@pytest.mark.parametrize("bandwidth_Bps", [2e9])
def test_bounds_below_brute_force_when_gradient_traffic_dominates(bandwidth_Bps):
    model, cluster = tiny_model(layers=5, hidden=512, seq=128, batch=8), small_cluster(4)
    hw = from_cluster(cluster)
    hw = replace(hw, intra=Link(bandwidth_Bps, hw.intra.latency_s))
    by_candidate = brute_force_by_candidate(model, cluster, hw, ANY)
    assert any(st.pp > 1 and best.time_s < float("inf") for st, best in by_candidate.items())
    check_bounds(model, cluster, hw, ANY, by_candidate)


def test_strong_bound_close_to_the_ilp_on_llama3_405b():
    """dp=64 tp=4 pp=16 vpp=5 cp=4: the ILP puts 7 blocks on stage 0; with T* alone the bound
    let stage 0 shrink to 5 (less exposed gradient traffic) at no cost: 97.1 % of the ILP."""
    model, cluster = load_model("llama3-405b"), load_cluster("dgx-h100-2048n")
    hw = from_cluster(cluster)
    st = Strategy(dp=64, tp=4, pp=16, vpp=5, cp=4, mbs=1, zero=1, sp=True)
    terms = candidate_terms(model, st, hw)
    ilp = solve_split(terms, st, model.arch.layers, capacity_bytes=hw.capacity_bytes,
                      host_capacity_bytes=hw.host_mem_bytes_per_gpu, limits=ANY)
    strong = strong_step_lower_bound_s(terms, st, model.arch.layers, hw.capacity_bytes, ANY)
    assert ilp.status == "optimal"
    assert 0.99 * ilp.objective < strong <= ilp.objective
