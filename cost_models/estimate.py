"""`estimate()`: step time, per-GPU memory and MFU of one strategy.

Reads top to bottom: validate the strategy, evaluate its per-candidate terms, cost each pipeline
stage (time per micro-batch, memory at its peak), run the schedule, add what is exposed at the
step level (gradient reduction, parameter gather, optimizer), and split the step time.
"""
from __future__ import annotations

from cost_models.breakdown import CostBreakdown, StageCost
from cost_models.comm import OVERLAP_CONTENTION
from cost_models.flops import model_flops_per_step, recompute_flops_per_step
from cost_models.hardware import Hardware, from_cluster
from cost_models.memory import ALLOCATOR_FRACTION
from cost_models.pipeline import makespan_s
from cost_models.terms import CandidateTerms, candidate_terms
from planner.specs import ClusterSpec, ModelSpec
from planner.strategy import StageLayers, Strategy


def estimate(model: ModelSpec, cluster: ClusterSpec, strategy: Strategy,
             hardware: Hardware | None = None) -> CostBreakdown:
    """Predict one strategy's cost. Invalid strategies raise InvalidStrategyError; a strategy
    that does not fit is a result (`fits` is False and `overflow()` names the resource)."""
    strategy.validate(model, cluster)
    hw = hardware or from_cluster(cluster)
    terms = candidate_terms(model, strategy, hw)
    return evaluate(model, strategy, hw, terms, strategy.stages(model))


def stage_time_parts(terms: CandidateTerms, stage: int, pp: int, sl: StageLayers) -> dict[str, float]:
    """One micro-batch on one stage, split into fwd/bwd/recompute and their communication."""
    b = terms.block
    edge_fwd, edge_bwd = terms.edge_s(stage, pp)
    edge_tp = (terms.edge.tp_comm / 2) * ((stage == 0) + (stage == pp - 1))
    return {
        "fwd": sl.layers * b.fwd + edge_fwd,
        "bwd": sl.layers * b.bwd + edge_bwd,
        "compute": sl.layers * (b.fwd_compute + b.bwd_compute) + edge_fwd + edge_bwd - edge_tp,
        "recompute": sl.full * b.recompute_full + sl.selective * b.recompute_selective,
        "tp_comm": sl.layers * (b.fwd_tp + b.bwd_tp) + edge_tp,
        "cp_comm": sl.layers * (b.fwd_cp + b.bwd_cp),
        "zero": sl.layers * (terms.zero_block_fwd_s + terms.zero_block_bwd_s),
    }


def stage_time_s(parts: dict[str, float]) -> float:
    """Per-micro-batch wall time of a stage from its parts."""
    return parts["compute"] + parts["recompute"] + parts["tp_comm"] + parts["cp_comm"] + parts["zero"]


def stage_memory(terms: CandidateTerms, stage: int, pp: int, sl: StageLayers) -> dict[str, float]:
    """Peak bytes of one GPU of `stage`: states, in-flight activations, transients, allowance."""
    params = terms.stage_params(stage, pp, sl.layers)
    a = terms.acts
    stored = sl.stored * a.none + sl.selective * a.selective + sl.full * a.full
    transient = max((a.none - a.full) if sl.full else 0.0, (a.none - a.selective) if sl.selective else 0.0)
    parts = {
        "weights": params * terms.states.weights + terms.zero3_buffer_bytes,
        "grads": params * terms.states.grads,
        "optimizer": params * terms.states.optimizer,
        "activations": terms.in_flight[stage] * stored + transient + terms.extra_acts[stage],
    }
    parts["other"] = ALLOCATOR_FRACTION * sum(parts.values())
    return parts


def evaluate(model: ModelSpec, st: Strategy, hw: Hardware, terms: CandidateTerms,
             stages: list[StageLayers]) -> CostBreakdown:
    """Cost of strategy `st` with a given per-stage split (the ILP's objective, evaluated)."""
    pp, m = st.pp, terms.micro_batches
    parts = [stage_time_parts(terms, i, pp, sl) for i, sl in enumerate(stages)]
    times = [stage_time_s(p) for p in parts]
    pipeline = makespan_s(times, m, st.vpp)
    critical = max(range(pp), key=lambda i: times[i])

    params = [terms.stage_params(i, pp, sl.layers) for i, sl in enumerate(stages)]
    grad_exposed = step_grad_exposed_s(terms, params, [p["bwd"] + p["recompute"] for p in parts],
                                       st.overlap_grad_reduce)
    gather_exposed = step_param_gather_exposed_s(terms, params, [p["fwd"] for p in parts],
                                                 st.overlap_grad_reduce)
    optimizer = max(terms.optimizer_s_per_param * p for p in params)
    step = pipeline + terms.p2p_s + grad_exposed + gather_exposed + optimizer

    crit = parts[critical]
    time_s = {
        "compute": m * crit["compute"], "recompute": m * crit["recompute"],
        "tp_comm": m * crit["tp_comm"], "cp_comm": m * crit["cp_comm"],
        "dp_comm_exposed": m * crit["zero"] + grad_exposed + gather_exposed,
        "pp_bubble": pipeline - m * times[critical], "pp_p2p": terms.p2p_s, "optimizer": optimizer,
    }
    stage_costs = [
        StageCost(i, sl.layers, sl.full, sl.selective, times[i], stage_memory(terms, i, pp, sl),
                  params[i] * terms.states.host)
        for i, sl in enumerate(stages)]
    peak_stage = max(range(pp), key=lambda i: stage_costs[i].peak_bytes)
    full = sum(sl.full for sl in stages) * st.tp * 0 + sum(sl.full for sl in stages)
    sel = sum(sl.selective for sl in stages)
    model_flops = model_flops_per_step(model)
    return CostBreakdown(
        step_time_s=step, time_s=time_s,
        tokens_per_s=model.training.tokens_per_step / step,
        model_flops_per_step=model_flops,
        hardware_flops_per_step=model_flops + recompute_flops_per_step(model, full, sel),
        gpus=st.world, peak_flops_per_gpu=hw.peak("bf16"), stages=stage_costs,
        critical_stage=critical, peak_stage=peak_stage, capacity_bytes=hw.capacity_bytes,
        host_capacity_bytes_per_gpu=hw.host_mem_bytes_per_gpu, micro_batches=m)


def step_grad_exposed_s(terms: CandidateTerms, params: list[float], bwd_s: list[float],
                        overlap: bool) -> float:
    """Exposed step-level gradient reduction (ZeRO 0/1) over the dp*cp group.

    With overlap (PyTorch DDP buckets, Li et al. 2020; Megatron --overlap-grad-reduce) a stage's
    reduction runs during its last micro-batch's backward, and stage i also has the time the
    upstream stages still spend in that backward; the last bucket is always exposed, and the
    overlapped part costs contention (comm.OVERLAP_CONTENTION of the collective's time).
    Without overlap the whole reduction follows the backward.
    """
    worst, slack = 0.0, 0.0
    for p, bwd in zip(params, bwd_s):
        comm_s = terms.grad_comm_s_per_param * p
        if overlap:
            exposed = OVERLAP_CONTENTION * comm_s + max(0.0, max(comm_s - bwd, terms.grad_tail_s) - slack)
        else:
            exposed = comm_s
        worst = max(worst, exposed)
        slack += bwd
    return worst


def step_param_gather_exposed_s(terms: CandidateTerms, params: list[float], fwd_s: list[float],
                                overlap: bool) -> float:
    """Exposed all-gather of updated 16-bit weights (ZeRO-1 distributed optimizer).

    With overlap (Megatron --overlap-param-gather) it runs under the first micro-batch's forward,
    which reaches stage i only after the upstream stages' forwards (contention as above).
    """
    worst, slack = 0.0, 0.0
    for p, fwd in zip(params, fwd_s):
        comm_s = terms.param_gather_s_per_param * p
        if overlap:
            exposed = OVERLAP_CONTENTION * comm_s + max(0.0, comm_s - fwd - slack)
        else:
            exposed = comm_s
        worst = max(worst, exposed)
        slack += fwd
    return worst
