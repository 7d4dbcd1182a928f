"""Measured vs predicted memory of small plans run on 2 CPU processes (gloo).

Prints predicted / measured MiB and the error per rank for the plans of
tests/test_validate_runs.py plus ZeRO-1, ZeRO-2 and a GPT-style model (GELU, LayerNorm, biases,
learned positions) under TP+SP, and MemTracker's own breakdown at the peak. Run:
    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python bench/validate_accuracy.py
"""
from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from cost_models.estimate import estimate  # noqa: E402
from planner.runtime.launch import RunRequest, launch  # noqa: E402
from planner.validation import compare  # noqa: E402
from test_validate_runs import PLANS, STEPS, WARMUP, tiny_model  # noqa: E402
from dataclasses import replace  # noqa: E402
from planner.loading import load_cluster  # noqa: E402
from planner.strategy import Strategy  # noqa: E402

MIB = 2 ** 20


def plans() -> dict:
    """name -> (model, strategy)."""
    model = tiny_model()
    gpt = replace(model, name="gpt-tiny", arch=replace(
        model.arch, mlp="gelu", norm="layernorm", linear_bias=True, learned_positions=True,
        kv_heads=model.arch.heads))
    runs = {name: (model, st) for name, st in PLANS.items()}
    runs["zero1"] = (model, Strategy(dp=2, zero=1))
    runs["zero2"] = (model, Strategy(dp=2, zero=2))
    runs["gpt_tp_sp"] = (gpt, Strategy(tp=2, sp=True))
    return runs


def main() -> None:
    print_table(plans(), "llama-tiny / gpt-tiny (fp32), 2 CPU ranks: predicted / measured MiB (error %)")


def print_table(runs: dict, title: str) -> None:
    """Run `runs` (name -> (model, strategy), one world size) in one launch and print the
    comparison table."""
    world = max(st.world for _, st in runs.values())
    cluster = replace(load_cluster("dgx-h100"), gpus_per_node=world)
    results = launch([RunRequest(run_id=k, model=m, strategy=st) for k, (m, st) in runs.items()],
                     device="cpu", steps=STEPS, warmup=WARMUP)
    table = Table(title=title)
    quantities = ("weights", "grads", "optimizer", "transient", "peak")
    for col in ("plan", "rank", "stage", *quantities, "tracker: act+temp / params / other"):
        table.add_column(col, justify="right")
    for name, (model, st) in runs.items():
        rows = compare(model, st, estimate(model, cluster, st), results[name], time_comparable=False)
        for rank in results[name]:
            cells = []
            for q in quantities:
                (row,) = [r for r in rows if r["rank"] == rank["rank"] and r["quantity"] == q]
                cells.append(f"{row['predicted'] / MIB:.2f} / {row['measured'] / MIB:.2f} "
                             f"({row['error_pct']:+.1f}%)")
            t = rank["tracker_peak_bytes"]
            tracker = (f"{(t['activations'] + t['temporaries']) / MIB:.2f} / {t['params'] / MIB:.2f}"
                       f" / {t['other'] / MIB:.2f}")
            table.add_row(name, str(rank["rank"]), str(rank["stage"]), *cells, tracker)
    Console(width=220).print(table)


if __name__ == "__main__":
    main()
