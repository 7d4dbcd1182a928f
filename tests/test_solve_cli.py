"""`fmplan solve` end to end through `python -m cli`: exit codes, clean --json, deterministic
plan.yaml, the infeasibility message."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TWO_GPUS = """name: two-h100
nodes: 1
gpus_per_node: 2
gpu: H100-SXM-80GB
intra_node_bw_GBps: 450
inter_node_bw_GBps: 50
host_mem_gib: 512
"""


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "cli", "solve", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_json_is_one_clean_object(tmp_path):
    proc = _run("llama-tiny", "--cluster", "dgx-h100-1n", "--json", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)  # nothing else on stdout (HiGHS banner swallowed)
    assert payload["plan"]["solver"]["status"] == "optimal"
    assert payload["search"]["ilps_solved"] >= 1
    assert payload["files"] == [str(tmp_path / "plan.yaml")]
    assert len(payload["runners_up"]) == 3


def test_plan_yaml_is_deterministic(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        assert _run("llama-tiny", "--cluster", "dgx-h100-1n", "--out", str(out)).returncode == 0
    text = (first / "plan.yaml").read_bytes()
    assert text == (second / "plan.yaml").read_bytes()
    assert b"wall" not in text


def test_plan_round_trips_and_matches_estimate(tmp_path):
    from cost_models.estimate import estimate
    from planner.plan import load_plan
    assert _run("llama-tiny", "--cluster", "dgx-h100-1n", "--out", str(tmp_path)).returncode == 0
    plan = load_plan(tmp_path / "plan.yaml")
    again = estimate(plan.model, plan.cluster, plan.strategy)
    assert again.fits
    assert abs(again.step_time_s - plan.predicted["step_time_s"]) <= 1e-5 * again.step_time_s


def test_infeasible_exits_3_naming_the_resource(tmp_path):
    cluster = tmp_path / "two.yaml"
    cluster.write_text(TWO_GPUS)
    proc = _run("llama3-70b", "--cluster", str(cluster), "--target", "megatron")
    assert proc.returncode == 3
    assert "GPU memory binds" in proc.stderr and "GiB per GPU" in proc.stderr
    assert "more GPUs" in proc.stderr and "would fit" in proc.stderr
    assert proc.stdout == ""


def test_bad_target_is_input_error():
    proc = _run("llama-tiny", "--target", "nemo")
    assert proc.returncode == 1
    assert "--target" in proc.stderr


def test_emit_target_without_emitters_is_explained(tmp_path):
    proc = _run("llama-tiny", "--cluster", "dgx-h100-1n", "--target", "megatron", "--out", str(tmp_path))
    try:
        import planner.emit  # noqa: F401  (present once the emit branch is merged)
        assert proc.returncode == 0, proc.stderr
    except ModuleNotFoundError:
        assert proc.returncode == 4
        assert "plan.yaml written" in proc.stderr
    assert (tmp_path / "plan.yaml").is_file()
