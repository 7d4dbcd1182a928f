"""`fmplan validate` pieces that need no processes: the runtime's model flags, fp32 state
accounting, scale-down, the comparison rows, the pipeline split, and the CLI's input errors."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from cost_models.estimate import estimate
from cost_models.memory import state_bytes_per_param
from planner.loading import load_cluster, load_model
from planner.plan import Plan
from planner.strategy import Strategy
from planner.validation import compare, predicted_states, runtime_model, scale_down

ROOT = Path(__file__).resolve().parents[1]


def test_runtime_model_describes_pure_fp32():
    model = runtime_model(load_model("gpt3-1.3b"))
    assert model.training.precision == "fp32"
    assert not model.training.master_weights_fp32 and model.training.grads_fp32
    assert not model.arch.dropout


def test_fp32_states_are_4_4_8_bytes_and_zero3_shards_them():
    model = runtime_model(load_model("llama-tiny"))
    plain = state_bytes_per_param(model, Strategy(dp=2))
    assert (plain.weights, plain.grads, plain.optimizer) == (4.0, 4.0, 8.0)
    sharded = state_bytes_per_param(model, Strategy(dp=2, zero=3))
    assert (sharded.weights, sharded.grads, sharded.optimizer) == (2.0, 2.0, 4.0)


def test_mixed_precision_states_unchanged():
    mixed = state_bytes_per_param(load_model("llama-tiny"), Strategy(dp=2))
    assert (mixed.weights, mixed.grads, mixed.optimizer) == (2.0, 4.0, 12.0)


def test_offload_under_zero3_moves_the_grad_shard_to_the_host():
    model = load_model("llama-tiny")
    st = Strategy(dp=4, zero=3, offload_optimizer=True, offload_params=True)
    states = state_bytes_per_param(model, st)
    assert (states.weights, states.grads, states.optimizer) == (0.0, 0.0, 0.0)
    assert states.host == pytest.approx((12 + 4 + 2) / 4)


def test_predicted_states_split_the_host_figure_back_by_category():
    model = runtime_model(load_model("llama-tiny"))
    on_gpu = predicted_states(model, Strategy(dp=2, zero=3), 0, 4)
    offloaded = predicted_states(model, Strategy(dp=2, zero=3, offload_optimizer=True,
                                                 offload_params=True), 0, 4)
    assert offloaded == on_gpu  # fp32: the host keeps exactly what the GPU no longer does


def test_scale_down_keeps_layers_heads_and_degrees():
    model = load_model("llama3-70b")
    st = Strategy(dp=2, tp=8, pp=4, vpp=2, sp=True, zero=1, stage_layers=(19, 21, 21, 19),
                  stage_recompute=((19, 0), (10, 5), (0, 0), (0, 0)))
    small, same, notes = scale_down(runtime_model(model), st)
    assert same == st
    assert (small.arch.layers, small.arch.heads, small.arch.kv_heads) == (80, 64, 8)
    assert small.arch.hidden == 64 * 16 and small.arch.ffn_hidden % (8 * st.tp) == 0
    assert small.training.seq_len <= 128 and small.training.seq_len % st.tp == 0
    m = st.micro_batches(small)
    assert m <= 2 * st.pp * st.vpp and m % st.pp == 0
    st.validate(small)
    assert "layers, heads, kv_heads and every degree kept" in notes[0]


def test_compare_reports_percentage_errors_per_rank():
    model = runtime_model(load_model("llama-tiny"))
    cluster = replace(load_cluster("dgx-h100"), gpus_per_node=2)
    st = Strategy(dp=2)
    predicted = estimate(model, cluster, st)
    states = predicted_states(model, st, 0, 4)
    rank = {"rank": 1, "stage": 0, "median_step_s": 0.5, "cuda_peak_bytes": None,
            "states_bytes": {"weights": {"cpu": states.weights * 1.1},
                             "grads": {"cpu": states.grads}, "optimizer": {"cpu": states.optimizer}},
            "tracker_peak_bytes": {"total": 2 * predicted.peak_memory_bytes}}
    rows = {r["quantity"]: r for r in compare(model, st, predicted, [rank], time_comparable=False)}
    assert rows["weights"]["error_pct"] == pytest.approx(10.0)
    assert rows["grads"]["error_pct"] == pytest.approx(0.0)
    assert rows["peak"]["measured"] == 2 * predicted.peak_memory_bytes
    assert rows["step_time"]["predicted"] is None and rows["step_time"]["error_pct"] is None


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def _write_plan(path: Path, model_name: str, st: Strategy, gpus: int) -> None:
    model = load_model(model_name)
    cluster = replace(load_cluster("dgx-h100"), gpus_per_node=gpus)
    Plan(model=model, cluster=cluster, strategy=st).write(path)


def test_cli_refuses_a_plan_too_big_for_this_machine(tmp_path):
    plan = tmp_path / "plan.yaml"
    _write_plan(plan, "llama3-70b", Strategy(dp=2, zero=3), 2)
    result = _cli("validate", str(plan))
    assert result.returncode == 1
    assert "host memory" in result.stderr and "--scale-down" in result.stderr


def test_cli_rejects_too_few_warmup_steps(tmp_path):
    plan = tmp_path / "plan.yaml"
    _write_plan(plan, "llama-tiny", Strategy(dp=2), 2)
    result = _cli("validate", str(plan), "--warmup", "1")
    assert result.returncode == 1 and "--warmup >= 3" in result.stderr


def test_validate_help_does_not_import_torch():
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom cli.main import app\n"
            "r = CliRunner().invoke(app, ['validate', '--help'])\n"
            "assert r.exit_code == 0, r.output\nassert '--scale-down' in r.output\n"
            "assert 'torch' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr


def test_profile_without_profile_support_says_only_memory_compares(monkeypatch, tmp_path):
    from cost_models.hardware import from_cluster
    from planner.validation import _with_profile

    monkeypatch.setitem(sys.modules, "cost_models.profile_format", None)  # import -> ImportError
    cluster = load_cluster("dgx-h100")
    notes: list[str] = []
    hardware, comparable = _with_profile(from_cluster(cluster), tmp_path / "p.json", cluster, notes)
    assert not comparable and "only memory is comparable" in notes[0]


@pytest.mark.parametrize("st, words", [
    (Strategy(dp=1, cp=2), "context parallelism"),
    (Strategy(dp=2, zero=1, offload_optimizer=True), "CPUOffloadPolicy"),
])
def test_strategies_the_runtime_cannot_run_are_refused_up_front(st, words):
    from planner.errors import InputError
    from planner.validation import check_runnable

    with pytest.raises(InputError, match=words):
        check_runnable(st)


def test_mla_models_are_refused_up_front():
    from planner.errors import InputError
    from planner.validation import check_runnable

    with pytest.raises(InputError, match="multi-head latent attention"):
        check_runnable(Strategy(dp=8), load_model("deepseek-v3"))


@pytest.mark.parametrize("st,words", [
    (Strategy(dp=2, ep=2, zero=2), "zero <= 1, got zero=2"),
    (Strategy(dp=4, ep=2, zero=3, offload_optimizer=True, offload_params=True), "zero <= 1, got zero=3"),
    (Strategy(dp=2, ep=2, cp=2), "context parallelism"),
])
def test_moe_layouts_the_runtime_cannot_run_are_refused(st, words):
    from planner.errors import InputError
    from planner.validation import check_runnable

    with pytest.raises(InputError, match=words):
        check_runnable(st, load_model("moe-tiny"))


def test_moe_with_a_capacity_factor_is_refused():
    """The runtime routes dropless; a capacity factor would be compared with padded buffers."""
    from planner.errors import InputError
    from planner.validation import check_runnable

    model = load_model("moe-tiny")
    padded = replace(model, arch=replace(model.arch, moe=replace(model.arch.moe, capacity_factor=1.25)))
    with pytest.raises(InputError, match="capacity_factor=1.25"):
        check_runnable(Strategy(dp=2, ep=2), padded)


def test_moe_expert_tensor_pipeline_and_zero1_plans_are_runnable():
    from planner.validation import check_runnable

    for st in (Strategy(dp=2, ep=2), Strategy(dp=4, ep=2, recompute="full"),
               Strategy(dp=2, tp=2, sp=True, ep=2, etp=2, zero=1), Strategy(tp=2, sp=True, etp=2),
               Strategy(pp=2, vpp=2, dp=2, ep=2), Strategy(dp=4, ep=2, zero=1)):
        check_runnable(st, load_model("moe-tiny"))


def test_zero1_under_tensor_and_pipeline_parallelism_is_runnable():
    from planner.validation import check_runnable

    check_runnable(Strategy(dp=2, tp=2, sp=True, zero=1))
    check_runnable(Strategy(dp=2, pp=2, zero=1))


def test_scale_down_shrinks_expert_widths_and_keeps_the_routing():
    model = load_model("qwen2-57b-a14b")
    st = Strategy(dp=8, ep=4)
    small, _, notes = scale_down(model, st)
    moe, big = small.arch.moe, model.arch.moe
    assert (moe.routed_experts, moe.top_k, moe.first_dense_layers) == (
        big.routed_experts, big.top_k, big.first_dense_layers)
    assert 0 < moe.expert_ffn_hidden < big.expert_ffn_hidden and moe.expert_ffn_hidden % 8 == 0
    assert (moe.shared_ffn_hidden > 0) == (big.shared_ffn_hidden > 0)
    assert any("expert_ffn_hidden" in n for n in notes)
    st.validate(small, load_cluster("dgx-h100"))


def test_moe_prediction_splits_dense_and_expert_states():
    """Per-GPU states of an MoE plan: the dense part is replicated over dp, the routed experts
    are E/ep per GPU; at 16 bytes per parameter (fp32 weights, grads and Adam moments)."""
    from cost_models.flops import mlp_params

    model = runtime_model(load_model("moe-tiny"))
    cluster = replace(load_cluster("dgx-h100"), gpus_per_node=2)
    arch, moe = model.arch, model.arch.moe
    expert = mlp_params(arch, moe.expert_ffn_hidden)
    moe_layers = arch.layers - moe.first_dense_layers
    weights = {ep: estimate(model, cluster, Strategy(dp=2, ep=ep)).stages[0].memory_bytes["weights"]
               for ep in (1, 2)}
    assert weights[1] - weights[2] == 4 * moe_layers * (moe.routed_experts // 2) * expert


def test_moe_activations_widen_under_fp32_like_dense_ones():
    """The MoE extras (expert rows, FFN tensors, shared experts) are 16-bit tensors under bf16 and
    4-byte ones under fp32, as the dense block's; the router probabilities are fp32 in both."""
    from cost_models.memory import block_activations
    from cost_models.moe import moe_block_activations

    st = Strategy(dp=2, ep=2)
    bf16 = load_model("moe-tiny")
    fp32 = runtime_model(bf16)
    s, e = bf16.training.seq_len * st.mbs, bf16.arch.moe.routed_experts
    router = 4 * s * e

    def extra(model):
        return moe_block_activations(model, st).none - block_activations(model, st).none

    assert extra(fp32) == pytest.approx(2 * (extra(bf16) - router) + router)
