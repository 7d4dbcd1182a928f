"""The order in which a pipeline rank runs its forward and backward chunks, and an
as-soon-as-possible run of those orders with given durations.

1F1B (Narayanan et al. 2021 §2.2.1; Megatron-Core `forward_backward_pipelining_without_interleaving`):
rank i runs min(p - i - 1, m) warm-up forwards, then alternates one forward and one backward,
then drains the remaining backwards. Interleaved (Narayanan et al. 2021 §2.2.2; Megatron-Core
`forward_backward_pipelining_with_interleaving`, m a multiple of p): the k-th forward of a rank
is micro-batch (k // pv) p + k % p of chunk (k // p) % v, backwards walk the chunks in reverse,
and the warm-up is (p - i - 1) 2 + (v - 1) p chunk forwards.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Op:
    """One forward or backward of one chunk of one micro-batch on one rank."""

    stage: int
    phase: str
    """"fwd" or "bwd"."""
    micro_batch: int
    chunk: int


def rank_order(stage: int, pp: int, vpp: int, micro_batches: int) -> list[Op]:
    """The ops of pipeline rank `stage` in the order Megatron-Core's schedule runs them."""
    p, v, m = pp, vpp, micro_batches
    total = m * v

    def forward(k: int) -> Op:
        return Op(stage, "fwd", (k // (p * v)) * p + k % p, (k // p) % v)

    def backward(k: int) -> Op:
        f = forward(k)
        return Op(stage, "bwd", f.micro_batch, v - 1 - f.chunk)

    warmup = min(p - stage - 1, m) if v == 1 else min((p - stage - 1) * 2 + (v - 1) * p, total)
    ops = [forward(k) for k in range(warmup)]
    done_fwd, done_bwd = warmup, 0
    while done_fwd < total:
        ops += [forward(done_fwd), backward(done_bwd)]
        done_fwd, done_bwd = done_fwd + 1, done_bwd + 1
    ops += [backward(k) for k in range(done_bwd, total)]
    return ops


def dependency(op: Op, pp: int, vpp: int) -> Op | None:
    """The op whose output `op` consumes (None for the first virtual stage's forwards).

    Virtual stage c * p + i holds chunk c of rank i: a forward follows the previous virtual stage,
    a backward the next one, and the last virtual stage's backward follows its own forward.
    """
    i, c = op.stage, op.chunk
    if op.phase == "fwd":
        if i > 0:
            return Op(i - 1, "fwd", op.micro_batch, c)
        return Op(pp - 1, "fwd", op.micro_batch, c - 1) if c > 0 else None
    if i < pp - 1:
        return Op(i + 1, "bwd", op.micro_batch, c)
    if c < vpp - 1:
        return Op(0, "bwd", op.micro_batch, c + 1)
    return Op(i, "fwd", op.micro_batch, c)


def run_asap(pp: int, vpp: int, micro_batches: int,
             duration_s: Callable[[Op], float]) -> dict[Op, tuple[float, float]]:
    """(start, end) of every op when each rank runs its order and starts an op as soon as the
    rank is free and the op's input has arrived (send/recv time is accounted separately)."""
    orders = [rank_order(i, pp, vpp, micro_batches) for i in range(pp)]
    times: dict[Op, tuple[float, float]] = {}
    free_s = [0.0] * pp
    position = [0] * pp
    remaining = sum(len(o) for o in orders)
    while remaining:
        progressed = False
        for i, order in enumerate(orders):
            while position[i] < len(order):
                op = order[position[i]]
                dep = dependency(op, pp, vpp)
                if dep is not None and dep not in times:
                    break
                start = max(free_s[i], times[dep][1] if dep is not None else 0.0)
                end = start + duration_s(op)
                times[op] = (start, end)
                free_s[i], position[i], remaining = end, position[i] + 1, remaining - 1
                progressed = True
        if not progressed:  # internal invariant: Megatron's orders never deadlock
            raise RuntimeError(f"pipeline schedule deadlocked (pp={pp}, vpp={vpp}, m={micro_batches})")
    return times
