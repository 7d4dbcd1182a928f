"""Measured vs predicted memory of the expert-parallel plans of tests/test_validate_moe_runs.py
(moe-tiny: 4 layers, the first dense, 4 experts top-2 plus a shared expert; gloo on CPU), 2
ranks, next to the same model with a dense MLP in every block ("dense_twin"), whose transient
error is the eager runtime's share that has nothing to do with experts, and to an expert
tensor-parallel plan over data-parallel ranks (dp2_etp2); then the 4-rank plans. Run:
    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python bench/validate_moe_accuracy.py
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from planner.loading import load_model  # noqa: E402
from planner.strategy import Strategy  # noqa: E402
from planner.validation import runtime_model  # noqa: E402
from test_validate_moe_runs import PLANS, PLANS_4  # noqa: E402
from validate_accuracy import print_table  # noqa: E402


def main() -> None:
    model = runtime_model(load_model("moe-tiny"))
    dense = replace(model, name="moe-tiny dense twin", arch=replace(model.arch, moe=None))
    runs = {name: (model, st) for name, st in PLANS.items()}
    runs["dp2_etp2"] = (model, Strategy(dp=2, etp=2))
    runs["dense_twin"] = (dense, Strategy(dp=2))
    print_table(runs, "moe-tiny (fp32), 2 CPU ranks: predicted / measured MiB (error %)")
    print_table({name: (model, st) for name, st in PLANS_4.items()},
                "moe-tiny (fp32), 4 CPU ranks: predicted / measured MiB (error %)")


if __name__ == "__main__":
    main()
