"""Per-search caches of the pieces many candidates share: block and edge times, smallest stored
activations per block kind, state bytes, the states-only memory check, and candidate terms.

`block_times`/`edge_times` read only tp, cp, mbs, sp and the overlap flags of a strategy, an MoE
block's times and activations also ep and etp; state bytes only dp*cp (or the shard group), ZeRO
and offload (tests/test_solve_ilp.py checks the first and last).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from cost_models.block import BlockTimes, EdgeTimes, block_times, edge_times
from cost_models.flops import block_params
from cost_models.hardware import Hardware
from cost_models.memory import ALLOCATOR_FRACTION, block_activations, state_bytes_per_param
from cost_models.moe import moe_block_activations, moe_block_params, moe_block_times
from planner.bounds import step_lower_bound_s
from planner.space import offload_options, zero_stages
from planner.specs import ModelSpec
from planner.strategy import Strategy
from planner.targets import EngineLimits


def member_limits(limits: EngineLimits, st: Strategy) -> EngineLimits:
    """The engine's limits as they bind candidate `st`: under ep_comm_overlap no block is fully
    recomputed (Strategy.validate; the ILP holds its full counts at 0), so the memory bounds may
    charge every block at least its selective activations."""
    if not st.ep_comm_overlap or "full" not in limits.recompute_modes:
        return limits
    return replace(limits, recompute_modes=tuple(m for m in limits.recompute_modes if m != "full"))


@dataclass(frozen=True, kw_only=True)
class Shape:
    """What the candidates sharing tp, cp, mbs, sp, ep, etp and the all-to-all overlap flag
    have in common (times)."""

    block: BlockTimes
    """Times of a dense block."""
    edge: EdgeTimes
    dense_s: float
    """fwd + bwd seconds of a dense block (no ZeRO traffic)."""
    moe_s: float
    """fwd + bwd seconds of an MoE block (= dense_s for a dense model)."""


class Cache:
    """Per-search caches (see module doc)."""

    def __init__(self, model: ModelSpec, hw: Hardware, limits: EngineLimits):
        self.model, self.hw, self.limits = model, hw, limits
        self._dense: dict[tuple, tuple[BlockTimes, EdgeTimes]] = {}
        self._shapes: dict[tuple, Shape] = {}
        self._acts: dict[tuple, tuple[float, float]] = {}
        self._states: dict[tuple, tuple] = {}
        self._fits: dict[tuple, bool] = {}
        self.terms: dict[tuple, Any] = {}
        """Candidate terms by everything but vpp (see `candidates.member_terms`)."""

    def shape(self, tp: int, cp: int, mbs: int, sp: bool, ep: int = 1, etp: int = 1,
              overlap: bool = False) -> Shape:
        """Dense block, edge and MoE block times (the dense ones shared over ep, etp and the
        all-to-all overlap flag, which only MoE blocks read)."""
        key = (tp, cp, mbs, sp, ep, etp, overlap)
        if key not in self._shapes:
            if key[:4] not in self._dense:
                probe = Strategy(tp=tp, cp=cp, mbs=mbs, sp=sp)
                self._dense[key[:4]] = (block_times(self.model, probe, self.hw),
                                        edge_times(self.model, probe, self.hw))
            dense, edge = self._dense[key[:4]]
            moe = dense
            if self.model.arch.moe is not None:
                probe = Strategy(tp=tp, cp=cp, mbs=mbs, sp=sp, ep=ep, etp=etp,
                                 ep_comm_overlap=overlap)
                moe = moe_block_times(self.model, probe, self.hw, dense)
            self._shapes[key] = Shape(block=dense, edge=edge, dense_s=dense.fwd + dense.bwd,
                                      moe_s=moe.fwd + moe.bwd)
        return self._shapes[key]

    def smallest_activations(self, tp: int, cp: int, mbs: int, sp: bool, ep: int = 1,
                             etp: int = 1, overlap: bool = False) -> tuple[float, float]:
        """Smallest stored activation bytes of a (dense block, MoE block) over the recompute
        modes the target allows the candidate (the MoE one = the dense one for a dense model)."""
        key = (tp, cp, mbs, sp, ep, etp, overlap)
        if key not in self._acts:
            probe = Strategy(tp=tp, cp=cp, mbs=mbs, sp=sp, ep=ep, etp=etp, ep_comm_overlap=overlap)
            modes = ("none", *member_limits(self.limits, probe).recompute_modes)
            kinds = [block_activations(self.model, probe)]
            if self.model.arch.moe is not None:
                kinds.append(moe_block_activations(self.model, probe))
            smallest = [min(getattr(acts, mode) for mode in modes) for acts in kinds]
            self._acts[key] = (smallest[0], smallest[-1])
        return self._acts[key]

    def min_state_parts(self, dp: int, cp: int, shard: int | None = None) -> tuple[float, float, float]:
        """Smallest GPU (weights, grads, optimizer) bytes per parameter over the ZeRO/offload
        members, each minimised on its own; `shard` is the group that shards the parameters'
        states (default dp*cp; an MoE model's expert data-parallel group for routed experts)."""
        key = (dp * cp, shard)
        if key not in self._states:
            parts = []
            for zero in zero_stages(dp, cp, 1, self.limits):
                for off_opt, off_params in offload_options(zero, self.limits):
                    st = Strategy(dp=dp, cp=cp, zero=zero, offload_optimizer=off_opt,
                                  offload_params=off_params)
                    b = state_bytes_per_param(self.model, st, shard=shard)
                    parts.append((b.weights, b.grads, b.optimizer))
            self._states[key] = tuple(min(p[k] for p in parts) for k in range(3))
        return self._states[key]

    def min_state_bytes(self, dp: int, cp: int, shard: int | None = None) -> float:
        """Smallest GPU state bytes per parameter over the ZeRO/offload members."""
        return sum(self.min_state_parts(dp, cp, shard))

    def states_cannot_fit(self, outer: Strategy, zero: int, off_opt: bool, off_params: bool) -> bool:
        """Model states alone overflow GPU or host memory on the average stage (the max is at
        least the mean; only block parameters counted, each block with its kind: an MoE model's
        d dense blocks and L - d MoE blocks, whose routed experts' states shard over the expert
        data-parallel group): a check that needs no terms."""
        key = (outer.dp * outer.cp, outer.tp, outer.pp, outer.ep, outer.etp, zero, off_opt, off_params)
        if key not in self._fits:
            st = Strategy(dp=outer.dp, cp=outer.cp, zero=zero, offload_optimizer=off_opt,
                          offload_params=off_params)
            states = state_bytes_per_param(self.model, st)
            gpu_state = states.weights + states.grads + states.optimizer
            arch, layers = self.model.arch, self.model.arch.layers
            dense = block_params(arch) / outer.tp
            gpu, host = layers * dense * gpu_state, layers * dense * states.host
            if arch.moe is not None:
                split = moe_block_params(self.model, outer)
                moe_blocks = arch.moe.moe_layers_before(layers)
                experts = state_bytes_per_param(self.model, st, shard=outer.expert_dp())
                expert_state = experts.weights + experts.grads + experts.optimizer
                gpu = (layers - moe_blocks) * dense * gpu_state + moe_blocks * (
                    split.dense * gpu_state + split.experts * expert_state)
                host = (layers - moe_blocks) * dense * states.host + moe_blocks * (
                    split.dense * states.host + split.experts * experts.host)
            self._fits[key] = ((1.0 + ALLOCATOR_FRACTION) * gpu / outer.pp > self.hw.capacity_bytes
                               or host / outer.pp > self.hw.host_mem_bytes_per_gpu)
        return self._fits[key]

    def step_bound(self, terms, st: Strategy) -> float:
        """`step_lower_bound_s` of a member (its integer min-max is memoised in bounds.py)."""
        return step_lower_bound_s(terms, st, self.model.arch.layers)
