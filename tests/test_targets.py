"""Engine limits (planner/targets.py) as the emitters declare them."""
from __future__ import annotations

from emit_cases import plan
from planner.targets import TARGETS, chunk_sizes, uniform_chunk_count


def test_full_recompute_of_every_block_is_uniform_even_with_uneven_stages():
    p = plan("pp-first-last")  # full recompute of all blocks on stages of 19/21/21/19
    assert TARGETS["megatron"].violations(p.strategy, p.model) == []


def test_uniform_count_is_per_virtual_chunk():
    assert chunk_sizes(21, 2) == [11, 10]
    assert uniform_chunk_count([4, 4, 4, 4], [19, 21, 21, 19], vpp=2) == 2
    assert uniform_chunk_count([3, 3, 3, 3], [19, 21, 21, 19], vpp=2) is None
    assert uniform_chunk_count([5, 6, 6, 5], [5, 6, 6, 5], vpp=1) == 6


def test_per_stage_recompute_counts_are_not_megatron():
    p = plan("pp-first-last")
    st = p.strategy.with_(stage_recompute=((19, 0), (10, 0), (5, 0), (0, 0)))
    (problem,) = TARGETS["megatron"].violations(st, p.model)
    assert "same number of blocks in every pipeline chunk" in problem
    assert TARGETS["any"].violations(st, p.model) == []


def test_targets_lists_every_engine():
    assert sorted(TARGETS) == ["any", "deepspeed", "megatron", "torchtitan"]
    assert TARGETS["torchtitan"].uniform_recompute_count


def test_tp_comm_overlap_needs_sequence_parallelism_in_megatron():
    p = plan("llama-gqa-selective")
    assert TARGETS["megatron"].violations(p.strategy.with_(tp_comm_overlap=True), p.model) == []
    (problem,) = TARGETS["megatron"].violations(
        p.strategy.with_(tp_comm_overlap=True, sp=False), p.model)
    assert "without sequence parallelism" in problem
    problems = TARGETS["torchtitan"].violations(p.strategy.with_(tp_comm_overlap=True), p.model)
    assert any("overlap of tensor-parallel communication" in x for x in problems)
