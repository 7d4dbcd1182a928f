"""Pipeline schedules: makespan of 1F1B and interleaved 1F1B with uneven stages, and p2p cost."""
from __future__ import annotations

from collections.abc import Sequence


def makespan_s(stage_times: Sequence[float], micro_batches: int, vpp: int = 1,
               fill_times: Sequence[float] | None = None) -> float:
    """Wall time of one step's forward+backward over a pipeline of per-micro-batch stage times.

    1F1B with stage times t_i: the first micro-batch crosses every stage once (fill and drain,
    sum_i t_i) and the other m - 1 follow at the pace of the slowest stage:
        T = sum_i t_i + (m - 1) max_i t_i          (Narayanan et al. 2021 §2.2.1)
    Interleaving v chunks per stage makes fill and drain cross 1/v of each stage:
        T = sum_i t_i / v + (m - 1/v) max_i t_i
    Uniform stages recover the published bubble fractions (p - 1)/m and (p - 1)/(v m)
    (Narayanan et al. 2021 §2.2.2; Llama 3 §3.3.2). With `fill_times` u_i the fill and drain
    cross stages at u_i instead (T = sum_i u_i / v + ...): under the expert-parallel overlap a
    steady-state slot pairs a forward with a backward, while the fill's forwards and the drain's
    backwards run unpaired; with p = 1 that is the first forward and the last backward.
    """
    slowest = max(stage_times)
    fill = sum(fill_times if fill_times is not None else stage_times)
    if len(stage_times) == 1:
        return fill + (micro_batches - 1) * slowest
    return fill / vpp + (micro_batches - 1.0 / vpp) * slowest


def bubble_fraction(pp: int, micro_batches: int, vpp: int = 1) -> float:
    """Idle fraction relative to the ideal m * t for uniform stages: (p - 1) / (v m)."""
    return (pp - 1) / (vpp * micro_batches)


def p2p_transfers_on_critical_path(pp: int, micro_batches: int, vpp: int = 1) -> int:
    """Activation/gradient sends that the slowest stage waits on in one step.

    Megatron's schedules send and receive with blocking batched p2p calls, so each chunk of each
    micro-batch pays one forward and one backward transfer, and the fill/drain adds p - 1 each.
    """
    if pp == 1:
        return 0
    return 2 * (micro_batches * vpp + pp - 1)
