"""The expert-parallel all-to-all overlap (Strategy.ep_comm_overlap): its rules, its cost (paired
exchange, unpaired fill and drain, one more block of activations) and its place in the search
space and the engines' limits."""
from __future__ import annotations

import pytest

from cost_models import comm
from cost_models.estimate import estimate
from cost_models.hardware import from_cluster
from cost_models.memory import ALLOCATOR_FRACTION
from cost_models.moe import moe_block_times, paired_exchange_s
from cost_models.pipeline import makespan_s
from cost_models.terms import candidate_terms
from planner.errors import InvalidStrategyError
from planner.loading import load_cluster, load_model
from planner.space import ep_comm_overlap_options, outer_candidates
from planner.strategy import Strategy
from planner.targets import ANY, DEEPSPEED, MEGATRON, TORCHTITAN
from solve_helpers import small_cluster, tiny_moe_model

K = comm.OVERLAP_CONTENTION


@pytest.fixture(scope="module")
def deepseek():
    return load_model("deepseek-v3"), load_cluster("hgx-h800-256n")


def test_paired_exchange_by_hand():
    """Each exchange hides behind the computation beside it in Megatron's combined 1F1B:
    dispatch_fwd || experts dgrad, combine_fwd || attention bwd (charged to the forward);
    combine_bwd || attention fwd, dispatch_bwd || experts wgrad + fwd (to the backward)."""
    fwd, bwd = paired_exchange_s(10.0, 6.0, pre_fwd=4.0, pre_bwd=8.0, experts_fwd=1.0,
                                 experts_dgrad=3.0, experts_wgrad=2.0)
    # dispatch 10 vs 3: 7 sticks out; combine 6 vs 8: hidden; combine 6 vs 4: 2; dispatch 10 vs 3.
    assert fwd == pytest.approx(K * 10 + (1 - K) * 7 + K * 6)
    assert bwd == pytest.approx(K * 6 + (1 - K) * 2 + K * 10 + (1 - K) * 7)


def test_overlap_hides_part_of_the_exchange_and_keeps_the_rest_for_fill_and_drain(deepseek):
    model, cluster = deepseek
    hw = from_cluster(cluster)
    plain = moe_block_times(model, Strategy(dp=128, pp=16, ep=64), hw)
    paired = moe_block_times(model, Strategy(dp=128, pp=16, ep=64, ep_comm_overlap=True), hw)
    exchange = plain.fwd_ep + plain.bwd_ep
    assert plain.ep_unpaired == 0.0
    assert (paired.fwd_compute, paired.bwd_compute) == (plain.fwd_compute, plain.bwd_compute)
    assert K * exchange <= paired.fwd_ep + paired.bwd_ep < exchange
    assert paired.fwd_ep + paired.bwd_ep + paired.ep_unpaired == pytest.approx(exchange)


def test_makespan_with_unpaired_fill_and_drain():
    # sum_i u_i / v + (m - 1/v) max_i t_i; one stage: u + (m - 1) t.
    assert makespan_s([1.0, 2.0], 5, 1, [1.5, 2.5]) == pytest.approx(4.0 + 4 * 2.0)
    assert makespan_s([1.0, 2.0], 4, 2, [1.5, 2.5]) == pytest.approx(2.0 + 3.5 * 2.0)
    assert makespan_s([2.0], 3, 1, [2.5]) == pytest.approx(2.5 + 2 * 2.0)


def test_estimate_gains_what_the_pairing_hides_in_the_steady_state():
    """One stage, m micro-batches: the first forward and the last backward run unpaired, so the
    step is (m - 1) x the per-micro-batch saving shorter; memory grows by one block, stored."""
    model, cluster = tiny_moe_model(batch=16), small_cluster()
    hw = from_cluster(cluster)
    plain = Strategy(dp=4, ep=4, mbs=1, zero=1)
    paired = plain.with_(ep_comm_overlap=True)
    a, b = estimate(model, cluster, plain, hw), estimate(model, cluster, paired, hw)
    saving = model.arch.layers * moe_block_times(model, paired, hw).ep_unpaired
    assert a.step_time_s - b.step_time_s == pytest.approx((a.micro_batches - 1) * saving, rel=1e-9)
    terms = candidate_terms(model, paired, hw)
    assert terms.paired_block_bytes == terms.moe.acts.none
    assert b.peak_memory_bytes - a.peak_memory_bytes == pytest.approx(
        (1 + ALLOCATOR_FRACTION) * terms.paired_block_bytes)
    assert sum(b.time_s.values()) == pytest.approx(b.step_time_s)


def test_rules_name_what_is_refused(deepseek):
    model, cluster = deepseek
    with pytest.raises(InvalidStrategyError, match="no expert-parallel all-to-all"):
        Strategy(dp=128, pp=16, ep=1, ep_comm_overlap=True).validate(model, cluster)
    with pytest.raises(InvalidStrategyError, match=r"full recompute \(61 blocks\)"):
        Strategy(dp=128, pp=16, ep=64, ep_comm_overlap=True, recompute="full").validate(model, cluster)
    with pytest.raises(InvalidStrategyError, match="needs an MoE model"):
        Strategy(dp=8, ep_comm_overlap=True).validate(load_model("llama3-8b"),
                                                      load_cluster("dgx-h100-1n"))
    Strategy(dp=128, pp=16, ep=64, ep_comm_overlap=True, recompute="selective").validate(model, cluster)


def test_engines_declare_the_overlap():
    model = load_model("deepseek-v3")
    flat = Strategy(dp=128, pp=16, ep=64, zero=1, ep_comm_overlap=True)
    interleaved = flat.with_(vpp=2, dp=64, pp=32, mbs=1)
    assert any("non-interleaved pipeline (pp=16 needs vpp > 1)" in v
               for v in MEGATRON.violations(flat, model))
    assert not any("overlap" in v for v in MEGATRON.violations(interleaved, model))
    assert any("overlap of the expert-parallel all-to-all" in v
               for v in TORCHTITAN.violations(flat, model))
    assert any("overlap of the expert-parallel all-to-all" in v
               for v in DEEPSPEED.violations(flat, model))


def test_search_space_offers_the_overlap_where_it_can_pay():
    moe = tiny_moe_model(batch=16)
    assert ep_comm_overlap_options(moe, ep=4, pp=1, vpp=1, micro_batches=2, limits=ANY) == [False, True]
    assert ep_comm_overlap_options(moe, ep=1, pp=1, vpp=1, micro_batches=2, limits=ANY) == [False]
    assert ep_comm_overlap_options(moe, ep=4, pp=1, vpp=1, micro_batches=1, limits=ANY) == [False]
    assert ep_comm_overlap_options(moe, ep=4, pp=2, vpp=1, micro_batches=4, limits=MEGATRON) == [False]
    assert ep_comm_overlap_options(moe, ep=4, pp=2, vpp=2, micro_batches=4, limits=MEGATRON) == [False, True]
    assert ep_comm_overlap_options(moe, ep=4, pp=1, vpp=1, micro_batches=2, limits=TORCHTITAN) == [False]
    small = tiny_moe_model(batch=4)
    cands = list(outer_candidates(small, small_cluster(), ANY))
    paired = [st for st in cands if st.ep_comm_overlap]
    assert paired and all(st.ep > 1 and st.micro_batches(small) >= 2 for st in paired)
    assert {st.with_(ep_comm_overlap=False) for st in paired} <= set(cands)
    for st in paired:
        st.validate(small, small_cluster())
