"""Mixture-of-experts: parameter counts, FLOPs, expert-parallel communication and memory."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from cost_models import comm
from cost_models.estimate import estimate
from cost_models.flops import model_flops_per_step, total_params
from cost_models.hardware import from_cluster
from cost_models.moe import MOE_LOAD_IMBALANCE, moe_block_times, routed_rows
from planner.errors import InputError, InvalidStrategyError
from planner.loading import load_cluster, load_model
from planner.strategy import Strategy


@pytest.mark.parametrize("name, total_b, active_b, rel", [
    ("mixtral-8x7b", 46.7, 12.9, 0.01),        # Jiang et al. 2024 §2
    ("mixtral-8x22b", 141.0, 39.0, 0.01),      # Mistral AI model card
    ("qwen2-57b-a14b", 57.0, 14.0, 0.02),      # Qwen2 report (rounded to whole billions)
    ("llama4-maverick", 400.0, 17.0, 0.015),   # Meta model card (rounded to whole billions)
])
def test_moe_parameter_counts_match_published(name, total_b, active_b, rel):
    model = load_model(name)
    assert total_params(model) / 1e9 == pytest.approx(total_b, rel=rel)
    assert total_params(model, active=True) / 1e9 == pytest.approx(active_b, rel=rel)


def test_deepseek_v3_parameter_counts():
    """671B total (paper and README_WEIGHTS.md). Active: the config gives 37.55B; the paper says
    37B and README_WEIGHTS.md 36.7B (incl. 0.9B embedding + 0.9B head), which is exactly one
    7168 x 2048 expert matrix per MoE layer less than the config implies (58 x 14.7M = 0.85B).
    Independent counts from the same config land on 37.5-37.6B too (deepseek-ai/DeepSeek-V3
    issue #231; DeepSeek-V2 issue #73 finds the same excess for V2-Lite: ~2.6B vs 2.4B), so the
    count stays the config's and the tolerance to the rounded 37B is 1.6 %, not 1 %."""
    model = load_model("deepseek-v3")
    assert total_params(model) / 1e9 == pytest.approx(671.0, rel=0.002)
    active = total_params(model, active=True)
    assert active / 1e9 == pytest.approx(37.0, rel=0.016)
    assert active - 58 * 7168 * 2048 == pytest.approx(36.7e9, rel=0.002)


def test_moe_model_flops_count_active_experts_only():
    model = load_model("mixtral-8x7b")
    a, t = model.arch, model.training
    tokens = t.global_batch * t.seq_len
    attn = 2 * (a.hidden * (a.hidden + 2 * a.kv_dim) + a.hidden * a.hidden)
    experts = 2 * 3 * a.hidden * a.moe.expert_ffn_hidden * a.moe.top_k
    router = 2 * a.hidden * a.moe.routed_experts
    core = 4 * t.seq_len * a.hidden
    per_token = a.layers * (attn + experts + router + core) + 2 * a.hidden * a.vocab
    assert model_flops_per_step(model) == pytest.approx(3 * tokens * per_token, rel=1e-12)


def test_all_to_all_volume_per_token_matches_hand_computation():
    """Each token's hidden vector (2 bytes x h) goes to k experts, out and back, fwd and bwd."""
    model = load_model("mixtral-8x7b")
    hw = from_cluster(load_cluster("dgx-h100-1n"))
    st = Strategy(dp=8, ep=8, mbs=1)
    tokens = model.training.seq_len
    per_gpu_bytes = tokens * model.arch.moe.top_k * model.arch.hidden * 2
    one = comm.collective_time_s("all_to_all", per_gpu_bytes, 8, hw.intra)
    assert one == pytest.approx(hw.intra.latency_s + 7 / 8 * per_gpu_bytes / hw.intra.bandwidth_Bps)
    times = moe_block_times(model, st, hw)
    assert times.fwd_ep == pytest.approx(2 * one) and times.bwd_ep == pytest.approx(2 * one)
    assert routed_rows(model, st) == pytest.approx(tokens * 2 * MOE_LOAD_IMBALANCE)


def test_all_to_all_across_nodes_splits_nvlink_and_nic_traffic():
    """ep=32 over 4 nodes: 7/32 of the buffer to node peers over NVLink, 24/32 over the NIC,
    concurrently; the NIC share sets the time (one latency: all sends are posted at once)."""
    hw = from_cluster(load_cluster("dgx-h100-4n"))
    nbytes = 1e9
    got = comm.all_to_all_time_s(hw, nbytes, 32, 1)
    assert got == pytest.approx(hw.inter.latency_s + 24 / 32 * nbytes / hw.inter.bandwidth_Bps)
    assert comm.all_to_all_time_s(hw, nbytes, 32, 1, inter_bytes=0.5 * nbytes) == pytest.approx(
        hw.inter.latency_s + max(7 / 32 * nbytes / hw.intra.bandwidth_Bps,
                                 0.5 * nbytes / hw.inter.bandwidth_Bps))
    assert comm.all_to_all_time_s(hw, nbytes, 8, 1) == comm.collective_time_s(
        "all_to_all", nbytes, 8, hw.intra)


def test_memory_decreases_with_expert_parallelism():
    model, cluster = load_model("mixtral-8x7b"), load_cluster("dgx-h100-8n")
    peaks = [estimate(model, cluster, Strategy(dp=16, tp=2, pp=2, ep=ep, zero=1, sp=True,
                                               recompute="full")).peak_memory_bytes
             for ep in (1, 2, 4, 8)]
    assert all(a > b for a, b in zip(peaks, peaks[1:]))


def test_expert_parallel_rules_show_every_factor():
    model, cluster = load_model("mixtral-8x7b"), load_cluster("dgx-h100-8n")
    with pytest.raises(InvalidStrategyError, match="routed_experts=8 is not divisible by ep=3"):
        Strategy(dp=64, ep=3).validate(model, cluster)
    with pytest.raises(InvalidStrategyError, match=r"tp\*cp\*dp = 2\*1\*2 = 4 is not divisible by ep\*etp"):
        Strategy(dp=2, tp=2, pp=16, ep=8, sp=True).validate(model, cluster)
    with pytest.raises(InvalidStrategyError, match="needs an MoE model"):
        Strategy(dp=64, ep=2).validate(load_model("llama3-8b"), cluster)


def test_hf_moe_configs(tmp_path):
    mixtral = {"model_type": "mixtral", "num_hidden_layers": 32, "hidden_size": 4096,
               "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
               "vocab_size": 32000, "num_local_experts": 8, "num_experts_per_tok": 2}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(mixtral))
    assert load_model(str(path)).arch == load_model("mixtral-8x7b").arch
    deepseek = {"model_type": "deepseek_v3", "num_hidden_layers": 61, "hidden_size": 7168,
                "num_attention_heads": 128, "num_key_value_heads": 128, "intermediate_size": 18432,
                "moe_intermediate_size": 2048, "vocab_size": 129280, "n_routed_experts": 256,
                "n_shared_experts": 1, "num_experts_per_tok": 8, "first_k_dense_replace": 3,
                "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128,
                "qk_rope_head_dim": 64, "v_head_dim": 128, "moe_layer_freq": 1,
                "scoring_func": "sigmoid", "topk_method": "noaux_tc", "n_group": 8, "topk_group": 4,
                "routed_scaling_factor": 2.5}
    path.write_text(json.dumps(deepseek))
    assert load_model(str(path)).arch == load_model("deepseek-v3").arch
    qwen = {"model_type": "qwen2_moe", "num_hidden_layers": 24, "hidden_size": 2048,
            "num_attention_heads": 16, "num_key_value_heads": 16, "intermediate_size": 5632,
            "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632,
            "vocab_size": 151936, "num_experts": 60, "num_experts_per_tok": 4,
            "decoder_sparse_step": 2, "mlp_only_layers": []}
    path.write_text(json.dumps(qwen))
    moe = load_model(str(path)).arch.moe
    assert (moe.first_dense_layers, moe.layer_interval) == (0, 2)
    assert [moe.is_moe_layer(i) for i in range(4)] == [False, True, False, True]
    qwen.update(decoder_sparse_step=1, mlp_only_layers=[0, 2])
    path.write_text(json.dumps(qwen))
    with pytest.raises(InputError, match="only a leading run of dense blocks") as err:
        load_model(str(path))
    assert err.value.key_path == "mlp_only_layers"


def test_bad_moe_block_is_an_input_error(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("name: m\narchitecture: {layers: 2, hidden: 64, heads: 4, ffn_hidden: 128,"
                    " vocab: 100, moe: {routed_experts: 4, top_k: 8, expert_ffn_hidden: 32}}\n"
                    "training: {seq_len: 64, global_batch: 8}\n")
    with pytest.raises(InputError, match="top_k=8 exceeds routed_experts=4") as err:
        load_model(str(path))
    assert err.value.key_path == "architecture.moe.top_k"


def test_layer_interval_must_form_whole_groups(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("name: m\narchitecture: {layers: 7, hidden: 64, heads: 4, ffn_hidden: 128,"
                    " vocab: 100, moe: {routed_experts: 4, top_k: 2, expert_ffn_hidden: 32,"
                    " first_dense_layers: 1, layer_interval: 4}}\n"
                    "training: {seq_len: 64, global_batch: 8}\n")
    with pytest.raises(InputError, match="6 blocks after the leading dense ones") as err:
        load_model(str(path))
    assert err.value.key_path == "architecture.moe.layer_interval"


def test_first_dense_layers_land_on_the_first_stage():
    model, cluster = load_model("deepseek-v3"), load_cluster("dgx-h100-16n")
    st = Strategy(dp=16, pp=8, ep=8, zero=1, recompute="full")
    r = estimate(model, cluster, st)
    # Stage 0 holds the 3 dense blocks (no experts): less memory than an all-MoE middle stage.
    assert r.stages[0].memory_bytes["weights"] < r.stages[1].memory_bytes["weights"]


def test_fp32_router_runs_at_the_fp32_rate():
    """Megatron's --moe-router-dtype fp32 computes the router GEMM in fp32 (no tensor cores):
    the block's forward grows by the fp32-minus-bf16 router GEMM time, nothing else changes."""
    model = load_model("deepseek-v3")
    hw = from_cluster(load_cluster("hgx-h800-2n"))
    st = Strategy(dp=16, ep=16, mbs=1)
    fp32 = moe_block_times(model, st, hw)
    bf16_model = replace(model, arch=replace(model.arch, moe=replace(model.arch.moe, router_dtype="bf16")))
    bf16 = moe_block_times(bf16_model, st, hw)
    tokens, h, e = model.training.seq_len, model.arch.hidden, model.arch.moe.routed_experts
    extra = hw.gemm_time_s(tokens, h, e, "fp32") - hw.gemm_time_s(tokens, h, e, "bf16")
    assert extra > 0
    assert fp32.fwd_compute - bf16.fwd_compute == pytest.approx(extra, rel=1e-9)
