"""Same inputs, same bytes: `fmplan solve --out` writes byte-identical plan.yaml and launch files
across runs, PYTHONHASHSEED values and solver thread counts (FMPLAN_SOLVER_THREADS), for a dense
model on one node and a mixture-of-experts model on two."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "llama3-8b-torchtitan": ("configs/models/llama3-8b.yaml", "dgx-h100-1n", "torchtitan"),
    "llama3-8b-deepspeed": ("configs/models/llama3-8b.yaml", "dgx-h100-1n", "deepspeed"),
    "mixtral-8x7b-megatron": ("mixtral-8x7b", "dgx-h100-2n", "megatron"),
}
RUNS = [  # (PYTHONHASHSEED, FMPLAN_SOLVER_THREADS): the first twice (run to run)
    ("0", "1"), ("12345", "4"), ("0", "1"),
]


def _solve(out: Path, model: str, cluster: str, target: str, seed: str, threads: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": seed,
           "FMPLAN_SOLVER_THREADS": threads}
    proc = subprocess.run([sys.executable, "-m", "cli", "solve", model, "--cluster", cluster,
                           "--target", target, "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "certified optimal" in proc.stdout  # a time-limited search could differ run to run


@pytest.mark.parametrize("case", CASES)
def test_solve_outputs_are_byte_identical(case, tmp_path):
    model, cluster, target = CASES[case]
    outputs = []
    for i, (seed, threads) in enumerate(RUNS):
        out = tmp_path / f"run{i}"
        _solve(out, model, cluster, target, seed, threads)
        outputs.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert len(outputs[0]) >= 3  # plan.yaml, the launch script, slurm.sbatch (+ ds_config.json)
    for i, files in enumerate(outputs[1:], 1):
        assert files.keys() == outputs[0].keys()
        for name in files:
            assert files[name] == outputs[0][name], f"{name} differs in run {i} {RUNS[i]}"


def test_solver_threads_must_be_a_sane_count(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FMPLAN_SOLVER_THREADS": "lots"}
    proc = subprocess.run([sys.executable, "-m", "cli", "solve", "llama-tiny", "--cluster",
                           "dgx-h100-1n"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "FMPLAN_SOLVER_THREADS must be a whole number of threads from 1 to 256" in proc.stderr
