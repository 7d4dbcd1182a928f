"""The profile file (round trip, versions, errors, merge), its fits, and how it changes estimate().

No torch here: profiles are built from synthetic samples whose true rates are known.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from cli.main import app
from cost_models import profile_format as pf
from cost_models.comm import collective_time_s
from cost_models.estimate import estimate
from cost_models.hardware import Link, from_cluster
from cost_models.profile_fit import fit_profile
from planner.errors import FmplanWarning, InputError
from planner.strategy import Strategy

LINK = Link(bandwidth_Bps=120e9, latency_s=5e-6)
"""The 'true' link the synthetic collectives are generated from."""


def comm_samples(link: Link, tier: str = "intra") -> tuple:
    return tuple(pf.CommSample(collective=kind, group_size=n, tier=tier, bytes=b,
                               time_s=collective_time_s(kind, b, n, link))
                 for kind in ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "p2p")
                 for n in ((2,) if kind == "p2p" else (2, 4, 8))
                 for b in (1 << 12, 1 << 20, 1 << 26))


def make_profile(*, name: str = "NVIDIA H100 80GB HBM3", kind: str = "cuda",
                 gemm_flops_per_s: float = 600e12, link: Link = LINK) -> pf.Profile:
    gemms = tuple(pf.GemmSample(dtype="bf16", m=s, k=s, n=s, time_s=2.0 * s ** 3 / gemm_flops_per_s,
                                source="sweep") for s in (1024, 4096, 16384))
    attn = (pf.AttentionSample(dtype="bf16", batch=1, heads=32, kv_heads=8, seq_len=4096,
                               head_dim=128, fwd_time_s=1e-3, bwd_time_s=3e-3, source="sweep"),)
    return pf.Profile(
        device=pf.DeviceIdentity(name=name, kind=kind, memory_bytes=80 << 30, count=8, threads=8),
        software=pf.Software(torch="2.13.0", python="3.11.7", cuda="12.8", driver="570.1",
                             comm_backend="nccl"),
        host="node0", created_utc="2026-11-29T07:00:00+00:00", updated_utc="2026-11-29T07:00:00+00:00",
        kernel_overhead_s=(3e-6,),
        samples={"gemm": gemms, "attention": attn,
                 "stream": (pf.StreamSample(op="copy", bytes=1 << 30, time_s=(1 << 30) / 3.0e12),),
                 "host_copy": (pf.CopySample(direction="h2d", pinned=True, bytes=1 << 28, time_s=(1 << 28) / 50e9),
                               pf.CopySample(direction="d2h", pinned=True, bytes=1 << 28, time_s=(1 << 28) / 50e9)),
                 "host_optimizer": (pf.OptimizerSample(optimizer="adamw", params=1 << 24, threads=8, time_s=0.01),),
                 "comm": comm_samples(link)},
        skipped={}, memory_checks=({"config": {"model": "m", "tp": 1}},))


def test_round_trip_is_exact_and_deterministic(tmp_path):
    profile = make_profile()
    path = tmp_path / "p.json"
    pf.save(profile, path)
    first = path.read_bytes()
    loaded = pf.load(path)
    assert loaded == pf.canonical(profile)
    pf.save(loaded, path)
    assert path.read_bytes() == first
    doc = json.loads(first)
    assert doc["schema_version"] == pf.SCHEMA_VERSION
    assert doc["fitted"]["links"]["intra"]["bandwidth_GBps"] == pytest.approx(120.0)


@pytest.mark.parametrize("edit, where, needle", [
    (lambda d: d.update(schema_version=99), "schema_version", "expected 1, got 99"),
    (lambda d: d["gemm"][0].update(m="big"), "gemm[0].m", "expected an integer"),
    (lambda d: d["comm"][1].update(collective="allreduce"), "comm[1].collective", "all_reduce"),
    (lambda d: d["device"].pop("kind"), "device.kind", "missing required key"),
    (lambda d: d.update(gemms=[]), "gemms", "did you mean `gemm`"),
])
def test_bad_files_name_the_key_path(tmp_path, edit, where, needle):
    path = tmp_path / "p.json"
    pf.save(make_profile(), path)
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError) as err:
        pf.load(path)
    assert str(path) in str(err.value) and where in str(err.value) and needle in str(err.value)


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        pf.load(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InputError, match="cannot parse"):
        pf.load(tmp_path / "bad.json")


def test_merge_keeps_old_samples_and_adds_missing():
    old = make_profile()
    old = replace(old, samples={**old.samples, "comm": old.samples["comm"][:5]},
                  skipped={"host_copy": "not this time"})
    slower = tuple(replace(s, time_s=2 * s.time_s) for s in make_profile().samples["comm"])
    new = replace(make_profile(), samples={**make_profile().samples, "comm": slower},
                  updated_utc="2026-11-30T00:00:00+00:00")
    merged = pf.merge(old, new)
    assert merged.samples["comm"][:5] == old.samples["comm"][:5]  # kept, not replaced
    assert len(merged.samples["comm"]) == len(slower)
    assert merged.updated_utc == new.updated_utc and merged.created_utc == old.created_utc
    assert "host_copy" not in merged.skipped  # the merged file has copies now


def test_fits_recover_the_generating_link_and_rates():
    fitted = fit_profile(make_profile())
    assert fitted.links["intra"]["bandwidth_GBps"] == pytest.approx(120.0, rel=1e-6)
    assert fitted.links["intra"]["latency_us"] == pytest.approx(5.0, rel=1e-6)
    ar = fitted.comm["all_reduce"][8]
    assert ar.bandwidth_GBps == pytest.approx(120.0, rel=1e-6)
    assert ar.alpha_s == pytest.approx(2 * 7 * 5e-6, rel=1e-6)
    assert fitted.gemm_best_flops_per_s["bf16"] == pytest.approx(600e12)
    assert fitted.host_copy_GBps["pinned"] == pytest.approx(50.0)
    assert fitted.stream_bandwidth_GBps == pytest.approx(3000.0)


def apply(tmp_path, profile, cluster):
    path = tmp_path / "p.json"
    pf.save(profile, path)
    return pf.apply_profile(from_cluster(cluster), path, cluster)


def test_matching_profile_reproduces_measured_rates_without_warning(tmp_path, dgx_h100_8n, recwarn):
    hw = apply(tmp_path, make_profile(), dgx_h100_8n)
    assert not [w for w in recwarn if issubclass(w.category, FmplanWarning)]
    assert hw.peak("bf16") == from_cluster(dgx_h100_8n).peak("bf16")  # MFU stays vs datasheet
    for size in (4096, 16384):  # the model gives back the measured GEMM times
        assert hw.gemm_time_s(size, size, size, "bf16") == pytest.approx(2.0 * size ** 3 / 600e12, rel=1e-9)
    # 1024^3 "measured" at 3.6 us is below launch (3 us) + store (0.7 us): kept at half its time.
    assert hw.gemm_time_s(1024, 1024, 1024, "bf16") > 2.0 * 1024 ** 3 / 600e12
    assert hw.gemm_curves.keys() == {"bf16"}  # fp8 keeps the preset curve
    assert hw.intra == Link(pytest.approx(120e9), pytest.approx(5e-6))
    assert hw.inter == from_cluster(dgx_h100_8n).inter  # one node measures only the intra tier
    assert hw.hbm_Bps == pytest.approx(3.0e12) and hw.host_device_Bps == pytest.approx(50e9)
    assert hw.source.endswith("p.json")


def test_slow_profile_slows_compute_and_warns_on_another_device(tmp_path, llama70b, dgx_h100_8n):
    cpu = make_profile(name="CPU AMD EPYC", kind="cpu", gemm_flops_per_s=80e9)
    with pytest.warns(FmplanWarning, match="CPU AMD EPYC"):
        hw = apply(tmp_path, cpu, dgx_h100_8n)
    st = Strategy(dp=8, tp=8, pp=1, sp=True, zero=1)
    base = estimate(llama70b, dgx_h100_8n, st)
    slow = estimate(llama70b, dgx_h100_8n, st, hw)
    assert slow.time_s["compute"] > 100 * base.time_s["compute"]


def test_faster_measured_link_lowers_tp_comm(tmp_path, llama70b, dgx_h100_8n):
    st = Strategy(dp=8, tp=8, pp=1, sp=True, zero=1)
    base = estimate(llama70b, dgx_h100_8n, st)
    preset_link = from_cluster(dgx_h100_8n).intra
    fast = apply(tmp_path, make_profile(link=Link(2 * preset_link.bandwidth_Bps, preset_link.latency_s)),
                 dgx_h100_8n)
    slow = apply(tmp_path, make_profile(link=Link(0.5 * preset_link.bandwidth_Bps, preset_link.latency_s)),
                 dgx_h100_8n)
    fast_tp = estimate(llama70b, dgx_h100_8n, st, fast).time_s["tp_comm"]
    slow_tp = estimate(llama70b, dgx_h100_8n, st, slow).time_s["tp_comm"]
    assert fast_tp < base.time_s["tp_comm"] < slow_tp


def test_estimate_cli_uses_the_profile(tmp_path):
    path = tmp_path / "p.json"
    pf.save(make_profile(name="CPU AMD EPYC", kind="cpu", gemm_flops_per_s=80e9), path)
    runner = CliRunner()
    args = ["estimate", "llama3-8b", "--cluster", "dgx-h100", "--tp", "2", "--json"]
    base = json.loads(runner.invoke(app, args).stdout)
    with pytest.warns(FmplanWarning):
        result = runner.invoke(app, [*args, "--profile", str(path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["step_time_s"] > 10 * base["step_time_s"]
    bad = runner.invoke(app, [*args, "--profile", str(tmp_path / "missing.json")])
    assert bad.exit_code == 1 and "profile file not found" in str(bad.exception)


def test_cli_paths_without_torch():
    code = ("import sys, cli.main, cost_models.profile_format, cost_models.profile_fit; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
