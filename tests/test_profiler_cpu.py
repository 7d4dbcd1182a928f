"""`fmplan profile` for real on the CPU (tiny sizes, 2 gloo workers), its effect on estimate(),
resume, Ctrl-C, and the measured-vs-analytic block check. CUDA twins are marked and skipped."""
from __future__ import annotations

import json
import warnings

import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from cli.main import app  # noqa: E402
from cost_models import profile_format as pf  # noqa: E402
from cost_models.estimate import estimate  # noqa: E402
from cost_models.hardware import from_cluster  # noqa: E402
from cost_models.memory import block_activations  # noqa: E402
from cost_models.profiler import compute, run  # noqa: E402
from cost_models.profiler.memory import analytic_terms, measure_block  # noqa: E402
from cost_models.profiler.settings import Settings  # noqa: E402
from planner.errors import FmplanWarning  # noqa: E402
from planner.loading import load_model  # noqa: E402
from planner.specs import ClusterSpec, DeviceSpec  # noqa: E402
from planner.strategy import Strategy  # noqa: E402

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TINY = Settings(warmup=1, repeats=2, max_call_s=0.05, gemm_sizes=(32, 64),
                attention_seq_lens=(64,), attention_heads=2, attention_head_dim=16,
                stream_bytes=(1 << 16,), copy_bytes=(1 << 16,), adam_params=(1 << 12,),
                comm_bytes=(1 << 10, 1 << 16), model_mbs=(1,), model_tp=(1, 2), model_cp=(1,))


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(run, "settings_for", lambda kind, quick: TINY)


def cpu_cluster() -> ClusterSpec:
    """A deliberately optimistic CPU 'cluster' (10 TFLOP/s, 100 GB/s links) built in the test."""
    device = DeviceSpec(name="CPU-test", peak_tflops={"fp32": 10.0, "bf16": 10.0}, hbm_gib=16,
                        hbm_bw_GBps=100, gemm_efficiency=((0.001, 0.5), (10, 0.8)))
    return ClusterSpec(name="cpu-test", nodes=1, gpus_per_node=2, device=device,
                       intra_node_bw_GBps=100, inter_node_bw_GBps=100)


def profile_cli(out, *extra, as_json=True):
    return CliRunner().invoke(app, ["profile", "--device", "cpu", "--model", "llama-tiny",
                                    "--out", str(out), *(["--json"] if as_json else []), *extra])


@pytest.mark.slow
def test_cpu_profile_resumes_adds_collectives_and_slows_estimate(tmp_path, tiny):
    out = tmp_path / "cpu.json"
    first = profile_cli(out, "--nproc", "1", as_json=False)
    assert first.exit_code == 0, first.output
    assert "measured rates" in first.stdout and "MemTracker" in first.stdout
    assert "not measured comm" in first.stdout
    one = pf.load(out)
    assert {g.dtype for g in one.samples["gemm"]} == {"fp32", "bf16"}
    assert any(g.source.startswith("llama-tiny") and "tp=2" in g.source for g in one.samples["gemm"])
    assert one.samples["attention"] and one.samples["stream"] and one.samples["host_optimizer"]
    assert "comm" in one.skipped and "no host-device link" in one.skipped["host_copy"]
    assert one.memory_checks[0]["config"]["model"] == "llama-tiny"

    second = profile_cli(out, "--nproc", "2")
    assert second.exit_code == 0, second.output
    two = pf.load(out)
    assert set(one.samples["gemm"]) <= set(two.samples["gemm"])  # kept, not measured again
    assert {c.collective for c in two.samples["comm"]} == {
        "all_reduce", "all_gather", "reduce_scatter", "all_to_all", "p2p"}
    assert all(c.tier == "intra" and c.group_size == 2 for c in two.samples["comm"])
    assert "comm" not in two.skipped and two.device.count == 2
    assert json.loads(second.stdout)["fitted"]["links"]["intra"]["bandwidth_GBps"] > 0

    cluster = cpu_cluster()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FmplanWarning)  # same kind of device: no warning
        hw = pf.apply_profile(from_cluster(cluster), out, cluster)
    model = load_model("llama-tiny")
    st = Strategy(dp=1, tp=2)
    preset, measured = estimate(model, cluster, st), estimate(model, cluster, st, hw)
    assert measured.time_s["compute"] > preset.time_s["compute"]
    assert measured.time_s["tp_comm"] > preset.time_s["tp_comm"]  # gloo is far below 100 GB/s


def test_ctrl_c_keeps_what_was_measured(tmp_path, tiny, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(compute, "measure_attention", interrupt)
    out = tmp_path / "partial.json"
    result = profile_cli(out, "--precision", "fp32")
    assert result.exit_code == 130
    kept = pf.load(out)
    assert kept.samples["gemm"] and not kept.samples["attention"]
    assert {g.dtype for g in kept.samples["gemm"]} == {"fp32"}


def test_resume_on_another_device_is_refused(tmp_path, tiny):
    out = tmp_path / "gpu.json"
    other = pf.Profile(
        device=pf.DeviceIdentity(name="NVIDIA H100 80GB HBM3", kind="cuda", memory_bytes=1, count=1, threads=1),
        software=pf.Software(torch="2.13.0", python="3.11"), host="h", created_utc="t", updated_utc="t")
    pf.save(other, out)
    result = profile_cli(out)
    assert result.exit_code == 1 and "choose another --out" in str(result.exception)


def test_block_check_matches_analytic_where_the_tensors_are_the_same():
    model = load_model("llama-tiny")
    check = measure_block(model, tp=2)
    analytic = analytic_terms(model, 2, 1)
    assert sum(analytic.values()) == block_activations(model, Strategy(tp=2, sp=False)).none
    # Linear inputs and the down-projection input are the same tensors in both.
    for term in ("qkv", "proj", "up", "down"):
        assert check.measured_bytes[term] == analytic[term]
    # Unfused fp32 RMSNorm, unfused RoPE and SwiGLU store more than the fused kernels assumed.
    for term in ("attn_norm", "core", "act"):
        assert check.measured_bytes[term] > analytic[term]
    assert check.memtracker_activation_bytes == sum(check.measured_bytes.values())
    assert check.flops["measured_fwd"] == check.flops["analytic_fwd"]
    states = check.states_bytes
    assert states["optimizer"]["measured"] == pytest.approx(states["optimizer"]["analytic"], rel=1e-3)


@pytest.mark.cuda
@needs_cuda
def test_cuda_profile_quick(tmp_path, tiny):
    """CUDA twin of the CPU profile test: host copies measured, bf16 GEMMs, CUDA version."""
    out = tmp_path / "gpu.json"
    result = CliRunner().invoke(app, ["profile", "--device", "cuda", "--nproc", "1", "--out",
                                      str(out), "--json"])
    assert result.exit_code == 0, result.output
    prof = pf.load(out)
    assert prof.device.kind == "cuda" and prof.samples["host_copy"] and prof.software.cuda
    assert {"bf16", "fp32"} <= {g.dtype for g in prof.samples["gemm"]}


@pytest.mark.slow
def test_under_torchrun_rank0_writes_and_others_join_the_collectives(tmp_path):
    """The multi-node path (torchrun's own arguments), here with 2 local ranks."""
    import os
    import shutil
    import subprocess
    import sys
    out = tmp_path / "tr.json"
    torchrun = shutil.which("torchrun") or pytest.skip("torchrun not on PATH")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    done = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "cli", "profile",
                           "--device", "cpu", "--quick", "--precision", "fp32", "--out", str(out),
                           "--json"], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    prof = pf.load(out)
    assert prof.device.count == 2 and prof.software.comm_backend == "gloo"
    assert {c.group_size for c in prof.samples["comm"]} == {2}
    assert json.loads(done.stdout)["fitted"]["links"]["intra"]["bandwidth_GBps"] > 0
