"""The execution strategy: parallel degrees, micro-batching, sharding, recompute and offload.

`Strategy.validate(model, cluster)` checks every divisibility and range rule and shows each factor
(as torchtitan's ParallelDims does). `Strategy.stages(model)` resolves the per-stage layer split and
per-stage recompute counts that the cost model consumes.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from planner.errors import InvalidStrategyError
from planner.specs import ClusterSpec, ModelSpec

Recompute = Literal["none", "selective", "full"]
RECOMPUTE_MODES: tuple[str, ...] = ("none", "selective", "full")


@dataclass(frozen=True)
class StageLayers:
    """One pipeline stage: how many transformer blocks it holds, and how each is recomputed."""

    layers: int
    """Transformer blocks on this stage (all virtual chunks together)."""
    full: int = 0
    """Blocks with full activation recompute (only the block input is kept)."""
    selective: int = 0
    """Blocks with selective recompute (attention core recomputed)."""

    @property
    def stored(self) -> int:
        """Blocks that keep all their activations."""
        return self.layers - self.full - self.selective


@dataclass(frozen=True, kw_only=True)
class Strategy:
    """How to train: every choice the planner makes. Degrees use the short names dp, tp, pp, cp."""

    dp: int = 1
    """Data-parallel degree (replicas, or the ZeRO/FSDP shard group)."""
    tp: int = 1
    """Tensor-parallel degree (Megatron column/row split), kept within a node."""
    pp: int = 1
    """Pipeline-parallel stages."""
    cp: int = 1
    """Context-parallel degree (sequence split inside attention, ring exchange of K/V)."""
    vpp: int = 1
    """Virtual pipeline chunks per stage (interleaved 1F1B when > 1)."""
    ep: int = 1
    """Expert-parallel degree: routed experts are split over ep ranks (MoE models)."""
    etp: int = 1
    """Expert tensor-parallel degree: each expert's FFN is split over etp ranks."""
    mbs: int = 1
    """Micro-batch size in sequences."""
    zero: int = 0
    """ZeRO stage: 0 none, 1 optimizer states (distributed optimizer), 2 +grads, 3 +params (FSDP)."""
    sp: bool = False
    """Megatron sequence parallelism in the non-tensor-parallel regions (needs tp > 1)."""
    recompute: Recompute = "none"
    """Recompute mode of the recomputed blocks."""
    recompute_layers: int | None = None
    """Blocks per stage in `recompute` mode (the rest store everything); None means all."""
    offload_optimizer: bool = False
    """Optimizer states and fp32 master weights live in host memory; the step runs on the CPU."""
    offload_params: bool = False
    """Sharded 16-bit parameters live in host memory (ZeRO-3 only)."""
    overlap_grad_reduce: bool = True
    """Overlap the data-parallel gradient reduction with the backward pass."""
    tp_comm_overlap: bool = False
    """Overlap tensor-parallel collectives with GEMMs (Transformer Engine userbuffers)."""
    ep_comm_overlap: bool = False
    """Pair the forward of one micro-batch with the backward of another, layer by layer, so that
    each one's expert-parallel all-to-all runs beside the other's computation (MoE, ep > 1):
    Megatron-Core's `--overlap-moe-expert-parallel-comm`, DeepSeek-V3's DualPipe (§3.2.1)."""
    stage_layers: tuple[int, ...] | None = None
    """Blocks per pipeline stage; None means a balanced split counting embedding and head."""
    stage_recompute: tuple[tuple[int, int], ...] | None = None
    """Per stage (full, selective) recompute counts; overrides recompute/recompute_layers."""

    @property
    def world(self) -> int:
        """GPUs used: dp * tp * pp * cp."""
        return self.dp * self.tp * self.pp * self.cp

    def micro_batches(self, model: ModelSpec) -> int:
        """Micro-batches per step per pipeline (gradient accumulation steps)."""
        return model.training.global_batch // (self.dp * self.mbs)

    def describe(self) -> str:
        """One-line summary, e.g. `dp=8 tp=8 pp=4 vpp=2 cp=1 mbs=1 zero=1 sp recompute=selective`."""
        parts = [f"dp={self.dp}", f"tp={self.tp}", f"pp={self.pp}"]
        if self.vpp > 1:
            parts.append(f"vpp={self.vpp}")
        parts.append(f"cp={self.cp}")
        if self.ep > 1 or self.etp > 1:
            parts += [f"ep={self.ep}", f"etp={self.etp}"]
        parts += [f"mbs={self.mbs}", f"zero={self.zero}"]
        if self.sp:
            parts.append("sp")
        if self.ep_comm_overlap:
            parts.append("ep-overlap")
        if self.stage_recompute is not None:
            parts.append("recompute=per-stage")
        elif self.recompute != "none":
            count = "" if self.recompute_layers is None else f"x{self.recompute_layers}"
            parts.append(f"recompute={self.recompute}{count}")
        if self.offload_optimizer:
            parts.append("offload-optimizer")
        if self.offload_params:
            parts.append("offload-params")
        return " ".join(parts)

    def with_(self, **changes) -> "Strategy":
        """A copy with some fields changed (copies the fields as `dataclasses.replace` would,
        without re-running __init__: the search makes one per candidate)."""
        unknown = changes.keys() - _STRATEGY_FIELDS
        if unknown:
            raise TypeError(f"Strategy has no field(s) {', '.join(sorted(unknown))}")
        copy = object.__new__(Strategy)
        copy.__dict__.update(self.__dict__)
        copy.__dict__.update(changes)
        return copy

    def validate(self, model: ModelSpec, cluster: ClusterSpec | None = None) -> None:
        """Raise InvalidStrategyError naming every factor when a rule is broken."""
        arch, train = model.arch, model.training
        factors = f"dp={self.dp} tp={self.tp} pp={self.pp} cp={self.cp}"
        for name in ("dp", "tp", "pp", "cp", "vpp", "mbs", "ep", "etp"):
            if getattr(self, name) < 1:
                _fail(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.zero not in (0, 1, 2, 3):
            _fail(f"zero must be 0, 1, 2 or 3, got {self.zero}")
        if self.recompute not in RECOMPUTE_MODES:
            _fail(f"recompute must be one of {', '.join(RECOMPUTE_MODES)}, got {self.recompute!r}")
        if cluster is not None and self.world != cluster.gpus:
            _fail(f"dp*tp*pp*cp = {factors} = {self.world} GPUs, but the cluster has "
                  f"{cluster.nodes} nodes x {cluster.gpus_per_node} = {cluster.gpus}")
        if cluster is not None and self.tp > cluster.gpus_per_node:
            _fail(f"tp={self.tp} exceeds the {cluster.gpus_per_node} GPUs of a node "
                  "(tensor parallelism stays within a node)")
        for what, size in (("heads", arch.heads), ("kv_heads", arch.kv_heads),
                           ("ffn_hidden", arch.ffn_hidden)):
            if size % self.tp:
                _fail(f"{what}={size} is not divisible by tp={self.tp}",
                      "kv_heads < tp would need KV-head replication; pick tp dividing kv_heads")
        if arch.vocab % self.tp and self.tp > 1:
            pass  # engines pad the vocabulary to a multiple of tp; the cost model does the same
        if self.sp and self.tp == 1:
            _fail("sequence parallelism (sp) needs tp > 1", "drop --sp or raise tp")
        if train.seq_len % (self.cp * (2 if self.cp > 1 else 1)):
            _fail(f"seq_len={train.seq_len} must be divisible by 2*cp={2 * self.cp} "
                  "(load-balanced context parallelism splits each sequence into 2*cp chunks)")
        if self.sp and (train.seq_len // self.cp) % self.tp:
            _fail(f"seq_len/cp={train.seq_len // self.cp} must be divisible by tp={self.tp} for sp")
        if train.global_batch % (self.dp * self.mbs):
            _fail(f"global_batch={train.global_batch} is not divisible by dp*mbs = "
                  f"{self.dp}*{self.mbs} = {self.dp * self.mbs}",
                  "change mbs or the global batch")
        if self.pp == 1 and self.vpp > 1:
            _fail("vpp > 1 (interleaved schedule) needs pp > 1")
        if self.vpp > 1 and self.micro_batches(model) % self.pp:
            _fail(f"interleaved schedule needs micro-batches ({self.micro_batches(model)}) to be a "
                  f"multiple of pp={self.pp}")
        if self.offload_params and self.zero != 3:
            _fail("offload_params needs zero=3 (only sharded parameters can live on the host)")
        self._validate_experts(model)
        if self.recompute_layers is not None and self.recompute_layers < 0:
            _fail(f"recompute_layers must be >= 0, got {self.recompute_layers}")
        self._validate_stages(model)
        self._validate_ep_overlap(model)

    def _validate_experts(self, model: ModelSpec) -> None:
        """Megatron-Core's MoE rules: expert ranks are drawn from the tp*cp*dp ranks of a stage
        (expert data parallel = tp*cp*dp / (ep*etp)); experts divide evenly over ep."""
        moe = model.arch.moe
        if moe is None:
            if self.ep > 1 or self.etp > 1:
                _fail(f"ep={self.ep} etp={self.etp}: expert parallelism needs an MoE model")
            if self.ep_comm_overlap:
                _fail("ep_comm_overlap overlaps the expert-parallel all-to-all: it needs an MoE model")
            return
        if moe.routed_experts % self.ep:
            _fail(f"routed_experts={moe.routed_experts} is not divisible by ep={self.ep}")
        if moe.expert_ffn_hidden % self.etp:
            _fail(f"expert_ffn_hidden={moe.expert_ffn_hidden} is not divisible by etp={self.etp}")
        group = self.tp * self.cp * self.dp
        if group % (self.ep * self.etp):
            _fail(f"tp*cp*dp = {self.tp}*{self.cp}*{self.dp} = {group} is not divisible by "
                  f"ep*etp = {self.ep}*{self.etp} = {self.ep * self.etp}",
                  "expert-parallel ranks come from the tensor, context and data-parallel ranks")
        if self.tp > 1 and not self.sp:
            _fail("MoE layers with tp > 1 need sequence parallelism (sp)", "add --sp")

    def _validate_ep_overlap(self, model: ModelSpec) -> None:
        """The all-to-all overlap pairs a forward with another micro-batch's backward, block by
        block (Megatron-Core `TransformerConfig.__post_init__`: ep > 1, no full recompute)."""
        if not self.ep_comm_overlap:
            return
        if self.ep == 1:
            _fail("ep_comm_overlap with ep=1: there is no expert-parallel all-to-all to overlap",
                  "raise ep or drop the overlap")
        full = sum(stage.full for stage in self.stages(model))
        if full:
            _fail(f"ep_comm_overlap with full recompute ({full} blocks): a recomputed forward "
                  "would re-run its all-to-all outside the paired schedule",
                  "use selective recompute or drop the overlap")

    def expert_dp(self) -> int:
        """Expert data-parallel degree: tp*cp*dp / (ep*etp)."""
        return self.tp * self.cp * self.dp // (self.ep * self.etp)

    def _validate_stages(self, model: ModelSpec) -> None:
        layers = model.arch.layers
        if self.pp > layers:
            _fail(f"pp={self.pp} exceeds the model's {layers} layers")
        if self.stage_layers is not None:
            if len(self.stage_layers) != self.pp:
                _fail(f"stage_layers has {len(self.stage_layers)} entries, pp={self.pp}")
            if sum(self.stage_layers) != layers:
                _fail(f"stage_layers {list(self.stage_layers)} sum to {sum(self.stage_layers)}, "
                      f"the model has {layers} layers")
        split = self.stage_layers or default_split(layers, self.pp, self.vpp)
        if min(split) < self.vpp:
            _fail(f"every stage needs >= vpp={self.vpp} layers, split is {list(split)}")
        if self.stage_recompute is not None:
            if len(self.stage_recompute) != self.pp:
                _fail(f"stage_recompute has {len(self.stage_recompute)} entries, pp={self.pp}")
            for i, ((full, sel), n) in enumerate(zip(self.stage_recompute, split)):
                if full < 0 or sel < 0 or full + sel > n:
                    _fail(f"stage {i}: recompute counts full={full} selective={sel} "
                          f"exceed its {n} layers")
        elif self.recompute_layers is not None and self.recompute != "none":
            if self.recompute_layers > max(split):
                _fail(f"recompute_layers={self.recompute_layers} exceeds the largest stage "
                      f"({max(split)} layers)")

    def stages(self, model: ModelSpec) -> list[StageLayers]:
        """Per-stage layer counts and recompute counts (call validate first)."""
        split = self.stage_layers or default_split(model.arch.layers, self.pp, self.vpp)
        if self.stage_recompute is not None:
            return [StageLayers(n, f, s) for n, (f, s) in zip(split, self.stage_recompute)]
        result = []
        for n in split:
            count = n if self.recompute_layers is None else min(n, self.recompute_layers)
            full = count if self.recompute == "full" else 0
            sel = count if self.recompute == "selective" else 0
            result.append(StageLayers(n, full, sel))
        return result


_STRATEGY_FIELDS = frozenset(f.name for f in fields(Strategy))


def default_split(layers: int, pp: int, vpp: int = 1) -> tuple[int, ...]:
    """The split `estimate` uses when none is given: `balanced_split`, except that with an
    interleaved schedule whose layers divide evenly into pp * vpp chunks it is uniform, as
    Megatron-LM splits by default (`--num-layers-per-virtual-pipeline-stage` without the
    account-for flags; GPT-3's 96 layers on pp 8 x vpp 12 is one layer per chunk)."""
    if vpp > 1 and layers % (pp * vpp) == 0:
        return (layers // pp,) * pp
    return balanced_split(layers, pp)


def balanced_split(layers: int, pp: int) -> tuple[int, ...]:
    """Blocks per stage, counting the embedding and the output head as one block each.

    This is Megatron-LM's `--account-for-embedding-in-pipeline-split` and
    `--account-for-loss-in-pipeline-split`: L + 2 units over pp stages, so 70 layers on 12 stages
    gives 5, 6 x 10, 5. Leftover units go to the middle stages; with pp = 1 all layers are on one.
    """
    if pp == 1:
        return (layers,)
    units = layers + 2
    base, extra = divmod(units, pp)
    counts = [base] * pp
    middle = list(range(1, pp - 1)) or list(range(pp))
    for i in range(extra):
        counts[middle[i % len(middle)]] += 1
    counts[0] -= 1
    counts[-1] -= 1
    if min(counts) < 1:
        base, extra = divmod(layers, pp)
        counts = [base + (1 if i >= pp - extra else 0) for i in range(pp)]
    return tuple(counts)


def _fail(message: str, hint: str | None = None) -> None:
    raise InvalidStrategyError(message, hint=hint)
