"""Real 2-process CPU runs of small plans through `fmplan validate`'s runtime (one torchrun
launch for all of them): the loss must match a single-process reference (the parallelism is
right) and the measured memory must match the analytic model.

Bounds: weights, grads and optimizer states within 5 % per rank. Both sides count bytes exactly
(fp32 runtime, fp32 prediction); what is left is the TP-replicated norm weights, which the model
divides by tp (+0.1 % here).

Peak within PEAK_BOUND_PCT = 25 %. The states are exact and make up 65-80 % of the peak at this
size; the rest (activations and transients) is under-predicted by 16-100 % (measured, see
bench/validate_accuracy.py) because the analytic model counts only the tensors a fused
implementation stores, while this eager runtime also keeps unfused RoPE and RMSNorm
intermediates, backward temporaries (logit gradients), FSDP2's unsharded root group, and one
pipeline receive buffer per micro-batch. 100 % of 20-35 % of the peak is at most ~25 %; the
worst plan measured is interleaved PP at +21 %.
"""
from __future__ import annotations

from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")

from cost_models.estimate import estimate  # noqa: E402
from planner.loading import load_cluster, load_model  # noqa: E402
from planner.runtime.launch import RunRequest, launch  # noqa: E402
from planner.runtime.reference import reference_losses  # noqa: E402
from planner.strategy import Strategy  # noqa: E402
from planner.validation import compare, runtime_model  # noqa: E402
from validate_helpers import assert_memory_matches  # noqa: E402

STEPS, WARMUP = 1, 3
LOSS_RTOL = 2e-5

PLANS = {
    "dp": Strategy(dp=2),
    "zero3": Strategy(dp=2, zero=3),
    "tp_sp": Strategy(tp=2, sp=True),
    "pp_1f1b": Strategy(pp=2, stage_layers=(1, 3)),
    "pp_interleaved": Strategy(pp=2, vpp=2, stage_layers=(2, 2)),
    "recompute_full": Strategy(dp=2, recompute="full"),
    "recompute_selective": Strategy(dp=2, recompute="selective"),
    "offload": Strategy(dp=2, zero=3, offload_optimizer=True, offload_params=True),
}


def tiny_model():
    """llama-tiny narrowed so eight plans run in about a minute on two cores."""
    base = load_model("llama-tiny")
    arch = replace(base.arch, hidden=128, heads=4, kv_heads=2, ffn_hidden=352, vocab=512)
    return runtime_model(replace(base, arch=arch, training=replace(
        base.training, seq_len=64, global_batch=4)))


@pytest.fixture(scope="module")
def runs():
    model = tiny_model()
    cluster = replace(load_cluster("dgx-h100"), gpus_per_node=2)
    requests = [RunRequest(run_id=k, model=model, strategy=st) for k, st in PLANS.items()]
    results = launch(requests, device="cpu", steps=STEPS, warmup=WARMUP)
    return model, cluster, results


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PLANS))
def test_loss_matches_single_process(runs, name):
    model, _, results = runs
    expected = reference_losses(model, WARMUP + STEPS, tp=PLANS[name].tp)
    for rank in results[name]:
        assert rank["losses"] == pytest.approx(expected, rel=LOSS_RTOL), rank["rank"]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PLANS))
def test_memory_matches_prediction(runs, name):
    model, cluster, results = runs
    assert_memory_matches(model, cluster, PLANS[name], results[name])


CUDA_PLANS = ("dp", "zero3", "tp_sp", "pp_1f1b")


@pytest.mark.cuda
@pytest.mark.slow
def test_cuda_runs_match_reference_and_prediction():
    """GPU twin of the CPU tests above (NCCL). Losses are compared more loosely (CUDA and CPU
    fp32 kernels round differently); the peak is not checked: at this size the CUDA peak is
    dominated by cuBLAS workspaces, which the analytic model leaves to its allowance."""
    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA GPUs")
    model = tiny_model()
    cluster = replace(load_cluster("dgx-h100"), gpus_per_node=2)
    results = launch([RunRequest(run_id=k, model=model, strategy=PLANS[k]) for k in CUDA_PLANS],
                     device="cuda", steps=STEPS, warmup=WARMUP)
    for name in CUDA_PLANS:
        st = PLANS[name]
        expected = reference_losses(model, WARMUP + STEPS, tp=st.tp)
        for rank in results[name]:
            assert rank["losses"] == pytest.approx(expected, rel=1e-4), (name, rank["rank"])
            assert rank["cuda_peak_bytes"] > 0
        rows = compare(model, st, estimate(model, cluster, st), results[name], time_comparable=True)
        for row in rows:
            if row["quantity"] in ("weights", "grads", "optimizer"):
                assert abs(row["error_pct"]) < 5.0, (name, row)


@pytest.mark.slow
def test_cli_json_reports_every_rank(tmp_path):
    """`fmplan validate --json` end to end (its own torchrun launch) on the DP plan."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from planner.plan import Plan

    model = load_model("llama-tiny")
    small = replace(model, arch=tiny_model().arch, training=replace(
        model.training, seq_len=64, global_batch=4))
    cluster = replace(load_cluster("dgx-h100"), gpus_per_node=2)
    plan = tmp_path / "plan.yaml"
    Plan(model=small, cluster=cluster, strategy=Strategy(dp=2)).write(plan)
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "cli", "validate", str(plan), "--steps", "1",
                             "--json"], capture_output=True, text=True, cwd=root,
                            env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin",
                                 "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["world"] == 2 and len(report["losses"]) == 4
    assert {r["rank"] for r in report["rows"]} == {0, 1}
    weights = [r for r in report["rows"] if r["quantity"] == "weights"]
    assert all(abs(r["error_pct"]) < 5.0 for r in weights)
    assert any("only memory is comparable" in note for note in report["notes"])
