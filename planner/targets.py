"""What each training engine can express. The emitters (`planner/emit/<engine>.py`) declare these
limits; `solve --target` restricts the search to them and `emit` refuses plans outside them, naming
every part that does not fit. The limits are conservative: a plan they accept always emits.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from planner.specs import Architecture, MLASpec, ModelSpec, MoESpec
from planner.strategy import StageLayers, Strategy, balanced_split

Counts = Literal["any", "uniform", "all"]
StageSplit = Literal["any", "first_last", "balanced", "even"]
ExpertTensorParallel = Literal["any", "tp_without_ep"]


@dataclass(frozen=True, kw_only=True)
class KnownModel:
    """A model shape an engine ships a configuration for (its model is chosen by name)."""

    name: str
    """The engine's name for it, e.g. `llama3:llama3_70b`."""
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    ffn_hidden: int
    vocab: int
    mlp: str
    moe: MoESpec | None = None
    """The mixture-of-experts block (None: dense); routing, widths and dense layers must match."""
    mla: MLASpec | None = None
    """Multi-head latent attention dimensions (None: multi-head attention)."""

    def matches(self, arch: Architecture) -> bool:
        """Whether `arch` has exactly this shape."""
        return (arch.layers, arch.hidden, arch.heads, arch.kv_heads, arch.ffn_hidden, arch.vocab,
                arch.mlp, arch.moe, arch.mla) == (
                    self.layers, self.hidden, self.heads, self.kv_heads, self.ffn_hidden,
                    self.vocab, self.mlp, self.moe, self.mla)


@dataclass(frozen=True, kw_only=True)
class EngineLimits:
    """The part of the strategy space one engine can launch."""

    name: str
    zero_stages: tuple[int, ...] = (0, 1, 2, 3)
    """ZeRO stages the engine implements."""
    precisions: tuple[str, ...] = ("bf16", "fp16", "fp8")
    """Training precisions the engine can be told to use."""
    tensor_parallel: bool = True
    sequence_parallel: bool = True
    tp_comm_overlap: bool = True
    """Overlap of tensor-parallel collectives with GEMMs (strategy.tp_comm_overlap)."""
    tp_comm_overlap_needs_sp: bool = False
    """That overlap only works together with sequence parallelism."""
    pipeline: bool = True
    pipeline_zero_stages: tuple[int, ...] = (0, 1, 2, 3)
    """ZeRO stages that combine with pipeline parallelism (pp > 1)."""
    interleaved: bool = True
    """Virtual pipeline chunks (vpp > 1)."""
    context_parallel: bool = True
    offload_optimizer: bool = True
    offload_optimizer_zero_stages: tuple[int, ...] = (0, 1, 2, 3)
    """ZeRO stages with which optimizer offload works."""
    offload_params: bool = True
    offload_all_or_none: bool = False
    """Optimizer and parameter offload are one switch (both or neither)."""
    recompute_modes: tuple[str, ...] = ("none", "selective", "full")
    mixed_recompute: bool = True
    """Different recompute modes in one model (full for some blocks, selective for others)."""
    selective_counts: Counts = "any"
    full_counts: Counts = "any"
    """How many blocks per stage a mode may cover: `any` per-stage counts; `uniform` one count k
    per virtual chunk on every stage (a chunk of c blocks recomputes min(c, k)); `all` every block."""
    stage_split: StageSplit = "any"
    """`any` per-stage counts; `first_last` only first/last stages may differ from the rest;
    `balanced` only `strategy.balanced_split`; `even` all stages equal."""
    known_models: tuple[KnownModel, ...] | None = None
    """When set, the engine picks its model by name: only these shapes can be launched."""
    moe: bool = True
    """Mixture-of-experts models can be launched (the engine builds the routed MLP itself)."""
    expert_parallel: bool = True
    """Experts can be split over ranks (ep > 1) or tensor-parallel on their own (etp > 1)."""
    expert_tensor_parallel: ExpertTensorParallel = "any"
    """`any` any etp; `tp_without_ep` no separate degree: experts are tensor-parallel over the
    tp group when ep = 1 and whole when ep > 1 (etp = tp if ep == 1 else 1)."""
    expert_tensor_parallel_bias: bool = True
    """Experts with linear biases can be tensor-parallel (etp > 1)."""
    ep_comm_overlap: bool = True
    """The expert-parallel all-to-all of one micro-batch can run beside another's computation
    (strategy.ep_comm_overlap)."""
    ep_comm_overlap_needs_interleaved: bool = False
    """That overlap runs only under the interleaved schedule when pp > 1 (vpp > 1)."""
    expert_parallel_from_shards: bool = False
    """The ep group is carved from the FSDP-sharded, context- and tensor-parallel ranks only, not
    from data-parallel replicas: ep divides cp*tp*(dp with ZeRO > 0, else 1)."""

    @property
    def uniform_recompute_count(self) -> bool:
        """Compatibility: True when a recompute count must be the same on every stage."""
        return self.selective_counts != "any" or self.full_counts != "any"

    def known_model(self, arch: Architecture) -> KnownModel | None:
        """The engine's configuration for this shape, if it has one."""
        return next((k for k in self.known_models or () if k.matches(arch)), None)

    def violations(self, st: Strategy, model: ModelSpec) -> list[str]:
        """What in `st` (or the model) this engine cannot express; empty when it can."""
        precision = model.training.precision
        checks = [
            (st.zero not in self.zero_stages, f"ZeRO stage {st.zero} (supports {self.zero_stages})"),
            (precision not in self.precisions,
             f"{precision} training (supports {', '.join(self.precisions)})"),
            (st.tp > 1 and not self.tensor_parallel, "tensor parallelism"),
            (st.sp and not self.sequence_parallel, "sequence parallelism"),
            (st.tp > 1 and st.tp_comm_overlap and not self.tp_comm_overlap,
             "overlap of tensor-parallel communication with GEMMs"),
            (st.tp > 1 and st.tp_comm_overlap and self.tp_comm_overlap
             and self.tp_comm_overlap_needs_sp and not st.sp,
             "tensor-parallel communication overlap without sequence parallelism"),
            (st.pp > 1 and not self.pipeline, "pipeline parallelism"),
            (st.pp > 1 and self.pipeline and st.zero not in self.pipeline_zero_stages,
             f"ZeRO stage {st.zero} with pipeline parallelism (supports {self.pipeline_zero_stages})"),
            (st.vpp > 1 and not self.interleaved, "interleaved pipeline (vpp > 1)"),
            (st.cp > 1 and not self.context_parallel, "context parallelism"),
            (st.offload_optimizer and not self.offload_optimizer, "optimizer offload"),
            (st.offload_optimizer and self.offload_optimizer
             and st.zero not in self.offload_optimizer_zero_stages,
             f"optimizer offload with ZeRO stage {st.zero} "
             f"(needs {self.offload_optimizer_zero_stages})"),
            (st.offload_params and not self.offload_params, "parameter offload"),
            (self.offload_all_or_none and st.offload_optimizer != st.offload_params,
             "offloading only one of optimizer states and parameters (one switch for both)"),
        ]
        out = [f"{self.name} cannot express {what}" for bad, what in checks + self._expert_checks(
            st, model.arch) if bad]
        if self.known_models is not None and self.known_model(model.arch) is None:
            names = ", ".join(k.name for k in self.known_models)
            out.append(f"{self.name} has no model configuration with this shape "
                       f"(layers/hidden/heads/kv_heads/ffn/vocab/mlp/moe/mla); it ships: {names}")
        stages = st.stages(model)
        out += self._recompute_violations(stages, st.vpp)
        out += self._split_violations([s.layers for s in stages], model.arch.layers, st.pp)
        return out

    def _expert_checks(self, st: Strategy, arch: Architecture) -> list[tuple[bool, str]]:
        moe = arch.moe is not None
        shards = st.cp * st.tp * (st.dp if st.zero > 0 else 1)
        whole_etp = st.tp if st.ep == 1 else 1
        return [
            (moe and not self.moe, "mixture-of-experts models"),
            (st.ep > 1 and not self.expert_parallel, f"expert parallelism (ep={st.ep})"),
            (st.etp > 1 and not self.expert_parallel,
             f"expert tensor parallelism (etp={st.etp})"),
            (moe and self.moe and self.expert_tensor_parallel == "tp_without_ep"
             and st.etp != whole_etp,
             f"etp={st.etp} with tp={st.tp}, ep={st.ep} (experts are tensor-parallel over tp "
             f"when ep = 1 and whole when ep > 1: etp must be {whole_etp})"),
            (moe and st.etp > 1 and arch.linear_bias and not self.expert_tensor_parallel_bias,
             f"expert tensor parallelism (etp={st.etp}) of experts with linear biases"),
            (st.ep_comm_overlap and not self.ep_comm_overlap,
             "overlap of the expert-parallel all-to-all with another micro-batch's computation"),
            (st.ep_comm_overlap and self.ep_comm_overlap and self.ep_comm_overlap_needs_interleaved
             and st.pp > 1 and st.vpp == 1,
             f"the expert-parallel all-to-all overlap with a non-interleaved pipeline (pp={st.pp} "
             "needs vpp > 1)"),
            (moe and self.expert_parallel_from_shards and shards % st.ep,
             f"ep={st.ep} outside the sharded ranks cp*tp*(dp if ZeRO > 0 else 1) = {shards} "
             f"(expert ranks are never data-parallel replicas)"),
        ]

    def _recompute_violations(self, stages: list[StageLayers], vpp: int) -> list[str]:
        out = []
        used = {m for s in stages for m, n in (("full", s.full), ("selective", s.selective)) if n}
        for mode in sorted(used - set(self.recompute_modes)):
            out.append(f"{self.name} cannot express {mode} recompute")
        if not self.mixed_recompute and len(used) > 1:
            out.append(f"{self.name} uses one recompute mode for the whole model "
                       f"(plan mixes {' and '.join(sorted(used))})")
        for mode, rule in (("full", self.full_counts), ("selective", self.selective_counts)):
            counts = [getattr(s, mode) for s in stages]
            if mode not in used or rule == "any":
                continue
            layers = [s.layers for s in stages]
            if rule == "all" and counts != layers:
                out.append(f"{self.name} applies {mode} recompute to every block "
                           f"(plan recomputes {counts} of {layers} per stage)")
            if rule == "uniform" and uniform_chunk_count(counts, layers, vpp) is None:
                out.append(f"{self.name} recomputes the same number of blocks in every "
                           f"pipeline chunk (plan: {mode} on {counts} of {layers} per stage, "
                           f"vpp={vpp})")
        return out

    def _split_violations(self, split: list[int], layers: int, pp: int) -> list[str]:
        if len(set(split)) <= 1 or self.stage_split == "any":
            return []
        if self.stage_split == "even":
            return [f"{self.name} only splits layers evenly across stages (plan has {split})"]
        if self.stage_split == "balanced" and tuple(split) != balanced_split(layers, pp):
            return [f"{self.name} only uses its own balanced split (plan has {split})"]
        if self.stage_split == "first_last" and len(set(split[1:-1])) > 1:
            return [f"{self.name} lets only the first and last stages differ (plan has {split})"]
        return []


def chunk_sizes(layers: int, vpp: int) -> list[int]:
    """Blocks in each of a stage's vpp model chunks: as even as possible, larger chunks first."""
    base, extra = divmod(layers, vpp)
    return [base + (1 if c < extra else 0) for c in range(vpp)]


def uniform_chunk_count(counts: list[int], layers: list[int], vpp: int) -> int | None:
    """The per-chunk count k with counts[s] == sum(min(c, k) for c in chunks of stage s), or None.

    This is how Megatron-LM's `--recompute-method block --recompute-num-layers k` acts: the first k
    blocks of every model chunk are recomputed (`TransformerBlock._checkpointed_forward`).
    """
    for k in range(max(layers) + 1):
        if all(sum(min(c, k) for c in chunk_sizes(n, vpp)) == want
               for n, want in zip(layers, counts)):
            return k
    return None


ANY = EngineLimits(name="any")


def __getattr__(name: str):
    """`TARGETS` (engine name -> limits, `any` imposes nothing) and `MEGATRON`, `DEEPSPEED`,
    `TORCHTITAN`: each engine's limits live in its emitter, loaded on first use (PEP 562) so that
    `planner.emit` and this module can import each other."""
    if name in ("TARGETS", "MEGATRON", "DEEPSPEED", "TORCHTITAN"):
        from planner.emit import LIMITS
        return {"any": ANY, **LIMITS} if name == "TARGETS" else LIMITS[name.lower()]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
