"""solve on mixture-of-experts models: its best equals brute force over every outer candidate
(expert-parallel degrees included) x split x recompute through `evaluate()`."""
from __future__ import annotations

from dataclasses import replace

import pytest

from cost_models.hardware import from_cluster
from planner.search import SearchOptions, search
from planner.specs import Architecture, ModelSpec, MoESpec, Training
from planner.targets import ANY, TARGETS
from solve_helpers import check_against_brute_force, hardware_with_capacity, small_cluster, tiny_moe_model

REL = 1e-6


def _check(model, cluster, hw, limits=ANY):
    return check_against_brute_force(model, cluster, hw, limits, rel=REL)


@pytest.mark.parametrize("first_dense, layers, interval", [(0, 4, 1), (1, 4, 1), (0, 4, 2)])
def test_moe_memory_not_binding_and_binding(first_dense, layers, interval):
    model = tiny_moe_model(layers=layers, first_dense=first_dense, interval=interval)
    cluster = small_cluster()
    free = _check(model, cluster, from_cluster(cluster))
    assert free.best.strategy.ep >= 1
    capacity = 0.5 * free.best.cost.peak_memory_bytes
    got = _check(model, cluster, hardware_with_capacity(cluster, capacity))
    assert got is not None and got.best.cost.peak_memory_bytes <= capacity


def test_moe_infeasible():
    model, cluster = tiny_moe_model(), small_cluster()
    assert _check(model, cluster, hardware_with_capacity(cluster, 1e6)) is None


def test_moe_under_megatron_limits():
    model, cluster = tiny_moe_model(first_dense=1), small_cluster()
    free = _check(model, cluster, from_cluster(cluster))
    _check(model, cluster, hardware_with_capacity(cluster, 0.6 * free.best.cost.peak_memory_bytes),
           TARGETS["megatron"])


def test_deepspeed_target_skips_moe_models():
    model, cluster = tiny_moe_model(), small_cluster()
    got = search(model, cluster, from_cluster(cluster), SearchOptions(limits=TARGETS["deepspeed"], top_k=0))
    assert got.best is None


def test_moe_optimum_with_the_all_to_all_overlap():
    """A small MoE whose all-to-all crosses nodes (one GPU per node) and whose memory forces two
    micro-batches: the optimum pairs them to overlap the exchange, and equals brute force over a
    space that holds both the overlapped and the plain variant of every candidate."""
    moe = MoESpec(routed_experts=8, top_k=4, expert_ffn_hidden=256)
    arch = Architecture(layers=2, hidden=512, heads=8, kv_heads=4, ffn_hidden=2048, vocab=4096,
                        mlp="swiglu", norm="rmsnorm", moe=moe)
    model = ModelSpec(name="a2a-bound-moe", arch=arch,
                      training=Training(seq_len=256, global_batch=16))
    cluster = replace(small_cluster(), nodes=4, gpus_per_node=1)
    free = search(model, cluster, from_cluster(cluster), SearchOptions(limits=ANY, top_k=0))
    assert not free.best.strategy.ep_comm_overlap  # one micro-batch: nothing to pair
    got = _check(model, cluster, hardware_with_capacity(cluster, 0.8 * free.best.cost.peak_memory_bytes))
    best = got.best.strategy
    assert best.ep_comm_overlap and best.ep > 1 and got.best.cost.micro_batches >= 2
