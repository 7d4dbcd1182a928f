"""Predicted vs measured step time on published runs (../shared/data/published_runs_dev.yaml).

Usage: python bench/accuracy.py [--json]
Prints one row per record and the mean / max absolute percentage error. Every record uses the
same presets and constants; unstated settings follow the rules in bench/published.py.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.published import choose_unstated, load_records, to_case  # noqa: E402
from cost_models.block import block_times  # noqa: E402
from cost_models.estimate import estimate  # noqa: E402
from cost_models.hardware import from_cluster  # noqa: E402
from planner.loading import load_cluster  # noqa: E402


def run() -> list[dict]:
    """Evaluate every record; returns rows with predicted and measured values."""
    rows = []
    for rec in load_records():
        case = to_case(rec)
        cluster = load_cluster(case.cluster_name, nodes=case.nodes)
        if case.measured_layer_ms is not None:
            st = case.strategy
            bt = block_times(case.model, st, from_cluster(cluster))
            recompute = {"full": bt.recompute_full, "selective": bt.recompute_selective}.get(st.recompute, 0.0)
            pred = (1e3 * bt.fwd, 1e3 * (bt.bwd + recompute))
            meas = case.measured_layer_ms
            rows.append({"id": rec["id"], "kind": "layer fwd+bwd ms", "strategy": st.describe(),
                         "predicted": sum(pred), "measured": sum(meas),
                         "detail": f"fwd {pred[0]:.1f}/{meas[0]:.1f} bwd {pred[1]:.1f}/{meas[1]:.1f}"})
            continue
        if case.measured_step_s is None:
            continue
        if case.strategy is None:
            chosen = choose_unstated(case)
            if chosen is None:
                rows.append({"id": rec["id"], "kind": "step s", "strategy": "no fitting setting",
                             "predicted": None, "measured": case.measured_step_s, "detail": ""})
                continue
            st, cost = chosen
        else:
            st = case.strategy
            cost = estimate(case.model, cluster, st)
        rows.append({"id": rec["id"], "kind": "step s", "strategy": st.describe(),
                     "predicted": cost.step_time_s, "measured": case.measured_step_s,
                     "detail": f"mem {cost.peak_memory_bytes / 2**30:.1f} GiB"
                               f"{'' if cost.fits else ' (does not fit)'}"})
    for row in rows:
        if row["predicted"] is not None:
            row["error_pct"] = 100 * (row["predicted"] - row["measured"]) / row["measured"]
    return rows


def main() -> None:
    rows = run()
    errors = [abs(r["error_pct"]) for r in rows if "error_pct" in r]
    summary = {"records": len(rows), "mape_pct": sum(errors) / len(errors), "max_ape_pct": max(errors)}
    if "--json" in sys.argv:
        print(json.dumps({"rows": rows, "summary": summary}, indent=2))
        return
    print(f"{'record':44} {'kind':16} {'pred':>9} {'meas':>9} {'err %':>7}  strategy / detail")
    for r in rows:
        pred = f"{r['predicted']:.3f}" if r["predicted"] is not None else "-"
        err = f"{r['error_pct']:+.1f}" if "error_pct" in r else "-"
        print(f"{r['id']:44} {r['kind']:16} {pred:>9} {r['measured']:>9.3f} {err:>7}  "
              f"{r['strategy']} | {r['detail']}")
    print(f"\nrecords: {summary['records']}  MAPE: {summary['mape_pct']:.1f}%  "
          f"max APE: {summary['max_ape_pct']:.1f}%")


if __name__ == "__main__":
    main()
