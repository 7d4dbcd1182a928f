"""Pipeline stages with the plan's exact layer split, on `torch.distributed.pipelining`.

Stage i of pp holds `stage_layers[i]` blocks. With vpp > 1 chunks (interleaved 1F1B), they are
split as evenly as possible over its vpp chunks, and virtual stage c * pp + i (chunk c of stage
i) follows the layer order, as in Megatron's interleaved schedule: chunk 0 of every stage first,
then chunk 1, and so on. The embedding sits on virtual stage 0, the final norm and output layer
on the last virtual stage, which both land on the first and last physical stage.
"""
from __future__ import annotations

import copy

from planner.runtime.model import Decoder
from planner.strategy import StageLayers


def chunk_sizes(layers: int, vpp: int) -> list[int]:
    """`layers` split over `vpp` chunks, larger chunks first (e.g. 5 over 2 -> [3, 2])."""
    base, extra = divmod(layers, vpp)
    return [base + (1 if c < extra else 0) for c in range(vpp)]


def virtual_stage_layers(stages: list[StageLayers], vpp: int) -> list[list[int]]:
    """Global layer indices of every virtual stage, indexed by c * pp + i."""
    pp = len(stages)
    sizes = {(c, i): n for i, sl in enumerate(stages) for c, n in enumerate(chunk_sizes(sl.layers, vpp))}
    result, start = [], 0
    for c in range(vpp):
        for i in range(pp):
            n = sizes[(c, i)]
            result.append(list(range(start, start + n)))
            start += n
    return result


def stage_recompute_sets(stages: list[StageLayers], virtual: list[list[int]],
                         stage: int, vpp: int) -> tuple[set[str], set[str]]:
    """Names of the layers of physical `stage` under full and under selective recompute.

    The stage's layers are taken in order (chunk by chunk): the first `full` are fully
    recomputed, the next `selective` selectively (Megatron's `--recompute-method block`).
    """
    pp = len(stages)
    own = [layer for c in range(vpp) for layer in virtual[c * pp + stage]]
    sl = stages[stage]
    full = {str(x) for x in own[:sl.full]}
    selective = {str(x) for x in own[sl.full:sl.full + sl.selective]}
    return full, selective


def chunk_model(full_model: Decoder, layer_ids: list[int], *, first: bool, last: bool) -> Decoder:
    """A copy of the model keeping only `layer_ids` (and the embedding / head where they belong)."""
    chunk = copy.deepcopy(full_model)
    keep = {str(x) for x in layer_ids}
    for name in list(chunk.layers.keys()):
        if name not in keep:
            del chunk.layers[name]
    if not first:
        chunk.tok_embeddings = None
        chunk.pos_embeddings = None
    if not last:
        chunk.norm = None
        chunk.output = None
    return chunk
