"""The report's pipeline timeline and memory bars: drawn from the cost model's per-stage times and
memory parts, so the picture's makespan is the predicted step time and every bar its peak."""
from __future__ import annotations

import pytest

from cost_models.estimate import estimate
from cost_models.hardware import from_cluster
from planner.loading import load_cluster, load_model
from planner.report.content import MEMORY_PARTS, build_report
from planner.report.schedule import Op, dependency, rank_order, run_asap
from planner.report.timeline import build_timeline
from planner.search import SearchOptions
from planner.solve import solve
from planner.strategy import Strategy
from planner.targets import TARGETS

INTERLEAVED = ("gpt3-175b", "dgx-a100-128n",
               Strategy(dp=16, tp=8, pp=8, vpp=3, zero=1, sp=True, recompute="selective"))
MOE = ("mixtral-8x7b", "dgx-h100-8n", Strategy(dp=16, pp=4, ep=8, zero=1, recompute="selective"))
MOE_OVERLAP = ("mixtral-8x7b", "dgx-h100-8n",
               Strategy(dp=16, pp=4, ep=8, zero=1, recompute="selective", ep_comm_overlap=True))


@pytest.fixture(scope="module")
def solved_dense():
    """A dense 1F1B plan chosen by the solver: uneven split, recompute on some stages."""
    model, cluster = load_model("llama3-70b"), load_cluster("dgx-h100-8n")
    hw = from_cluster(cluster)
    outcome = solve(model, cluster, hw, SearchOptions(limits=TARGETS["any"], time_limit_s=60))
    st = outcome.plan.strategy
    assert st.pp > 1 and st.vpp == 1  # the regime under test (its split is uneven today: 19,20,21,20)
    return model, outcome.plan.cluster, st


def _resolved(name: str, cluster: str, st: Strategy):
    model, cl = load_model(name), load_cluster(cluster)
    return model, cl, st


def _cases(solved_dense):
    return {"dense 1F1B (solved)": solved_dense, "interleaved": _resolved(*INTERLEAVED),
            "moe": _resolved(*MOE), "moe + ep overlap": _resolved(*MOE_OVERLAP)}


def test_makespan_is_the_predicted_step_time(solved_dense):
    for name, (model, cluster, st) in _cases(solved_dense).items():
        hw = from_cluster(cluster)
        tl, cost = build_timeline(model, st, hw)
        predicted = estimate(model, cluster, st, hw).step_time_s
        assert cost.step_time_s == predicted
        assert tl.makespan_s == pytest.approx(predicted, rel=1e-2), name
        assert tl.makespan_s <= predicted * (1 + 1e-12), name  # the closed form is conservative


def test_even_stages_match_the_closed_form_exactly():
    model, cluster, st = _resolved(*INTERLEAVED)   # 96 layers on 8 x 3 chunks: even split
    tl, cost = build_timeline(model, st, from_cluster(cluster))
    assert tl.pipeline_s == pytest.approx(tl.formula_pipeline_s, rel=1e-12)
    assert tl.makespan_s == pytest.approx(cost.step_time_s, rel=1e-12)


def test_blocks_are_the_cost_models_stage_times(solved_dense):
    for name, (model, cluster, st) in _cases(solved_dense).items():
        tl, cost = build_timeline(model, st, from_cluster(cluster))
        for stage in cost.stages:
            in_pipeline = sum(b.end_s - b.start_s for b in tl.blocks
                              if b.stage == stage.stage and b.micro_batch >= 0)
            unpaired = 0.0 if not st.ep_comm_overlap else in_pipeline - tl.micro_batches * stage.time_per_microbatch_s
            assert unpaired >= 0.0
            assert in_pipeline - unpaired == pytest.approx(
                tl.micro_batches * stage.time_per_microbatch_s, rel=1e-9), name


def test_schedule_respects_dependencies_and_never_overlaps(solved_dense):
    for name, (model, cluster, st) in _cases(solved_dense).items():
        tl, _ = build_timeline(model, st, from_cluster(cluster))
        spans: dict[Op, tuple[float, float]] = {}
        for b in tl.blocks:
            if b.phase:
                op = Op(b.stage, b.phase, b.micro_batch, b.chunk)
                start, end = spans.get(op, (b.start_s, b.end_s))
                spans[op] = (min(start, b.start_s), max(end, b.end_s))
        assert len(spans) == 2 * st.pp * st.vpp * tl.micro_batches
        for op, (start, _) in spans.items():
            dep = dependency(op, st.pp, st.vpp)
            assert dep is None or spans[dep][1] <= start + 1e-12, (name, op)
        for stage in range(st.pp):
            rows = sorted((b for b in tl.blocks if b.stage == stage), key=lambda b: b.start_s)
            for a, b in zip(rows, rows[1:]):
                assert b.start_s >= a.end_s - 1e-12, (name, a, b)


def test_asap_run_orders_and_dependencies():
    p, v, m = 4, 2, 8
    for i in range(p):
        order = rank_order(i, p, v, m)
        assert sorted((o.phase, o.micro_batch, o.chunk) for o in order) == sorted(
            (ph, mb, c) for ph in ("fwd", "bwd") for mb in range(m) for c in range(v))
        warmup = next(k for k, o in enumerate(order) if o.phase == "bwd") - 1
        assert warmup == (p - i - 1) * 2 + (v - 1) * p   # Megatron's interleaved warm-up
    times = run_asap(p, v, m, lambda op: 1.0 if op.phase == "fwd" else 2.0)
    for op, (start, _) in times.items():
        dep = dependency(op, p, v)
        if dep is not None:
            assert start >= times[dep][1]
    # Even stages: (p - 1)/(v m) bubble (Narayanan et al. 2021 §2.2.2): m v + p - 1 chunk slots.
    assert max(e for _, e in times.values()) == pytest.approx((m * v + p - 1) * 3.0)
    one_f_one_b = run_asap(p, 1, m, lambda op: 1.0 if op.phase == "fwd" else 2.0)
    assert max(e for _, e in one_f_one_b.values()) == pytest.approx((m + p - 1) * 3.0)


def test_memory_bars_sum_to_each_stage_peak(solved_dense):
    for name, (model, cluster, st) in _cases(solved_dense).items():
        report = build_report(model, cluster, st, from_cluster(cluster))
        assert len(report.memory) == st.pp
        for bar in report.memory:
            assert set(bar.parts_bytes) == set(MEMORY_PARTS)
            assert min(bar.parts_bytes.values()) >= 0.0
            assert sum(bar.parts_bytes.values()) == pytest.approx(bar.peak_bytes, rel=1e-12), name
            assert bar.peak_bytes == report.cost.stages[bar.stage].peak_bytes
        assert report.memory[-1].parts_bytes["buffers"] > 0  # logits on the last stage
    model, cluster, st = solved_dense
    report = build_report(model, cluster, st, from_cluster(cluster))
    recomputing = [s for s, (full, sel) in enumerate(st.stage_recompute) if full or sel]
    assert recomputing and all(report.memory[s].parts_bytes["transient"] > 0 for s in recomputing)
