"""The software stack as an input: presets, overrides, what they change, and where it is stated."""
from __future__ import annotations

from dataclasses import replace

import pytest

from cost_models import comm
from cost_models.estimate import estimate
from cost_models.hardware import ATTENTION_HALF_SEQ, from_cluster
from planner.errors import InputError
from planner.loading import load_cluster, load_model
from planner.presets import names
from planner.stacks import STACK_FOR_TARGET, load_stack, stack_for
from planner.strategy import Strategy


def test_every_preset_loads_and_every_target_has_a_stack():
    assert {"megatron-core", "megatron-deepspeed", "deepspeed", "fsdp"} <= set(names("stacks"))
    for name in names("stacks"):
        stack = load_stack(name)
        assert stack.name == name and stack.sources
    assert stack_for(None, "torchtitan").name == "fsdp"
    assert stack_for(None, "deepspeed").overlap_grad_reduce is False
    assert stack_for("fsdp", "megatron").name == "fsdp"


def test_a_stack_file_overrides_its_base(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: fsdp\nattention_kernel: flash3\n")
    mine = load_stack(str(path))
    assert mine.name == "mine" and mine.attention_kernel == "flash3"
    assert mine.fused_cross_entropy is load_stack("fsdp").fused_cross_entropy


@pytest.mark.parametrize("text, key", [
    ("attention_kernel: flash9\n", "attention_kernel"),
    ("calibration: {H100: {gemm_scale: 3.0}}\n", "calibration.H100.gemm_scale"),
    ("calibration: {H100: {speed: 1.0}}\n", "calibration.H100.speed"),
    ("atention_kernel: flash2\n", "atention_kernel"),
])
def test_bad_stack_files_name_the_key(tmp_path, text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        load_stack(str(path))
    assert err.value.key_path == key


def test_a_circular_base_is_an_error(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text(f"base: {path}\n")
    with pytest.raises(InputError, match="circular"):
        load_stack(str(path))


def test_attention_kernel_and_loss_change_the_prediction_at_long_sequences():
    model = load_model("llama3-8b")
    model = replace(model, training=replace(model.training, seq_len=32768, global_batch=8))
    cluster = load_cluster("dgx-h100-1n")
    st = Strategy(dp=1, tp=8, cp=1, mbs=1, sp=True)
    times = {s: estimate(model, cluster, st, from_cluster(cluster, load_stack(s))).step_time_s
             for s in ("megatron-core", "fsdp")}
    # FlashAttention-2 on H100 is slower than cuDNN's fused attention (FA3 paper, Fig. 5-6).
    assert times["fsdp"] > 1.1 * times["megatron-core"]


def test_attention_rate_rises_with_sequence_length():
    hw = from_cluster(load_cluster("dgx-h100-1n"))
    per_flop = [hw.attention_time_s(1e12, False, s) for s in (512, 4096, 32768)]
    assert per_flop[0] > per_flop[1] > per_flop[2]
    assert per_flop[0] / per_flop[2] == pytest.approx(
        (1 + ATTENTION_HALF_SEQ / 512) / (1 + ATTENTION_HALF_SEQ / 32768), rel=1e-3)


def test_ring_collectives_across_nodes_use_every_nic_the_group_holds():
    hw = from_cluster(load_cluster("dgx-h100-4n"))
    one_per_node = comm.ring_link(hw, 4, 8)
    eight_per_node = comm.ring_link(hw, 32, 1)
    assert one_per_node.bandwidth_Bps == hw.inter.bandwidth_Bps
    assert eight_per_node.bandwidth_Bps == min(hw.intra.bandwidth_Bps, 8 * hw.inter.bandwidth_Bps)
    assert comm.ring_link(hw, 8, 1) is hw.intra


def test_targets_map_to_known_stacks():
    assert set(STACK_FOR_TARGET.values()) <= set(names("stacks"))
