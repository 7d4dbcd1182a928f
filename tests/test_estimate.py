"""Step-time model: invariants, pipeline formulas, communication placement."""
from __future__ import annotations

import pytest

from cost_models import comm
from cost_models.breakdown import TIME_KEYS
from cost_models.estimate import estimate
from cost_models.hardware import from_cluster
from cost_models.pipeline import bubble_fraction, makespan_s
from planner.loading import load_cluster, load_model
from planner.strategy import Strategy


def test_time_parts_add_up_to_step_time(llama70b, dgx_h100_8n):
    r = estimate(llama70b, dgx_h100_8n, Strategy(dp=2, tp=8, pp=4, vpp=2, zero=1, sp=True,
                                                 recompute="selective"))
    assert sum(r.time_s[k] for k in TIME_KEYS) == pytest.approx(r.step_time_s, rel=1e-12)


def test_no_tensor_parallel_means_no_tp_communication():
    model, cluster = load_model("llama3-8b"), load_cluster("dgx-h100")
    r = estimate(model, cluster, Strategy(dp=8, zero=1))
    assert r.time_s["tp_comm"] == 0
    assert estimate(model, cluster, Strategy(dp=4, tp=2, zero=1, sp=True)).time_s["tp_comm"] > 0


def test_single_stage_has_no_bubble_or_p2p():
    model, cluster = load_model("llama3-8b"), load_cluster("dgx-h100")
    r = estimate(model, cluster, Strategy(dp=8, zero=1))
    assert r.time_s["pp_bubble"] == 0 and r.time_s["pp_p2p"] == 0


@pytest.mark.parametrize("p, m, v", [(4, 16, 1), (8, 64, 3), (2, 2, 1)])
def test_uniform_makespan_gives_published_bubble(p, m, v):
    t = 1.0
    total = makespan_s([t] * p, m, v)
    assert total / (m * t) - 1 == pytest.approx(bubble_fraction(p, m, v))


def test_uneven_stages_pay_for_the_slowest():
    assert makespan_s([1.0, 2.0, 1.0], 10) == pytest.approx(4.0 + 9 * 2.0)


def test_groups_inside_a_node_use_nvlink_and_across_use_the_nic():
    hw = from_cluster(load_cluster("dgx-h100-4n"))
    assert comm.group_link(hw, 8, 1) == hw.intra
    assert comm.group_link(hw, 4, 2) == hw.intra
    assert comm.group_link(hw, 4, 8) == hw.inter
    assert comm.group_link(hw, 16, 1) == hw.inter


def test_all_reduce_is_reduce_scatter_plus_all_gather_in_bytes():
    link = comm.Link(100e9, 0.0)
    ar = comm.collective_time_s("all_reduce", 1e9, 8, link)
    rs = comm.collective_time_s("reduce_scatter", 1e9, 8, link)
    ag = comm.collective_time_s("all_gather", 1e9, 8, link)
    assert ar == pytest.approx(rs + ag)
    assert ar == pytest.approx(2 * 7 / 8 * 1e9 / 100e9)


def test_overlap_hides_communication_but_not_for_free():
    assert comm.exposed_s(1.0, 10.0) == pytest.approx(comm.OVERLAP_CONTENTION)
    assert comm.exposed_s(10.0, 1.0) == pytest.approx(9.0 + comm.OVERLAP_CONTENTION)
    assert comm.exposed_s(0.0, 1.0) == 0.0


def test_grad_overlap_reduces_exposed_dp_time():
    model, cluster = load_model("llama3-8b"), load_cluster("dgx-h100-4n")
    st = Strategy(dp=16, tp=2, zero=1, sp=True, mbs=1)
    on = estimate(model, cluster, st).time_s["dp_comm_exposed"]
    off = estimate(model, cluster, st.with_(overlap_grad_reduce=False)).time_s["dp_comm_exposed"]
    assert 0 < on < off


def test_more_gpus_on_the_same_batch_is_faster():
    model = load_model("llama3-8b")
    slow = estimate(model, load_cluster("dgx-h100-1n"), Strategy(dp=8, zero=1)).step_time_s
    fast = estimate(model, load_cluster("dgx-h100-4n"), Strategy(dp=32, zero=1)).step_time_s
    assert fast < slow


def test_mfu_is_bounded_and_hardware_flops_count_recompute(llama70b, dgx_h100_8n):
    r = estimate(llama70b, dgx_h100_8n, Strategy(dp=2, tp=8, pp=4, zero=1, sp=True, recompute="full"))
    assert 0.2 < r.mfu < 0.75
    assert r.hardware_tflops_per_gpu > r.model_tflops_per_gpu


def test_does_not_fit_is_a_result(llama70b):
    r = estimate(llama70b, load_cluster("dgx-h100-8n"), Strategy(dp=64))
    assert not r.fits
    assert "GPU memory" in r.overflow()


def test_short_k_loops_pay_for_the_output_store():
    """Same FLOPs, same main-loop rate: the GEMM with the larger output (short K) takes longer by
    exactly its extra output bytes at HBM bandwidth (the epilogue after the K loop)."""
    hw = from_cluster(load_cluster("dgx-h100"))
    long_k, short_k = hw.gemm_time_s(4096, 16384, 2048, "bf16"), hw.gemm_time_s(16384, 2048, 4096, "bf16")
    assert 2.0 * 4096 * 16384 * 2048 == 2.0 * 16384 * 2048 * 4096
    assert short_k - long_k == pytest.approx(2 * (16384 * 4096 - 4096 * 2048) / hw.hbm_Bps, rel=1e-6)
    # Backward by shape: data gradient (M x N)(N x K) plus weight gradient (K x M)(M x N).
    m, k, n = 4096, 2048, 6144
    assert hw.gemm_backward_time_s(m, k, n, "bf16") == pytest.approx(
        hw.gemm_time_s(m, n, k, "bf16") + hw.gemm_time_s(k, m, n, "bf16"))


def test_small_hidden_gemms_cost_more_per_flop():
    """Megatron-LM's H100 weak-scaling table: MFU rises from 41 % (1.7B, h 2048) to 47-48 % for
    the largest models because larger GEMMs have higher arithmetic intensity (README)."""
    hw = from_cluster(load_cluster("dgx-h100"))
    k_2048, k_8192 = hw.gemm_time_s(16384, 2048, 6144, "bf16"), hw.gemm_time_s(4096, 8192, 6144, "bf16")
    assert k_2048 > 1.05 * k_8192  # same 412 GFLOP, a 4x larger output to store
