"""The cost model against published measured runs (../shared/data): the dev-set targets."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.published import DATA  # noqa: E402

pytestmark = pytest.mark.skipif(not DATA.is_file(), reason="../shared/data is not beside the repo")


def test_step_time_error_on_published_runs_is_within_target():
    from bench.accuracy import run
    rows = [r for r in run() if "error_pct" in r]
    errors = [abs(r["error_pct"]) for r in rows]
    assert len(rows) >= 30
    assert sum(errors) / len(errors) <= 10.0
    assert max(errors) <= 20.0
