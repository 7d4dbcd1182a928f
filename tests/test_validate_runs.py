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

STEPS, WARMUP = 1, 3
PEAK_BOUND_PCT = 25.0
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
    st = PLANS[name]
    rows = compare(model, st, estimate(model, cluster, st), results[name], time_comparable=False)
    by_key = {}
    for row in rows:
        by_key.setdefault(row["quantity"], []).append(row["error_pct"])
    for key in ("weights", "grads", "optimizer"):
        assert max(abs(e) for e in by_key[key]) < 5.0, (key, by_key[key])
    assert max(abs(e) for e in by_key["peak"]) < PEAK_BOUND_PCT, by_key["peak"]
