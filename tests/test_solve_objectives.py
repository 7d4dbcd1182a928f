"""--objective cost (GPU-hours over node counts) and --deadline (fewest nodes in time)."""
from __future__ import annotations

from dataclasses import replace

import pytest

from cost_models.hardware import from_cluster
from planner.errors import InfeasibleError
from planner.loading import load_cluster, load_model
from planner.search import SearchOptions, search
from planner.solve import solve, solve_deadline
from planner.targets import ANY

TOKENS = 1e11


@pytest.fixture(scope="module")
def setup():
    model, cluster = load_model("llama3-8b"), load_cluster("dgx-h100-2n")
    return model, cluster, from_cluster(cluster)


def test_cost_objective_is_min_gpu_hours_over_node_counts(setup):
    model, cluster, hw = setup
    got = solve(model, cluster, hw, SearchOptions(limits=ANY, objective="cost", tokens=TOKENS, top_k=0))
    steps = TOKENS / model.training.tokens_per_step
    for nodes in range(1, cluster.nodes + 1):
        sized = replace(cluster, nodes=nodes)
        best = search(model, sized, hw, SearchOptions(limits=ANY, top_k=0)).best
        hours = best.cost.step_time_s * steps * sized.gpus / 3600
        assert got.extra["gpu_hours"] <= hours * (1 + 1e-6)
    assert got.plan.cluster.gpus == got.best.strategy.world


def test_deadline_gives_fewest_nodes(setup):
    model, cluster, hw = setup
    steps = TOKENS / model.training.tokens_per_step
    hours = [search(model, replace(cluster, nodes=n), hw, SearchOptions(limits=ANY, top_k=0))
             .best.cost.step_time_s * steps / 3600 for n in (1, 2)]
    assert min(hours[1:]) < hours[0], "more nodes must help for this test to mean anything"
    deadline_h = (hours[0] + min(hours[1:])) / 2  # one node is too slow, some larger count is not
    got = solve_deadline(model, cluster, hw, SearchOptions(limits=ANY, tokens=TOKENS, top_k=0), deadline_h)
    assert got.extra["nodes"] == next(n for n, h in zip((1, 2), hours) if h <= deadline_h)
    assert got.extra["train_hours"] <= deadline_h
    with pytest.raises(InfeasibleError):
        solve_deadline(model, cluster, hw, SearchOptions(limits=ANY, tokens=TOKENS, top_k=0), 1e-6)
