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
from cost_models.terms import BlockKind, CandidateTerms, candidate_terms
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


def stage_mix(terms: CandidateTerms, start: int, sl: StageLayers) -> list[tuple[BlockKind, StageLayers]]:
    """The blocks of a stage that begins at block `start`, by kind, with recompute assigned in
    block order (Megatron's `--recompute-method block`: the first blocks of a stage are the
    recomputed ones, then the selectively recomputed ones)."""
    if terms.moe is None:
        return [(terms.dense, sl)]
    full_end = start + sl.full
    sel_end = full_end + sl.selective
    moe = StageLayers(terms.moe_blocks_before(start + sl.layers) - terms.moe_blocks_before(start),
                      terms.moe_blocks_before(full_end) - terms.moe_blocks_before(start),
                      terms.moe_blocks_before(sel_end) - terms.moe_blocks_before(full_end))
    mix = [(terms.dense, StageLayers(sl.layers - moe.layers, sl.full - moe.full,
                                     sl.selective - moe.selective)),
           (terms.moe, moe)]
    return [(kind, part) for kind, part in mix if part.layers]


def stage_time_parts(terms: CandidateTerms, stage: int, pp: int, sl: StageLayers,
                     start: int = 0) -> dict[str, float]:
    """One micro-batch on one stage, split into fwd/bwd/recompute and their communication."""
    edge_fwd, edge_bwd = terms.edge_s(stage, pp)
    edge_tp = (terms.edge.tp_comm / 2) * ((stage == 0) + (stage == pp - 1))
    parts = {"fwd": edge_fwd, "bwd": edge_bwd, "compute": edge_fwd + edge_bwd - edge_tp,
             "recompute": 0.0, "tp_comm": edge_tp, "cp_comm": 0.0, "ep_comm": 0.0, "zero": 0.0,
             "ep_unpaired": 0.0,
             # The forward's share of the comm parts (the embedding's collective is in its
             # forward, the output layer's in its backward: edge_times).
             "fwd_tp": edge_tp if stage == 0 else 0.0, "fwd_cp": 0.0, "fwd_ep": 0.0, "fwd_zero": 0.0}
    for kind, part in stage_mix(terms, start, sl):
        b, n = kind.times, part.layers
        parts["fwd"] += n * b.fwd
        parts["bwd"] += n * b.bwd
        parts["compute"] += n * (b.fwd_compute + b.bwd_compute)
        parts["recompute"] += part.full * b.recompute_full + part.selective * b.recompute_selective
        parts["tp_comm"] += n * (b.fwd_tp + b.bwd_tp)
        parts["cp_comm"] += n * (b.fwd_cp + b.bwd_cp)
        parts["ep_comm"] += n * (b.fwd_ep + b.bwd_ep)
        parts["ep_unpaired"] += n * b.ep_unpaired
        parts["zero"] += n * (kind.zero_fwd_s + kind.zero_bwd_s)
        parts["fwd_tp"] += n * b.fwd_tp
        parts["fwd_cp"] += n * b.fwd_cp
        parts["fwd_ep"] += n * b.fwd_ep
        parts["fwd_zero"] += n * kind.zero_fwd_s
    return parts


def stage_time_s(parts: dict[str, float]) -> float:
    """Per-micro-batch wall time of a stage from its parts (a steady-state slot; the pipeline's
    fill and drain add `ep_unpaired`)."""
    return (parts["compute"] + parts["recompute"] + parts["tp_comm"] + parts["cp_comm"]
            + parts["ep_comm"] + parts["zero"])


def stage_memory(terms: CandidateTerms, stage: int, pp: int, sl: StageLayers,
                 start: int = 0) -> dict[str, float]:
    """Peak bytes of one GPU of `stage`: states, in-flight activations, transients, allowance."""
    mix = stage_mix(terms, start, sl)
    moe_blocks = sum(part.layers for kind, part in mix if kind is terms.moe)
    params = terms.stage_params(stage, pp, sl.layers - moe_blocks, moe_blocks)
    experts = terms.stage_expert_params(moe_blocks)
    acts = stage_activation_parts(terms, stage, mix)
    es = terms.expert_states
    parts = {
        "weights": params * terms.states.weights + experts * es.weights + terms.zero3_buffer_bytes,
        "grads": params * terms.states.grads + experts * es.grads,
        "optimizer": params * terms.states.optimizer + experts * es.optimizer,
        "activations": acts["stored"] + acts["transient"] + acts["edge"] + acts["paired"],
    }
    parts["other"] = ALLOCATOR_FRACTION * sum(parts.values())
    return parts


def stage_activation_parts(terms: CandidateTerms, stage: int,
                           mix: list[tuple[BlockKind, StageLayers]]) -> dict[str, float]:
    """The activation bytes of `stage_memory`, by cause: blocks stored by the in-flight
    micro-batches, the recompute transient (one block's forward re-run at a time), the
    embedding/logits buffers, and the extra block a paired ep_comm_overlap forward holds."""
    stored = transient = 0.0
    for kind, part in mix:
        a = kind.acts
        stored += part.stored * a.none + part.selective * a.selective + part.full * a.full
        transient = max(transient, (a.none - a.full) if part.full else 0.0,
                        (a.none - a.selective) if part.selective else 0.0)
    return {"stored": terms.in_flight[stage] * stored, "transient": transient,
            "edge": terms.extra_acts[stage], "paired": terms.paired_block_bytes}


def stage_starts(stages: list[StageLayers]) -> list[int]:
    """Index of the first block of each stage."""
    starts, at = [], 0
    for sl in stages:
        starts.append(at)
        at += sl.layers
    return starts


def evaluate(model: ModelSpec, st: Strategy, hw: Hardware, terms: CandidateTerms,
             stages: list[StageLayers]) -> CostBreakdown:
    """Cost of strategy `st` with a given per-stage split (the ILP's objective, evaluated)."""
    pp, m = st.pp, terms.micro_batches
    starts = stage_starts(stages)
    parts = [stage_time_parts(terms, i, pp, sl, starts[i]) for i, sl in enumerate(stages)]
    times = [stage_time_s(p) for p in parts]
    unpaired = [p["ep_unpaired"] for p in parts]
    pipeline = makespan_s(times, m, st.vpp, [t + u for t, u in zip(times, unpaired)])
    critical = max(range(pp), key=lambda i: times[i])

    mems, grad_s, gather_s, optimizer_s, host = [], [], [], [], []
    for i, sl in enumerate(stages):
        moe_blocks = sum(part.layers for kind, part in stage_mix(terms, starts[i], sl) if kind is terms.moe)
        params = terms.stage_params(i, pp, sl.layers - moe_blocks, moe_blocks)
        experts = terms.stage_expert_params(moe_blocks)
        grad_s.append(terms.grad_comm_s_per_param * params + terms.expert_grad_comm_s_per_param * experts)
        gather_s.append(terms.param_gather_s_per_param * params
                        + terms.expert_param_gather_s_per_param * experts)
        optimizer_s.append(terms.optimizer_s_per_param * params + terms.expert_optimizer_s_per_param * experts)
        host.append(params * terms.states.host + experts * terms.expert_states.host)
        mems.append(stage_memory(terms, i, pp, sl, starts[i]))
    grad_exposed = step_grad_exposed_s(terms, grad_s, [p["bwd"] + p["recompute"] for p in parts],
                                       st.overlap_grad_reduce)
    gather_exposed = step_param_gather_exposed_s(gather_s, [p["fwd"] for p in parts],
                                                 st.overlap_grad_reduce)
    optimizer = max(optimizer_s)
    step = pipeline + terms.p2p_s + grad_exposed + gather_exposed + optimizer

    crit = parts[critical]
    ep_fill = sum(unpaired) / st.vpp  # exchanges of the unpaired fill and drain
    time_s = {
        "compute": m * crit["compute"], "recompute": m * crit["recompute"],
        "tp_comm": m * crit["tp_comm"], "cp_comm": m * crit["cp_comm"],
        "ep_comm": m * crit["ep_comm"] + ep_fill,
        "dp_comm_exposed": m * crit["zero"] + grad_exposed + gather_exposed,
        "pp_bubble": pipeline - m * times[critical] - ep_fill, "pp_p2p": terms.p2p_s,
        "optimizer": optimizer,
    }
    stage_costs = [StageCost(i, sl.layers, sl.full, sl.selective, times[i], mems[i], host[i])
                   for i, sl in enumerate(stages)]
    peak_stage = max(range(pp), key=lambda i: stage_costs[i].peak_bytes)
    full = sum(sl.full for sl in stages)
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


def step_grad_exposed_s(terms: CandidateTerms, comm_s: list[float], bwd_s: list[float],
                        overlap: bool) -> float:
    """Exposed step-level gradient reduction (ZeRO 0/1) over the dp*cp group.

    With overlap (PyTorch DDP buckets, Li et al. 2020; Megatron --overlap-grad-reduce) a stage's
    reduction runs during its last micro-batch's backward, and stage i also has the time the
    upstream stages still spend in that backward; the last bucket is always exposed, and the
    overlapped part costs contention (comm.OVERLAP_CONTENTION of the collective's time).
    Without overlap the whole reduction follows the backward.
    """
    worst, slack = 0.0, 0.0
    for c, bwd in zip(comm_s, bwd_s):
        if overlap:
            exposed = OVERLAP_CONTENTION * c + max(0.0, max(c - bwd, terms.grad_tail_s) - slack)
        else:
            exposed = c
        worst = max(worst, exposed)
        slack += bwd
    return worst


def step_param_gather_exposed_s(comm_s: list[float], fwd_s: list[float], overlap: bool) -> float:
    """Exposed all-gather of updated 16-bit weights (ZeRO-1 distributed optimizer).

    With overlap (Megatron --overlap-param-gather) it runs under the first micro-batch's forward,
    which reaches stage i only after the upstream stages' forwards (contention as above).
    """
    worst, slack = 0.0, 0.0
    for c, fwd in zip(comm_s, fwd_s):
        if overlap:
            exposed = OVERLAP_CONTENTION * c + max(0.0, c - fwd - slack)
        else:
            exposed = c
        worst = max(worst, exposed)
        slack += fwd
    return worst
