"""Shared checks of the 2-process validate runs (dense and MoE)."""
from __future__ import annotations

from cost_models.estimate import estimate
from planner.validation import compare

STATES_BOUND_PCT = 5.0
"""Weights, grads and optimizer states: the issue's bound."""
PEAK_BOUND_PCT = 25.0
"""Peak: states are exact and 65-80 % of the peak at test size, the rest is under-predicted by
16-100 % (eager-kernel extras and transients), which bounds the total near 25 %."""


def assert_memory_matches(model, cluster, st, ranks) -> None:
    """Every rank's measured states within STATES_BOUND_PCT and peak within PEAK_BOUND_PCT."""
    rows = compare(model, st, estimate(model, cluster, st), ranks, time_comparable=False)
    by_key: dict[str, list[float]] = {}
    for row in rows:
        by_key.setdefault(row["quantity"], []).append(row["error_pct"])
    for key in ("weights", "grads", "optimizer"):
        assert max(abs(e) for e in by_key[key]) < STATES_BOUND_PCT, (key, by_key[key])
    assert max(abs(e) for e in by_key["peak"]) < PEAK_BOUND_PCT, by_key["peak"]
