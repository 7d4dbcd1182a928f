"""`fmplan calibrate`: recovers known constants, refuses what the runs cannot support, and turns
bad run files into clear errors."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from cost_models.calibrate import Observation, fit
from cost_models.hardware import from_cluster
from planner.errors import InputError
from planner.runs import load_records, observations

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "bench" / "runs" / "llmfoundry.yaml"
TRUE = {"gemm_scale": 0.85, "attention_scale": 0.7}


def _fmplan(*args: str) -> subprocess.CompletedProcess:
    """Run the CLI as a user does (its error handler sets the exit code and message)."""
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def _records(ids_like: tuple[str, ...]) -> list[dict]:
    recs = [r for r in load_records(RUNS) if r["group"] == "llmfoundry_a100_80gb"]
    return [r for r in recs if any(k in r["id"] for k in ids_like)]


def _synthetic(records: list[dict], constants: dict[str, float]) -> list[Observation]:
    """Observations whose 'measured' value is the model's own prediction under `constants`."""
    return [replace(o, measured=o.predict(o.hardware.scaled(constants))) for o in observations(records)]


def test_fit_recovers_the_constants_runs_were_generated_with():
    obs = _synthetic(_records(("-1b-", "-7b-")), TRUE)
    result = fit(obs, ["gemm_scale", "attention_scale"], sweeps=3)
    for name, value in TRUE.items():
        assert result.constants[name] == pytest.approx(value, rel=0.02)
    assert result.after_mape_pct < 0.5 < result.before_mape_pct


def test_one_run_fits_at_most_one_constant():
    obs = _synthetic(_records(("-7b-s32768",)), TRUE)
    assert len(obs) == 1
    result = fit(obs)
    assert len(result.constants) == 1
    assert any("support at most 1" in why for why in result.refused.values())


def test_insensitive_constants_are_refused_with_the_reason():
    obs = _synthetic(_records(("-1b-s512", "-1b-s1024")), {})
    result = fit(obs, ["inter_node_bw_scale", "gemm_scale"])
    assert "inter_node_bw_scale" in result.refused
    assert "barely depend" in result.refused["inter_node_bw_scale"]


def test_bad_run_files_get_clear_errors(tmp_path):
    not_list = tmp_path / "a.yaml"
    not_list.write_text("runs: 3\n")
    with pytest.raises(InputError, match="non-empty YAML list"):
        load_records(not_list)
    record = yaml.safe_load(RUNS.read_text())[0]
    del record["model"]["hidden"]
    missing = tmp_path / "b.yaml"
    missing.write_text(yaml.safe_dump([record]))
    with pytest.raises(InputError) as err:
        load_records(missing)
    assert err.value.key_path == "[0].model.hidden"
    result = _fmplan("calibrate", str(missing))
    assert result.returncode == 1 and "[0].model.hidden" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_writes_a_calibration_that_estimate_applies(tmp_path):
    out = tmp_path / "cal.json"
    runs = tmp_path / "runs.yaml"
    runs.write_text(yaml.safe_dump(_records(("-1b-s512", "-1b-s8192", "-3b-s4096"))))
    result = CliRunner().invoke(app, ["calibrate", str(runs), "--out", str(out),
                                      "--constants", "gemm_scale"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["stack"] == "llm-foundry-2023" and data["device"] == "A100"
    assert set(data["constants"]) == {"gemm_scale"}
    args = ["estimate", "configs/models/llama3-8b.yaml", "--cluster", "a100-80gb-roce", "--zero", "3",
            "--dp", "8", "--stack", "llm-foundry-2023", "--json"]
    plain = json.loads(_fmplan(*args).stdout)
    calibrated = _fmplan(*args, "--profile", str(out))
    assert calibrated.returncode == 0 and calibrated.stderr == "", calibrated.stderr
    calibrated = json.loads(calibrated.stdout)
    assert calibrated["step_time_s"] != pytest.approx(plain["step_time_s"], rel=1e-3)


def test_calibrate_refuses_runs_from_several_stacks(tmp_path):
    mixed = tmp_path / "mixed.yaml"
    recs = yaml.safe_load(RUNS.read_text())
    mixed.write_text(yaml.safe_dump([recs[0], recs[-1]]))  # an H100 and an A100 run
    result = _fmplan("calibrate", str(mixed))
    assert result.returncode == 1 and "several stacks or GPUs" in result.stderr


def test_stack_calibration_matches_the_preset_hardware():
    from planner.loading import load_cluster
    from planner.stacks import load_stack
    cluster, stack = load_cluster("a100-80gb-roce"), load_stack("llm-foundry-2023")
    bare = from_cluster(cluster, replace(stack, calibration={}))
    assert from_cluster(cluster, stack) == bare.scaled(stack.calibration["A100"])
