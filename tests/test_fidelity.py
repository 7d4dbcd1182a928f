"""The cost model against published measured runs: bench/fidelity.py's plumbing and the accuracy
it claims, per group and stack (dev set beside the repo, extra cited runs in bench/runs/)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fidelity import DATA, EXTRA, evaluate, seq_drift, spearman, summary  # noqa: E402
from planner.runs import load_records  # noqa: E402

needs_dev = pytest.mark.skipif(not DATA.is_file(), reason="../shared/data is not beside the repo")


def test_spearman_is_rank_correlation_with_ties():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2, 3], [5, 5, 6, 7]) == pytest.approx(1.0)


@needs_dev
def test_dev_groups_are_within_their_stated_error():
    result = evaluate([(r, True) for r in load_records(DATA)], logo=False)
    groups = result["groups"]
    assert sum(g["runs"] for g in groups.values()) >= 75
    for name, g in groups.items():
        bound = 12.0 if name == "megatron_readme_h100_weak_scaling" else 10.0
        assert g["mape_pct"] <= bound, (name, g["mape_pct"])
    assert summary(result)["mape_pct"] <= 7.0
    assert summary(result, dev_only=True) == summary(result)
    assert groups["mpt_llmfoundry_benchmarks"]["stack"] == "llm-foundry-2023"
    assert groups["narayanan2021_table1"]["stack"] == "megatron-core"


@needs_dev
def test_llm_foundry_ratio_does_not_drift_with_sequence_length():
    result = evaluate([(r, True) for r in load_records(DATA)], logo=False)
    drift = seq_drift(result["rows"], ("mpt_llmfoundry",))
    assert min(drift) == 512 and max(drift) == 32768
    assert all(0.9 <= ratio <= 1.1 for ratio in drift.values()), drift


def test_extra_runs_are_cited_and_checked_groups_hold():
    records = [r for path in EXTRA for r in load_records(path)]
    assert len(records) >= 100 and all(r["source"]["ref"] for r in records)
    h100 = [(r, False) for r in records if r["group"] == "llmfoundry_h100_bf16"]
    result = evaluate(h100, logo=False)
    assert result["groups"]["llmfoundry_h100_bf16"]["mape_pct"] <= 10.0
    assert all(r["rho"] >= 0.9 for r in result["spearman"])
