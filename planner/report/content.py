"""What a report shows, as data: the timeline, memory per stage as stacked parts, the step-time
breakdown, the plans the search ranked, and measured vs predicted rows from `fmplan validate`.

Everything is computed by the cost model (`estimate()` and its per-stage parts); the figures in
`planner.report.html` and `planner.report.png` only draw it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cost_models.breakdown import GIB, TIME_KEYS, CostBreakdown
from cost_models.estimate import stage_activation_parts, stage_mix, stage_starts
from cost_models.hardware import Hardware
from cost_models.terms import candidate_terms
from planner.report.timeline import Timeline, build_timeline
from planner.specs import ClusterSpec, ModelSpec
from planner.strategy import Strategy

MEMORY_PARTS = ("weights", "grads", "optimizer", "activations", "transient", "buffers", "allocator")
"""Stacked parts of a stage's peak: model states, activations stored by the in-flight
micro-batches (and the paired block of ep_comm_overlap), the recompute transient, the
embedding/logits buffers, and the allocator allowance (`cost_models.memory.ALLOCATOR_FRACTION`)."""

TIME_LABELS = {"compute": "compute", "recompute": "recompute", "tp_comm": "TP comm (exposed)",
               "cp_comm": "CP comm (exposed)", "ep_comm": "EP all-to-all (exposed)",
               "dp_comm_exposed": "DP / ZeRO comm (exposed)", "pp_bubble": "pipeline bubble",
               "pp_p2p": "PP send/recv", "optimizer": "optimizer step"}


@dataclass(frozen=True)
class StageMemory:
    """One stage's per-GPU peak, split into MEMORY_PARTS (bytes)."""

    stage: int
    parts_bytes: dict[str, float]
    peak_bytes: float
    """`StageCost.peak_bytes` of the estimate."""


@dataclass(frozen=True)
class SpacePoint:
    """A plan the search ranked: its step time and peak memory."""

    role: str
    """"chosen" or "runner-up"."""
    strategy: str
    step_time_s: float
    peak_bytes: float
    note: str = ""


@dataclass(frozen=True)
class Report:
    """Everything one report page shows."""

    model: str
    cluster: str
    strategy: str
    cost: CostBreakdown
    timeline: Timeline
    memory: list[StageMemory]
    points: list[SpacePoint]
    points_note: str
    validation_rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def time_parts_s(self) -> dict[str, float]:
        """The step-time breakdown (TIME_KEYS, adding up to the step time)."""
        return {k: self.cost.time_s[k] for k in TIME_KEYS}


def stage_memory_parts(model: ModelSpec, strategy: Strategy, hw: Hardware,
                       cost: CostBreakdown) -> list[StageMemory]:
    """Per-stage peak memory as MEMORY_PARTS, from the same terms `estimate()` sums."""
    terms = candidate_terms(model, strategy, hw)
    stages = strategy.stages(model)
    out = []
    for i, (sl, start) in enumerate(zip(stages, stage_starts(stages))):
        mem = cost.stages[i].memory_bytes
        acts = stage_activation_parts(terms, i, stage_mix(terms, start, sl))
        parts = {"weights": mem["weights"], "grads": mem["grads"], "optimizer": mem["optimizer"],
                 "activations": acts["stored"] + acts["paired"], "transient": acts["transient"],
                 "buffers": acts["edge"], "allocator": mem["other"]}
        out.append(StageMemory(i, parts, cost.stages[i].peak_bytes))
    return out


def build_report(model: ModelSpec, cluster: ClusterSpec, strategy: Strategy, hw: Hardware, *,
                 runners_up: list[SpacePoint] | None = None, points_note: str = "",
                 validation_rows: list[dict[str, Any]] | None = None,
                 notes: list[str] | None = None) -> Report:
    """The report of one resolved strategy (stage_layers set) on `hw`."""
    strategy.validate(model, cluster)
    timeline, cost = build_timeline(model, strategy, hw)
    notes = list(notes or [])
    gap = timeline.makespan_s / cost.step_time_s - 1.0
    if abs(gap) > 1e-6:
        notes.append(
            f"The schedule drawn ends at {timeline.makespan_s:.4g} s, {100 * gap:+.2f} % from the "
            f"predicted {cost.step_time_s:.4g} s: the cost model's closed-form pipeline "
            "makespan paces every micro-batch at the slowest stage, which is exact for even "
            "stages and conservative otherwise.")
    chosen = SpacePoint("chosen", strategy.describe(), cost.step_time_s, cost.peak_memory_bytes)
    return Report(model=model.name, cluster=cluster.name, strategy=strategy.describe(), cost=cost,
                  timeline=timeline, memory=stage_memory_parts(model, strategy, hw, cost),
                  points=[chosen, *(runners_up or [])], points_note=points_note,
                  validation_rows=list(validation_rows or []), notes=notes)


def gib(nbytes: float) -> float:
    """Bytes to GiB."""
    return nbytes / GIB
