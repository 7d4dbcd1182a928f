"""The outer-space generators, one by one, and the whole space against Strategy.validate."""
from __future__ import annotations

from planner.loading import load_model
from planner.space import (context_parallel_degrees, degree_splits, divisors, micro_batch_sizes,
                           offload_options, outer_candidates, pipeline_degrees,
                           sequence_parallel_options, tensor_parallel_degrees,
                           virtual_stage_counts, world_sizes, zero_stages)
from planner.targets import ANY, DEEPSPEED, MEGATRON
from solve_helpers import small_cluster, tiny_model


def test_divisors():
    assert divisors(12) == [1, 2, 3, 4, 6, 12]
    assert divisors(1) == [1]


def test_tensor_parallel_within_node_and_heads():
    llama70b = load_model("llama3-70b")  # 64 heads, 8 kv heads
    assert tensor_parallel_degrees(llama70b, 8, ANY) == [1, 2, 4, 8]
    assert tensor_parallel_degrees(tiny_model(), 8, ANY) == [1, 2, 4]  # kv_heads = 4
    assert tensor_parallel_degrees(llama70b, 8, DEEPSPEED) == [1]


def test_context_parallel_needs_2cp_chunks():
    model = tiny_model(seq=64)
    assert context_parallel_degrees(model, ANY) == [1, 2, 4, 8, 16, 32]
    assert all(64 % (2 * c) == 0 for c in context_parallel_degrees(model, ANY) if c > 1)


def test_pipeline_up_to_layers():
    assert pipeline_degrees(tiny_model(layers=5), ANY) == [1, 2, 3, 4, 5]


def test_degree_splits_multiply_to_world_and_divide_batch():
    model = tiny_model(batch=4)
    for dp, tp, pp, cp in degree_splits(model, 8, 8, ANY):
        assert dp * tp * pp * cp == 8 and 4 % dp == 0


def test_interleaving_rules():
    model = tiny_model(layers=8)
    assert virtual_stage_counts(model, 2, 4, ANY) == [1, 2, 3, 4]
    assert virtual_stage_counts(model, 2, 3, ANY) == [1]  # m % pp != 0
    assert virtual_stage_counts(model, 1, 4, ANY) == [1]
    assert virtual_stage_counts(model, 2, 4, DEEPSPEED) == [1]


def test_micro_batches_zero_offload_sp():
    assert micro_batch_sizes(tiny_model(batch=8), 2) == [1, 2, 4]
    assert zero_stages(1, 1, 1, ANY) == [0, 3]
    assert zero_stages(2, 1, 1, MEGATRON) == [0, 1]
    assert zero_stages(2, 1, 4, DEEPSPEED) == list(DEEPSPEED.pipeline_zero_stages)
    assert offload_options(1, ANY) == [(False, False), (True, False)]
    assert len(offload_options(3, ANY)) == 4
    assert offload_options(1, MEGATRON) == [(False, False), (True, False)]
    assert offload_options(0, MEGATRON) == [(False, False)]  # Megatron offloads with ZeRO-1 only
    assert sequence_parallel_options(tiny_model(), 1, 1, ANY) == [False]
    assert sequence_parallel_options(tiny_model(), 2, 1, ANY) == [True, False]


def test_world_sizes():
    cluster = small_cluster(4)
    assert world_sizes(cluster, False) == [4]
    assert world_sizes(cluster.__class__(**{**cluster.__dict__, "nodes": 3}), True) == [4, 8, 12]


def test_every_candidate_is_valid_and_distinct():
    model, cluster = tiny_model(), small_cluster()
    seen = set()
    for st in outer_candidates(model, cluster, ANY):
        st.validate(model, cluster)
        assert st not in seen
        seen.add(st)
    assert len(seen) > 100


def test_target_space_respects_limits():
    model, cluster = tiny_model(), small_cluster()
    for limits in (MEGATRON, DEEPSPEED):
        for st in outer_candidates(model, cluster, limits):
            outer_only = [v for v in limits.violations(st.with_(stage_layers=None), model)
                          if "split" not in v and "evenly" not in v]
            assert outer_only == [], (limits.name, st.describe(), outer_only)
