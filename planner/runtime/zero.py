"""ZeRO-1 as Megatron-Core's distributed optimizer lays it out: exactly 1/n of the Adam states.

The parameters of one shard group (dense parameters over the dp ranks, routed experts over the
expert data-parallel ranks), taken in order, form one flat index range of N elements; rank r of
the group owns the contiguous elements [r * ceil(N/n), (r + 1) * ceil(N/n)), however they fall
across parameter boundaries (Rajbhandari et al. 2020 §5.1; Megatron-Core's
`DistributedOptimizer` shards its gradient buffer the same way). Each rank runs Adam on views of
its own elements (Adam is elementwise, so the update equals the unsharded one bit for bit) and
then broadcasts them, in place, to the rest of the group.

torch's `ZeroRedundancyOptimizer` instead assigns whole parameters to ranks, so a rank's share is
only roughly 1/n; and it takes plain tensors only, where this also shards the local parts of
tensor-parallel DTensors and of FSDP2-replicated parameters.

Gradients stay whole (they are all-reduced before the step, as ZeRO-1 keeps them), and the
optimizer works on the parameters' local tensors: a DTensor contributes its local shard.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor


def _local(t: torch.Tensor) -> torch.Tensor:
    """The local tensor of a DTensor (sharing storage), else `t`; always detached."""
    return t.to_local().detach() if isinstance(t, DTensor) else t.detach()


@dataclass(frozen=True)
class _Piece:
    """Elements [start, stop) of one parameter's flattened local tensor, owned by rank `owner`."""

    param: nn.Parameter
    owner: int
    start: int
    stop: int


@dataclass(frozen=True)
class ShardGroup:
    """Parameters whose optimizer states shard over `group` (None: one rank, no sharding)."""

    params: list[nn.Parameter]
    """The parameters, in an order every rank of the group shares."""
    group: dist.ProcessGroup | None
    """The ranks holding replicas of these parameters."""


def _pieces(params: list[nn.Parameter], ranks: int) -> list[_Piece]:
    """Cut the concatenated local tensors of `params` into `ranks` contiguous equal ranges."""
    total = sum(_local(p).numel() for p in params)
    per_rank = -(-total // ranks)
    pieces, offset = [], 0
    for p in params:
        numel = _local(p).numel()
        for owner in range(ranks):
            start = max(offset, owner * per_rank) - offset
            stop = min(offset + numel, (owner + 1) * per_rank) - offset
            if start < stop:
                pieces.append(_Piece(p, owner, start, stop))
        offset += numel
    return pieces


class ShardedAdam(torch.optim.Adam):
    """Adam whose states cover only this rank's elements of every shard group (module doc).

    Its torch parameters are views of the model's parameters (one per owned piece); `step`
    points them and their gradients at the current storages, updates them in place and
    broadcasts every piece from its owner. `zero_grad` clears the model's whole gradients."""

    def __init__(self, groups: list[ShardGroup], **adam_options) -> None:
        self._groups = [(g.group, _pieces(g.params, dist.get_world_size(g.group) if g.group else 1))
                        for g in groups if g.params]
        self._model_params = [p for g in groups for p in g.params]
        self._owned: list[tuple[torch.Tensor, _Piece]] = []
        for group, pieces in self._groups:
            me = dist.get_rank(group) if group is not None else 0
            for piece in pieces:
                if piece.owner == me:
                    self._owned.append((self._slice(piece.param, piece), piece))
        super().__init__([view for view, _ in self._owned], **adam_options)

    @staticmethod
    def _slice(t: torch.Tensor, piece: _Piece) -> torch.Tensor:
        local = _local(t)
        if not local.is_contiguous():
            raise ValueError(f"ZeRO-1 shards contiguous local tensors, got strides {local.stride()}")
        return local.view(-1)[piece.start:piece.stop]

    @torch.no_grad()
    def step(self, closure=None):
        """Adam on this rank's pieces, then every piece broadcast from its owner."""
        for view, piece in self._owned:
            view.data = self._slice(piece.param, piece)
            grad = piece.param.grad
            view.grad = None if grad is None else self._slice(grad, piece)
        loss = super().step(closure)
        for view, _ in self._owned:
            view.grad = None
        works = []
        for group, pieces in self._groups:
            if group is None:
                continue
            for piece in pieces:
                works.append(dist.broadcast(self._slice(piece.param, piece), group=group,
                                            group_src=piece.owner, async_op=True))
        for work in works:
            work.wait()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the model parameters' gradients (the views' are only borrowed during `step`)."""
        for p in self._model_params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.zero_()
