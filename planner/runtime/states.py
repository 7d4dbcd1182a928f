"""Final model states of a run, per rank, for comparison with the single-process reference.

Each rank saves, for every parameter it holds, the final value and the gradient of the last step
(Adam's update hardly depends on the gradient's scale, so only the gradient shows a wrong
scaling, e.g. a missing division by dp), keyed by the name the unparallelised `Decoder` gives the
parameter (without DDP's `module.` or the checkpoint wrapper's segment), with the slice of the
full tensor this rank holds (None: all of it). Tensor-parallel and FSDP2
parameters are gathered whole (`DTensor.full_tensor`, a collective over their mesh); routed
experts are whole, or one etp slice (`MoEFeedForward.expert_slice`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from planner.runtime.moe import MoEFeedForward

CHECKPOINT_SEGMENT = "_checkpoint_wrapped_module."
"""The segment `checkpoint_wrapper` inserts into the names of a recomputed block's parameters."""
DDP_PREFIX = "module."
"""The prefix DistributedDataParallel puts before every name."""

Slice = tuple[int, int, int] | None
"""(dim, index, parts): chunk `index` of `parts` along `dim`; None: the whole tensor."""


def global_name(name: str) -> str:
    """`name` without what the wrappers add (DDP's prefix, checkpoint_wrapper's segment)."""
    name = name.removeprefix(DDP_PREFIX)
    return name.replace(CHECKPOINT_SEGMENT, "")


def local_states(modules: list[nn.Module]) -> dict[str, dict[str, Any]]:
    """`{global name: {"slice", "param", "grad"}}` for every parameter of `modules` (on the CPU)."""
    slices: dict[str, Slice] = {}
    for module in modules:
        for prefix, sub in module.named_modules():
            if isinstance(sub, MoEFeedForward):
                for name, _ in sub.experts.named_parameters():
                    slices[global_name(f"{prefix}.experts.{name}")] = sub.expert_slice(name)
    states = {}
    for module in modules:
        for name, p in module.named_parameters():
            key = global_name(name)
            states[key] = {"slice": slices.get(key), "param": _whole(p), "grad": _whole(p.grad)}
    return states


def _whole(t: torch.Tensor | None) -> torch.Tensor | None:
    if t is None:
        return None
    full = t.full_tensor() if isinstance(t, DTensor) else t
    return full.detach().cpu().clone()


def save_states(modules: list[nn.Module], path: Path) -> None:
    """Write `local_states(modules)` to `path` (torch.save)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(local_states(modules), path)


def reference_slice(tensor: torch.Tensor, where: Slice) -> torch.Tensor:
    """The part of a full reference tensor that a rank holding `where` holds."""
    if where is None:
        return tensor
    dim, index, parts = where
    return tensor.chunk(parts, dim)[index]
