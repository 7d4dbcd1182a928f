"""The pipeline timeline of one training step, drawn from the cost model's own per-stage times.

Each rank runs Megatron-Core's 1F1B or interleaved order (`planner.report.schedule`) with the
per-micro-batch forward and backward times of `cost_models.estimate.stage_time_parts` (1/v of
them per chunk, as the cost model assumes), as soon as its inputs arrive. After the drain come
the step-level parts that `estimate()` adds to the pipeline: the exposed pipeline send/recv, the
exposed gradient reduction / parameter gather, and the optimizer step.

The cost model prices the pipeline with a closed form (`cost_models.pipeline.makespan_s`); the
timeline is the schedule itself, so `Timeline.makespan_s` is a check of that formula, which is
exact for even stages and conservative when a stage other than the last is the slowest.
"""
from __future__ import annotations

from dataclasses import dataclass

from cost_models.breakdown import CostBreakdown
from cost_models.estimate import evaluate, stage_starts, stage_time_parts, stage_time_s
from cost_models.hardware import Hardware
from cost_models.pipeline import makespan_s
from cost_models.terms import CandidateTerms, candidate_terms
from planner.report.schedule import Op, run_asap
from planner.specs import ModelSpec
from planner.strategy import Strategy

BLOCK_KINDS = ("fwd", "bwd", "recompute", "tp_comm", "cp_comm", "ep_comm", "dp_comm", "pp_p2p",
               "optimizer")
"""What a block of the timeline is: forward / backward / recompute compute, exposed
communication by group, and the optimizer step."""


@dataclass(frozen=True)
class Block:
    """One coloured interval on one stage's row."""

    stage: int
    kind: str
    start_s: float
    end_s: float
    micro_batch: int = -1
    """-1 for step-level blocks."""
    chunk: int = 0
    phase: str = ""
    """"fwd" or "bwd" for the blocks of a pipeline op (comm included), "" for step-level ones."""


@dataclass(frozen=True)
class Timeline:
    """One step of the plan on every pipeline stage."""

    pp: int
    vpp: int
    micro_batches: int
    blocks: list[Block]
    pipeline_s: float
    """End of the last backward of the schedule."""
    formula_pipeline_s: float
    """The cost model's closed-form makespan of the same stage times."""
    predicted_step_s: float
    """`estimate()`'s step time."""
    busy_s: list[float]
    """Per stage, the time its forwards, backwards and their communication take."""

    @property
    def makespan_s(self) -> float:
        """End of the last block: the step time the picture shows."""
        return max(b.end_s for b in self.blocks)

    def bubble_s(self, stage: int) -> float:
        """Idle time of `stage` before the step-level tail (fill, drain, waiting)."""
        return self.pipeline_s - self.busy_s[stage]


def phase_segments(parts: dict[str, float]) -> dict[str, list[tuple[str, float]]]:
    """A stage's per-micro-batch forward and backward as (kind, seconds) segments in run order."""
    fwd_comm = parts["fwd_tp"] + parts["fwd_cp"] + parts["fwd_ep"]
    bwd_tp = parts["tp_comm"] - parts["fwd_tp"]
    bwd_cp = parts["cp_comm"] - parts["fwd_cp"]
    bwd_ep = parts["ep_comm"] - parts["fwd_ep"]
    return {
        "fwd": [("fwd", parts["fwd"] - fwd_comm), ("tp_comm", parts["fwd_tp"]),
                ("cp_comm", parts["fwd_cp"]), ("ep_comm", parts["fwd_ep"]),
                ("dp_comm", parts["fwd_zero"])],
        "bwd": [("recompute", parts["recompute"]),
                ("bwd", parts["bwd"] - bwd_tp - bwd_cp - bwd_ep), ("tp_comm", bwd_tp),
                ("cp_comm", bwd_cp), ("ep_comm", bwd_ep),
                ("dp_comm", parts["zero"] - parts["fwd_zero"])],
    }


def build_timeline(model: ModelSpec, strategy: Strategy, hw: Hardware,
                   terms: CandidateTerms | None = None) -> tuple[Timeline, CostBreakdown]:
    """The timeline of `strategy` (stage_layers resolved) and `estimate()`'s cost of it."""
    terms = terms or candidate_terms(model, strategy, hw)
    stages = strategy.stages(model)
    cost = evaluate(model, strategy, hw, terms, stages)
    pp, v, m = strategy.pp, strategy.vpp, terms.micro_batches
    parts = [stage_time_parts(terms, i, pp, sl, start)
             for i, (sl, start) in enumerate(zip(stages, stage_starts(stages)))]
    segments = [phase_segments(p) for p in parts]

    def op_segments(op: Op) -> list[tuple[str, float]]:
        segs = [(kind, s / v) for kind, s in segments[op.stage][op.phase] if s > 0]
        # Under ep_comm_overlap the fill's first forwards and the drain's last backwards run
        # unpaired and pay the hidden exchange again (cost_models.pipeline.makespan_s).
        unpaired = parts[op.stage]["ep_unpaired"] / (2 * v)
        first = op.phase == "fwd" and op.micro_batch == 0
        last = op.phase == "bwd" and op.micro_batch == m - 1
        if unpaired > 0 and (first or last):
            segs.append(("ep_comm", unpaired))
        return segs

    times = run_asap(pp, v, m, lambda op: sum(s for _, s in op_segments(op)))
    blocks = []
    for op, (start, _) in sorted(times.items(), key=lambda kv: (kv[0].stage, kv[1][0])):
        at = start
        for kind, seconds in op_segments(op):
            blocks.append(Block(op.stage, kind, at, at + seconds, op.micro_batch, op.chunk, op.phase))
            at += seconds
    pipeline = max(end for _, end in times.values())
    blocks += _tail_blocks(cost, parts, pipeline, pp)
    stage_s = [stage_time_s(p) for p in parts]
    formula = makespan_s(stage_s, m, v, [t + p["ep_unpaired"] for t, p in zip(stage_s, parts)])
    busy = [sum(e - s for s, e in (times[o] for o in times if o.stage == i)) for i in range(pp)]
    return Timeline(pp=pp, vpp=v, micro_batches=m, blocks=blocks, pipeline_s=pipeline,
                    formula_pipeline_s=formula, predicted_step_s=cost.step_time_s,
                    busy_s=busy), cost


def _tail_blocks(cost: CostBreakdown, parts: list[dict[str, float]], pipeline_s: float,
                 pp: int) -> list[Block]:
    """The step-level parts `estimate()` adds after the pipeline, on every stage: exposed
    send/recv, exposed gradient reduction and parameter gather, optimizer step."""
    m = cost.micro_batches
    in_pipeline_zero = m * parts[cost.critical_stage]["zero"]
    tail = [("pp_p2p", cost.time_s["pp_p2p"]),
            ("dp_comm", cost.time_s["dp_comm_exposed"] - in_pipeline_zero),
            ("optimizer", cost.time_s["optimizer"])]
    blocks, at = [], pipeline_s
    for kind, seconds in tail:
        if seconds > 1e-12:
            blocks += [Block(i, kind, at, at + seconds) for i in range(pp)]
            at += seconds
    return blocks
