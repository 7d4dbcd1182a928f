"""`fmplan emit` and the shared torchrun/SLURM launch scripts: exit codes, quoting of user paths,
multi-node rendezvous, the world-size guard, and no torch import on the emit path."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from emit_cases import dry_run, plan

ROOT = Path(__file__).resolve().parents[1]


def _fmplan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_emit_from_saved_plan_quotes_user_paths(tmp_path):
    plan("pp-first-last").write(tmp_path / "plan.yaml")
    nasty = "/data/my corpus/it's $HOME `x`"
    out = tmp_path / "out dir"
    result = _fmplan("emit", str(tmp_path / "plan.yaml"), "--target", "megatron", "--out", str(out),
                     "--env", f"DATA_PATH={nasty}")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["megatron.sh", "slurm.sbatch"]
    env = {k: v for k, v in os.environ.items() if k != "DATA_PATH"}
    argv = dry_run(out / "megatron.sh", {**env, "MEGATRON_LM_DIR": "/m", "TOKENIZER_MODEL": "t"})
    assert argv[argv.index("--data-path") + 1] == nasty


def test_emit_names_what_the_engine_cannot_express(tmp_path):
    plan("zero3-offload").write(tmp_path / "plan.yaml")
    result = _fmplan("emit", str(tmp_path / "plan.yaml"), "--target", "megatron",
                     "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "megatron cannot express ZeRO stage 3" in result.stderr
    assert "parameter offload" in result.stderr
    assert not (tmp_path / "out").exists()


def test_emit_rejects_unknown_target_and_variable(tmp_path):
    plan("gpt-dense").write(tmp_path / "plan.yaml")
    result = _fmplan("emit", str(tmp_path / "plan.yaml"), "--target", "jax", "--out", str(tmp_path))
    assert result.returncode == 1 and "unknown target 'jax'" in result.stderr
    result = _fmplan("emit", str(tmp_path / "plan.yaml"), "--target", "deepspeed", "--out",
                     str(tmp_path), "--env", "DATA_PATH=/x")
    assert result.returncode == 1 and "no variable DATA_PATH" in result.stderr


def test_launch_is_standalone_on_one_node_and_c10d_across_nodes(tmp_path):
    from planner.emit import emit
    emit(plan("pp-first-last"), "megatron", tmp_path)
    env = {"MEGATRON_LM_DIR": "/m", "DATA_PATH": "/d", "TOKENIZER_MODEL": "t"}
    argv = dry_run(tmp_path / "megatron.sh", {**env, "MASTER_ADDR": "node-0"})
    assert argv[:11] == ["torchrun", "--nnodes", "8", "--nproc-per-node", "8", "--rdzv-backend",
                         "c10d", "--rdzv-endpoint", "node-0:29500", "--rdzv-id",
                         f"fmplan-{plan('pp-first-last').digest()}"]
    emit(plan("gpt-dense"), "megatron", tmp_path / "one")
    argv = dry_run(tmp_path / "one" / "megatron.sh", env)
    assert argv[:6] == ["torchrun", "--standalone", "--nnodes", "1", "--nproc-per-node", "8"]


def test_launch_refuses_a_different_gpu_count(tmp_path):
    from planner.emit import emit
    emit(plan("gpt-dense"), "deepspeed", tmp_path)
    result = subprocess.run(["bash", str(tmp_path / "deepspeed.sh")], capture_output=True, text=True,
                            env={**os.environ, "TRAIN_SCRIPT": "t.py", "NNODES": "1",
                                 "NPROC_PER_NODE": "4", "FMPLAN_DRY_RUN": "1"})
    assert result.returncode == 1
    assert "this plan needs 8 GPUs" in result.stderr


def test_slurm_script_runs_one_launcher_per_node(tmp_path):
    from planner.emit import emit
    emit(plan("cp"), "megatron", tmp_path)
    text = (tmp_path / "slurm.sbatch").read_text()
    assert "#SBATCH --nodes=2" in text and "#SBATCH --ntasks-per-node=1" in text
    assert "srun --kill-on-bad-exit=1 bash megatron.sh" in text
    assert subprocess.run(["bash", "-n", str(tmp_path / "slurm.sbatch")]).returncode == 0


def test_emit_path_does_not_import_torch():
    code = ("import sys, planner.emit, cli.cmd_emit; "
            "print(sorted(m for m in ('torch', 'deepspeed', 'torchtitan', 'megatron') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.stdout.strip() == "[]", result.stderr
