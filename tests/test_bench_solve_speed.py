"""bench/solve_speed.py's plumbing on a tiny case: worker processes per source tree, the
old/new comparison (medians, ratio, same plan, certified) and the scaling rows."""
from __future__ import annotations

from bench.solve_speed import ROOT, compare, print_comparison, print_scaling, same_plan, scaling


def test_compare_runs_both_trees_and_finds_the_same_plan(capsys):
    rows = compare([("llama-tiny", "dgx-h100-1n")], baseline=ROOT, repeat=1, time_limit_s=60)
    (row,) = rows
    assert row["gpus"] == 8 and row["candidates"] > 0
    assert row["old_s"] > 0 and row["new_s"] > 0
    assert row["ratio"] == row["old_s"] / row["new_s"]
    assert row["same_plan"] and row["old_status"] == row["new_status"] == "optimal"
    print_comparison(rows, ROOT, 1)
    out = capsys.readouterr().out
    assert "llama-tiny on dgx-h100-1n" in out and " yes " in out and "optimal/optimal" in out


def test_same_plan_needs_the_same_strategy_and_step_time():
    run = {"plan": "dp=8 tp=1 pp=1 cp=1 mbs=1 zero=1", "split": [], "step_s": 1.0}
    assert same_plan(run, dict(run))
    assert not same_plan(run, {**run, "step_s": 1.001})
    assert not same_plan(run, {**run, "plan": "dp=4 tp=2 pp=1 cp=1 mbs=1 zero=1"})
    assert not same_plan(run, {**run, "plan": None})


def test_scaling_rows_report_time_memory_and_candidates(capsys):
    rows = scaling(60, nodes=(1, 2), models=("llama-tiny",), layer_counts=(4, 8),
                   layers_case=("llama-tiny", "dgx-h100-1n"))
    assert [r["gpus"] for r in rows] == [8, 16, 8, 8]
    assert [r["layers"] for r in rows] == [None, None, 4, 8]
    assert all(r["rss_mib"] > 0 and r["wall_s"] > 0 and r["stats"]["candidates"] > 0 for r in rows)
    assert rows[1]["stats"]["candidates"] > rows[0]["stats"]["candidates"]
    print_scaling(rows)
    assert "llama-tiny" in capsys.readouterr().out
