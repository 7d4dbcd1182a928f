"""What each training engine can express. The emitters declare these limits; `solve --target`
restricts the search to them and `emit` refuses plans outside them, naming what does not fit.
"""
from __future__ import annotations

from dataclasses import dataclass

from planner.specs import ModelSpec
from planner.strategy import Strategy, balanced_split


@dataclass(frozen=True, kw_only=True)
class EngineLimits:
    """The part of the strategy space one engine can launch."""

    name: str
    zero_stages: tuple[int, ...] = (0, 1, 2, 3)
    """ZeRO stages the engine implements."""
    tensor_parallel: bool = True
    sequence_parallel: bool = True
    pipeline: bool = True
    interleaved: bool = True
    """Virtual pipeline chunks (vpp > 1)."""
    context_parallel: bool = True
    offload_optimizer: bool = True
    offload_params: bool = True
    recompute_modes: tuple[str, ...] = ("none", "selective", "full")
    mixed_recompute: bool = True
    """Different recompute modes inside one stage (full for some blocks, selective for others)."""
    uniform_recompute_count: bool = False
    """The number of recomputed blocks must be the same on every stage."""
    stage_split: str = "any"
    """`any` per-stage counts; `first_last` only first/last stages may differ from the rest;
    `balanced` only the engine's own even split."""

    def violations(self, st: Strategy, model: ModelSpec) -> list[str]:
        """What in `st` this engine cannot express (empty when it can)."""
        out = []
        checks = [
            (st.zero not in self.zero_stages, f"ZeRO stage {st.zero} (supports {self.zero_stages})"),
            (st.tp > 1 and not self.tensor_parallel, "tensor parallelism"),
            (st.sp and not self.sequence_parallel, "sequence parallelism"),
            (st.pp > 1 and not self.pipeline, "pipeline parallelism"),
            (st.vpp > 1 and not self.interleaved, "interleaved pipeline (vpp > 1)"),
            (st.cp > 1 and not self.context_parallel, "context parallelism"),
            (st.offload_optimizer and not self.offload_optimizer, "optimizer offload"),
            (st.offload_params and not self.offload_params, "parameter offload"),
        ]
        out += [f"{self.name} cannot express {what}" for bad, what in checks if bad]
        stages = st.stages(model)
        modes = {m for s in stages for m, n in (("full", s.full), ("selective", s.selective)) if n}
        for mode in sorted(modes - set(self.recompute_modes)):
            out.append(f"{self.name} cannot express {mode} recompute")
        if not self.mixed_recompute and any(s.full and s.selective for s in stages):
            out.append(f"{self.name} cannot mix full and selective recompute in one stage")
        if not self.mixed_recompute and len(modes) > 1:
            out.append(f"{self.name} uses one recompute mode for the whole model")
        if self.uniform_recompute_count:
            counts = {s.full + s.selective for s in stages}
            if len(counts) > 1:
                out.append(f"{self.name} recomputes the same number of blocks on every stage "
                           f"(plan has {sorted(counts)})")
        split = [s.layers for s in stages]
        if self.stage_split == "balanced" and tuple(split) != balanced_split(model.arch.layers, st.pp) \
                and len(set(split)) > 1:
            out.append(f"{self.name} only splits layers evenly (plan has {split})")
        if self.stage_split == "first_last" and len(set(split[1:-1])) > 1:
            out.append(f"{self.name} lets only the first and last stages differ (plan has {split})")
        return out


ANY = EngineLimits(name="any")

# Preliminary limits; each emitter (planner/emit/<engine>.py) owns and documents its engine's.
MEGATRON = EngineLimits(
    name="megatron", zero_stages=(0, 1), offload_params=False, mixed_recompute=False,
    uniform_recompute_count=True, stage_split="first_last")
DEEPSPEED = EngineLimits(
    name="deepspeed", tensor_parallel=False, sequence_parallel=False, interleaved=False,
    context_parallel=False, recompute_modes=("none", "full"), mixed_recompute=False,
    uniform_recompute_count=True, stage_split="balanced")
TORCHTITAN = EngineLimits(
    name="torchtitan", zero_stages=(0, 2, 3), mixed_recompute=False, uniform_recompute_count=True)

TARGETS: dict[str, EngineLimits] = {
    "any": ANY, "megatron": MEGATRON, "deepspeed": DEEPSPEED, "torchtitan": TORCHTITAN}
"""Engine name -> limits; `any` imposes nothing."""
