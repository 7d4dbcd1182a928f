"""The `fmplan` command as a user runs it: exit codes, messages, JSON keys, no torch import."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def fmplan(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"}
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)


def test_estimate_json_has_every_documented_key():
    out = fmplan("estimate", "llama3-70b", "--cluster", "dgx-h100-8n", "--tp", "8", "--pp", "4",
                 "--zero", "1", "--recompute", "selective", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    for key in ("step_time_s", "tokens_per_s", "mfu", "model_tflops_per_gpu",
                "hardware_tflops_per_gpu", "peak_memory_gib", "capacity_gib", "fits"):
        assert key in data
    assert set(data["memory_gib"]) == {"weights", "grads", "optimizer", "activations", "other"}
    assert set(data["time_s"]) == {"compute", "recompute", "tp_comm", "cp_comm", "ep_comm", "dp_comm_exposed",
                                   "pp_bubble", "pp_p2p", "optimizer"}
    assert data["fits"] is True and 0 < data["mfu"] < 1


def test_human_output_and_not_fitting_is_exit_0():
    out = fmplan("estimate", "llama3-70b", "--tp", "8", "--dp", "8")
    assert out.returncode == 0
    assert "does not fit" in out.stdout and "GPU memory" in out.stdout


def test_invalid_strategy_is_exit_1_with_factors():
    out = fmplan("estimate", "llama3-70b", "--tp", "8", "--pp", "2", "--dp", "2")
    assert out.returncode == 1
    assert "dp=2 tp=8 pp=2 cp=1 = 32 GPUs" in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_model_file_is_exit_1_with_key_path(tmp_path):
    bad = tmp_path / "m.yaml"
    bad.write_text("name: m\narchitecture: {layers: 2, hidden: 64, heads: 4, kv_head: 2,"
                   " ffn_hidden: 128, vocab: 100}\ntraining: {seq_len: 64, global_batch: 8}\n")
    out = fmplan("estimate", str(bad), "--cluster", "dgx-h100")
    assert out.returncode == 1
    assert "architecture.kv_head" in out.stderr and "did you mean `kv_heads`?" in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_cluster_suggests_presets():
    out = fmplan("estimate", "llama3-8b", "--cluster", "dgx-h10")
    assert out.returncode == 1 and "dgx-h100" in out.stderr


def test_usage_error_is_exit_2():
    assert fmplan("estimate", "llama3-8b", "--tpp", "2").returncode == 2


def test_presets_json_lists_everything():
    out = fmplan("presets", "--json")
    data = json.loads(out.stdout)
    assert {"llama3-405b", "gpt3-175b"} <= {m["name"] for m in data["models"]}
    assert {"dgx-a100", "dgx-h100", "dgx-h200"} <= {c["name"] for c in data["clusters"]}


@pytest.mark.parametrize("args", [
    ["--help"], ["estimate", "llama3-8b", "--json"],
    ["solve", "llama3-8b", "--cluster", "dgx-h100-1n", "--top", "0", "--json"],
    ["emit", "--help"], ["validate", "--help"], ["profile", "--help"]])
def test_cli_does_not_import_torch(args):
    code = ("import sys, runpy; sys.argv = ['fmplan', *%r]\n"
            "try:\n    runpy.run_module('cli', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')") % (args,)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.stdout.strip().endswith("NO-TORCH"), out.stdout[-500:] + out.stderr[-500:]
