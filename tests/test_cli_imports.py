"""`fmplan --help` and `fmplan presets` start without the solver, the emitters or torch; estimate
without the solver (issue 13: the CLI imports each command's modules when the command runs)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("pulp", "highspy", "numpy", "torch", "planner.emit", "planner.ilp", "planner.search")


def _loaded_after(args: list[str]) -> list[str]:
    """Run `fmplan *args` in a fresh interpreter; the HEAVY modules it left imported."""
    code = ("import json, sys, runpy; sys.argv = ['fmplan', *%r]\n"
            "try:\n    runpy.run_module('cli', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith(%r))))"
            ) % (args, HEAVY)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("args", [["--help"], ["presets", "--json"], ["solve", "--help"],
                                  ["emit", "--help"], ["estimate", "--help"]])
def test_help_and_presets_import_no_solver_emitters_or_torch(args):
    assert _loaded_after(args) == []


def test_estimate_imports_no_solver_emitters_or_torch():
    assert _loaded_after(["estimate", "llama3-8b", "--cluster", "dgx-h100-1n", "--json"]) == []


def test_importing_the_cli_loads_no_cost_model_or_solver():
    code = ("import sys, cli.main; print(sorted(m for m in sys.modules "
            "if m.startswith(('cost_models', 'pulp', 'highspy', 'planner.emit', 'torch'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr[-2000:]


def test_emit_help_names_every_engine():
    from planner.emit import ENGINES

    out = subprocess.run([sys.executable, "-m", "cli", "emit", "--help"], capture_output=True,
                         text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT),
                                                   "COLUMNS": "200"}, timeout=120)
    assert all(name in out.stdout for name in ENGINES), out.stdout
