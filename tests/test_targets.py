"""Engine limits (planner/targets.py) as the emitters declare them."""
from __future__ import annotations

from dataclasses import replace

from emit_cases import plan
from planner.targets import TARGETS, EngineLimits, chunk_sizes, uniform_chunk_count


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


def test_expert_limits_are_generic():
    """Each expert field of EngineLimits refuses exactly what it names, for any engine."""
    p = plan("moe-deepseek-ep-etp")  # tp=2, dp=16, ep=16, etp=2, ZeRO 1
    st, model = p.strategy, p.model
    assert EngineLimits(name="e").violations(st, model) == []
    assert EngineLimits(name="e", moe=False).violations(st.with_(ep=1, etp=1), model) == [
        "e cannot express mixture-of-experts models"]
    assert EngineLimits(name="e", expert_parallel=False).violations(st, model) == [
        "e cannot express expert parallelism (ep=16)",
        "e cannot express expert tensor parallelism (etp=2)"]
    (problem,) = EngineLimits(name="e", expert_tensor_parallel="tp_without_ep").violations(
        st, model)
    assert "etp must be 1" in problem
    biased = replace(model, arch=replace(model.arch, linear_bias=True))
    (problem,) = EngineLimits(name="e", expert_tensor_parallel_bias=False).violations(st, biased)
    assert "of experts with linear biases" in problem
    shards = EngineLimits(name="e", expert_parallel_from_shards=True)
    assert shards.violations(st, model) == []  # 1 * 2 * 16 sharded ranks hold ep=16
    (problem,) = shards.violations(st.with_(zero=0), model)  # only cp * tp = 2 ranks left
    assert "ep=16 outside the sharded ranks cp*tp*(dp if ZeRO > 0 else 1) = 2" in problem
    dense = plan("llama-gqa-selective")
    strict = EngineLimits(name="e", moe=False, expert_parallel=False,
                          expert_tensor_parallel="tp_without_ep", expert_parallel_from_shards=True)
    assert strict.violations(dense.strategy, dense.model) == []
