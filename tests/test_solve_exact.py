"""solve's best equals brute force over every strategy (outer candidate x split x recompute),
evaluated through `evaluate()`: memory not binding, binding, infeasible, and under a target."""
from __future__ import annotations

import random
from dataclasses import replace

import pytest

from cost_models.hardware import from_cluster
from planner.targets import ANY, TARGETS
from solve_helpers import check_against_brute_force, hardware_with_capacity, small_cluster, tiny_model

REL = 1e-6


def _instances():
    rng = random.Random(7)
    return [tiny_model(layers=rng.choice([3, 4, 5]), hidden=rng.choice([256, 512]),
                       seq=rng.choice([64, 128]), batch=rng.choice([4, 8])) for _ in range(2)]


def _check(model, cluster, hw, limits=ANY):
    return check_against_brute_force(model, cluster, hw, limits, rel=REL)


@pytest.mark.parametrize("model", _instances(), ids=["a", "b"])
def test_memory_not_binding(model):
    cluster = small_cluster()
    _check(model, cluster, from_cluster(cluster))


@pytest.mark.parametrize("model", _instances(), ids=["a", "b"])
def test_memory_binding(model):
    cluster = small_cluster()
    free = _check(model, cluster, from_cluster(cluster))
    capacity = 0.6 * free.best.cost.peak_memory_bytes
    hw = hardware_with_capacity(cluster, capacity)
    got = _check(model, cluster, hw)
    assert got is not None, "capacity chosen so that something still fits"
    assert got.best.cost.peak_memory_bytes <= capacity
    assert got.best.objective >= free.best.objective


def test_infeasible():
    model, cluster = tiny_model(), small_cluster()
    assert _check(model, cluster, hardware_with_capacity(cluster, 1e6)) is None


@pytest.mark.parametrize("target", ["megatron", "deepspeed", "torchtitan"])
def test_target_limits(target):
    """Under a target the best equals brute force over what that engine can express
    (`EngineLimits.violations`), with memory binding so that recompute rules matter."""
    model, cluster = tiny_model(layers=4), small_cluster()
    free = _check(model, cluster, from_cluster(cluster))
    hw = hardware_with_capacity(cluster, 0.6 * free.best.cost.peak_memory_bytes)
    limits = replace(TARGETS[target], known_models=None)  # any shape: test the rules, not names
    assert _check(model, cluster, hw, limits) is not None
