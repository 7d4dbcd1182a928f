"""Wall time of `fmplan profile` on this machine (CPU): --quick (target: <= 60 s on the 2-core CI
machine) and the full run, each with 2 gloo workers and the llama-tiny model. Prints a table.

    PYTHONPATH=$PWD python bench/profile_walltime.py [--model llama-tiny] [--nproc 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(mode: list[str], model: str, nproc: int) -> tuple[float, int, float]:
    """(wall seconds including interpreter and torch start-up, samples, in-process seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "p.json"
        cmd = [sys.executable, "-m", "cli", "profile", "--device", "cpu", "--nproc", str(nproc),
               "--model", model, "--out", str(out), "--json", *mode]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, check=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        wall = time.perf_counter() - start
        report = json.loads(done.stdout)
        return wall, report["new_samples"], report["wall_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="llama-tiny")
    parser.add_argument("--nproc", type=int, default=2)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'mode':8} {'wall s':>8} {'in-process s':>13} {'samples':>8}")
    for name, mode in (("quick", ["--quick"]), ("full", [])):
        wall, samples, inside = run(mode, args.model, args.nproc)
        print(f"{name:8} {wall:8.1f} {inside:13.1f} {samples:8d}")


if __name__ == "__main__":
    main()
