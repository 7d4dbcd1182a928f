"""The ILP's objective is `evaluate()`'s step time; the bounds are true lower bounds; the caches
the search relies on are valid."""
from __future__ import annotations


import pytest

from cost_models.block import block_times, edge_times
from cost_models.estimate import evaluate
from cost_models.hardware import from_cluster
from cost_models.memory import state_bytes_per_param
from cost_models.terms import candidate_terms
from planner.bounds import (memory_lower_bound_bytes, pipeline_p2p_s, step_lower_bound_s)
from planner.ilp import solve_split
from planner.loading import load_cluster, load_model
from planner.strategy import Strategy
from planner.targets import ANY, MEGATRON

CASES = [
    Strategy(dp=8, tp=8, pp=8, cp=1, vpp=1, mbs=1, zero=1, sp=True),
    Strategy(dp=4, tp=4, pp=4, cp=2, vpp=2, mbs=1, zero=1, sp=True),
    Strategy(dp=16, tp=2, pp=2, cp=1, vpp=1, mbs=2, zero=3, sp=True, offload_optimizer=True),
    Strategy(dp=8, tp=4, pp=16, cp=1, vpp=1, mbs=1, zero=0, overlap_grad_reduce=False),
]


@pytest.fixture(scope="module")
def setup():
    model = load_model("llama3-70b")
    cluster = load_cluster("dgx-h100-64n")
    return model, cluster, from_cluster(cluster)


def _solve(model, hw, st, limits=ANY, capacity=None):
    terms = candidate_terms(model, st, hw)
    ilp = solve_split(terms, st, model.arch.layers, capacity_bytes=capacity or hw.capacity_bytes,
                      host_capacity_bytes=hw.host_mem_bytes_per_gpu, limits=limits)
    return terms, ilp


@pytest.mark.parametrize("st", CASES, ids=lambda s: s.describe())
def test_ilp_objective_equals_evaluate(setup, st):
    model, cluster, hw = setup
    terms, ilp = _solve(model, hw, st)
    assert ilp.status == "optimal"
    cost = evaluate(model, st, hw, terms, list(ilp.stages))
    assert ilp.objective == pytest.approx(cost.step_time_s, rel=1e-9)
    assert cost.fits
    assert sum(s.layers for s in ilp.stages) == model.arch.layers
    assert step_lower_bound_s(terms, st, model.arch.layers) <= ilp.objective


@pytest.mark.parametrize("st", CASES, ids=lambda s: s.describe())
def test_memory_objective_is_a_split_and_bounded(setup, st):
    model, cluster, hw = setup
    terms = candidate_terms(model, st, hw)
    ilp = solve_split(terms, st, model.arch.layers, capacity_bytes=hw.capacity_bytes,
                      host_capacity_bytes=hw.host_mem_bytes_per_gpu, limits=ANY, objective="memory")
    cost = evaluate(model, st, hw, terms, list(ilp.stages))
    assert ilp.objective == pytest.approx(cost.peak_memory_bytes, rel=1e-6)
    assert memory_lower_bound_bytes(terms, st, model.arch.layers, ANY) <= cost.peak_memory_bytes * (1 + 1e-9)


def test_memory_binding_moves_layers_and_recomputes(setup):
    model, cluster, hw = setup
    st = CASES[0]
    terms, free = _solve(model, hw, st)
    peak = evaluate(model, st, hw, terms, list(free.stages)).peak_memory_bytes
    terms, tight = _solve(model, hw, st, capacity=0.6 * peak)
    assert tight.status == "optimal"
    assert evaluate(model, st, hw, terms, list(tight.stages)).peak_memory_bytes <= 0.6 * peak
    assert sum(s.full + s.selective for s in tight.stages) > 0
    assert tight.objective > free.objective
    _, none = _solve(model, hw, st, capacity=1e9)
    assert none.status == "infeasible"


def test_megatron_limits_in_ilp(setup):
    model, cluster, hw = setup
    st = Strategy(dp=8, tp=8, pp=8, cp=1, mbs=1, zero=1, sp=True)
    terms, free = _solve(model, hw, st)
    peak = evaluate(model, st, hw, terms, list(free.stages)).peak_memory_bytes
    _, ilp = _solve(model, hw, st, limits=MEGATRON, capacity=0.8 * peak)
    resolved = st.with_(stage_layers=tuple(s.layers for s in ilp.stages),
                        stage_recompute=tuple((s.full, s.selective) for s in ilp.stages))
    assert ilp.status == "optimal"
    assert MEGATRON.violations(resolved, model) == []


def test_p2p_bound_matches_terms(setup):
    model, cluster, hw = setup
    for st in CASES:
        assert pipeline_p2p_s(model, st, hw) == pytest.approx(candidate_terms(model, st, hw).p2p_s, rel=1e-12)


def test_cached_pieces_depend_only_on_their_keys(setup):
    model, cluster, hw = setup
    base = Strategy(tp=4, cp=2, mbs=2, sp=True)
    for other in (base.with_(dp=8, pp=4, vpp=2, zero=3), base.with_(dp=2, pp=8, zero=1,
                                                                     offload_optimizer=True)):
        assert block_times(model, base, hw) == block_times(model, other, hw)
        assert edge_times(model, base, hw) == edge_times(model, other, hw)
    a = Strategy(dp=4, cp=2, zero=2)
    assert state_bytes_per_param(model, a) == state_bytes_per_param(model, a.with_(dp=2, cp=4, tp=8, pp=4))


def test_cbc_backend_agrees(setup):
    model, cluster, hw = setup
    st = CASES[1]
    terms = candidate_terms(model, st, hw)
    a = solve_split(terms, st, model.arch.layers, capacity_bytes=hw.capacity_bytes,
                    host_capacity_bytes=hw.host_mem_bytes_per_gpu, limits=ANY, solver="cbc")
    b = solve_split(terms, st, model.arch.layers, capacity_bytes=hw.capacity_bytes,
                    host_capacity_bytes=hw.host_mem_bytes_per_gpu, limits=ANY)
    assert a.status == b.status == "optimal"
    # CBC stops a few 1e-6 short on this case (its cutoff increment, beside gapRel): the
    # backends agree to 1e-5, HiGHS (the default) is the one the exactness tests check.
    assert a.objective == pytest.approx(b.objective, rel=1e-5)
    assert b.objective <= a.objective * (1 + 1e-7)


@pytest.mark.parametrize("fraction", [1.0, 0.7, 0.5])
def test_strong_bound_below_ilp_objective(setup, fraction):
    from planner.strong_bound import strong_step_lower_bound_s
    model, cluster, hw = setup
    for st in CASES:
        terms = candidate_terms(model, st, hw)
        free = solve_split(terms, st, model.arch.layers, capacity_bytes=hw.capacity_bytes,
                           host_capacity_bytes=hw.host_mem_bytes_per_gpu, limits=ANY)
        peak = evaluate(model, st, hw, terms, list(free.stages)).peak_memory_bytes
        capacity = fraction * peak
        _, ilp = _solve(model, hw, st, capacity=capacity)
        bound = strong_step_lower_bound_s(terms, st, model.arch.layers, capacity, ANY)
        if ilp.status == "infeasible":
            continue
        assert bound <= ilp.objective * (1 + 1e-9), st.describe()
        assert bound >= step_lower_bound_s(terms, st, model.arch.layers) * (1 - 1e-12)


def test_strong_bound_on_sampled_interleaved_candidates():
    """Regression: interleaved candidates with integer-imbalanced splits (GPT-3 175B)."""
    import random

    from planner.space import outer_candidates
    from planner.strong_bound import strong_step_lower_bound_s
    model, cluster = load_model("gpt3-175b"), load_cluster("dgx-a100-128n")
    hw = from_cluster(cluster)
    pool = [st for st in outer_candidates(model, cluster, ANY) if st.vpp > 1 and st.tp == 8]
    picks = random.Random(3).sample(pool, 12) + [
        Strategy(dp=32, tp=8, pp=4, vpp=14, mbs=6, zero=2, sp=True)]
    for st in picks:
        terms, ilp = _solve(model, hw, st)
        if ilp.status != "optimal":
            continue
        truth = evaluate(model, st, hw, terms, list(ilp.stages)).step_time_s
        bound = strong_step_lower_bound_s(terms, st, model.arch.layers, hw.capacity_bytes, ANY)
        assert bound <= truth * (1 + 1e-9), st.describe()
        assert step_lower_bound_s(terms, st, model.arch.layers) <= truth * (1 + 1e-9)


def test_terms_derived_for_another_vpp_equal_candidate_terms(setup):
    from planner.search import with_vpp
    model, cluster, hw = setup
    for st in (Strategy(dp=8, tp=4, pp=4, vpp=1, mbs=1, zero=1, sp=True),
               Strategy(dp=4, tp=8, pp=8, cp=2, vpp=2, mbs=2, zero=3, sp=True, offload_params=True)):
        base = candidate_terms(model, st, hw)
        for vpp in (2, 3, 5):
            other = st.with_(vpp=vpp)
            assert with_vpp(model, hw, other, base) == candidate_terms(model, other, hw)
