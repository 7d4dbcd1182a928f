"""A stronger lower bound of one candidate's ILP objective: it prices the recompute that memory
forces on each stage and the exposed data-parallel traffic of the first stage.

Notation as in planner/bounds.py. For stage i with F_i in-flight micro-batches, the memory row
(dropping the transient, which is >= 0) reads
    F_i (f_i D_f + s_i D_s) >= n_i K_i - D_i,   K_i = b*state + F_i*a_none,
    D_i = cap / (1 + alpha) - c_i*state - z3 - extra_i
(D_f = a_none - a_full, D_s = a_none - a_selective, c_i the embedding/head parameters). Recompute
costs R_i = f_i r_f + s_i r_s >= rho (f_i D_f + s_i D_s) with rho = min over allowed modes of
r/D, and f_i + s_i <= n_i caps the bytes recompute can free. Once n_i K_i > D_i some block is
recomputed, so R_i >= r_min (one block) and the transient term adds at least D_min = min(D_f, D_s)
to the row. Hence
    t_i >= g_i(n_i) = n_i c + e_i + [n_i K_i > D_i] max(r_min, rho (n_i K_i - D_i + D_min) / F_i),
for n_i <= U_i, the largest n_i for which even recomputing every block fits. g_i is increasing
and piecewise linear, so T* = min over real splits of max_i g_i(n_i) is a water level, found
exactly on the piecewise-linear sum of inverses. Any split has max_i t_i >= max(T*, g_0(n_0)).

Stage 0 has no upstream slack, so with overlap G >= k c_0 + max(tail, c_0 - bwd_0) with
c_0 = g*params_0 and k the contention share (estimate.step_grad_exposed_s), and
P >= k p_0 + max(0, p_0 - fwd_0) with p_0 = p*params_0, where bwd_0 <= n_0 (b_bwd + r_max) + e_bwd. Every term is piecewise
linear in n_0 (g_0 jumps only upwards), so the bound minimises their sum over n_0 exactly by
checking the breakpoints and the end points. Summing lower bounds of separate terms bounds the
sum.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

from cost_models.comm import OVERLAP_CONTENTION
from cost_models.memory import ALLOCATOR_FRACTION
from cost_models.terms import CandidateTerms
from planner.bounds import integer_min_max, step_lower_bound_s
from planner.ilp import _MEMORY_MARGIN
from planner.strategy import Strategy
from planner.targets import EngineLimits

INFEASIBLE = float("inf")


def strong_step_lower_bound_s(terms: CandidateTerms, st: Strategy, layers: int,
                              capacity_bytes: float, limits: EngineLimits) -> float:
    """Lower bound of the candidate's ILP objective (inf when no split can fit)."""
    pp, v, m = st.pp, st.vpp, terms.micro_batches
    c, b, a = terms.block_none_s, terms.block, terms.acts
    modes = [(b.recompute_full, a.none - a.full, "full"), (b.recompute_selective, a.none - a.selective, "selective")]
    modes = [(r, d) for r, d, name in modes if name in limits.recompute_modes and d > 0]
    rho = min((r / d for r, d in modes), default=0.0)
    freed_max = max((d for _, d in modes), default=0.0)
    r_max = max((r for r, _ in modes), default=0.0)
    r_min = min((r for r, _ in modes), default=0.0)  # one recomputed block at least
    transient = min((d for _, d in modes), default=0.0)  # its transient buffer at least
    state = terms.states.weights + terms.states.grads + terms.states.optimizer
    room = capacity_bytes * (1 - _MEMORY_MARGIN) / (1 + ALLOCATOR_FRACTION)
    big = layers - v * (pp - 1)

    stages = []
    for i in range(pp):
        fwd, bwd = terms.edge_s(i, pp)
        flight = terms.in_flight[i]
        k = terms.block_params * state + flight * a.none
        d = room - terms.stage_params(i, pp, 0) * state - terms.zero3_buffer_bytes - terms.extra_acts[i]
        slope_left = k - flight * freed_max  # bytes per block even when all are recomputed
        upper = big if slope_left <= 0 else min(big, (d - transient) / slope_left)
        if upper < v:
            return INFEASIBLE
        stages.append(_Stage(c=c, e=fwd + bwd, rk=rho * k / flight, rd=rho * (d - transient) / flight,
                             kink=d / k, upper=upper, r_min=r_min))
    if sum(s.upper for s in stages) < layers:
        return INFEASIBLE

    simple = step_lower_bound_s(terms, st, layers)
    base = simple - (m - 1.0 / v) * _simple_slowest(terms, st, layers)
    if pp == 1:  # one stage holds all L blocks: S = t_0 >= g_0(L) as well
        level = stages[0].g(layers)
        base += level - (layers * c + stages[0].e)
        return base + _first_stage_min(terms, st, stages[0], level, layers, layers, r_max)
    level = _integer_level(stages, layers, v, _water_level(stages, layers, v))
    return base + _first_stage_min(terms, st, stages[0], level, v, big, r_max)


@dataclass(frozen=True)
class _Stage:
    """g_i(n) = n c + e, plus max(r_min, rk n - rd) once n > kink (memory forces recompute)."""

    c: float
    e: float
    rk: float
    rd: float
    kink: float
    upper: float
    r_min: float

    def g(self, n: float) -> float:
        """g_i(n) (see module doc); increasing, with an upward jump at the kink."""
        extra = max(self.r_min, self.rk * n - self.rd) if n > self.kink else 0.0
        return n * self.c + self.e + extra

    def inverse(self, level: float) -> float:
        """Largest real n with g_i(n) <= level, capped at U_i."""
        if self.c <= 0:
            return self.upper
        n = (level - self.e) / self.c
        if n > self.kink:
            flat = (level - self.e - self.r_min) / self.c  # on the r_min piece
            if self.rk * flat - self.rd > self.r_min:
                flat = (level - self.e + self.rd) / (self.c + self.rk)
            n = max(self.kink, flat)
        return min(n, self.upper)

    def breakpoints(self, lower: float) -> list[float]:
        """Levels where the inverse changes slope (within [lower, U_i])."""
        ns = [self.kink, self.upper]
        if self.rk > 0:
            ns.append((self.r_min + self.rd) / self.rk)
        out = [self.g(self.upper)]
        for n in ns:
            if lower <= n <= self.upper:
                out.append(self.g(n))
                out.append(n * self.c + self.e + max(self.r_min, self.rk * n - self.rd))
        return out


def _water_level(stages: list[_Stage], layers: int, v: int) -> float:
    """min over real splits (v <= n_i <= U_i, sum = L) of max_i g_i(n_i)."""
    low = max(s.g(v) for s in stages)
    prev, prev_sum = low, sum(s.inverse(low) for s in stages)
    if prev_sum >= layers:
        return low
    points = sorted({p for s in stages for p in s.breakpoints(v) if p > low})
    for point in points:
        total = sum(s.inverse(point) for s in stages)
        if total >= layers:
            # Linear between breakpoints: interpolate to where the sum reaches L.
            return prev + (point - prev) * (layers - prev_sum) / (total - prev_sum)
        prev, prev_sum = point, total
    return points[-1] if points else low


def _integer_level(stages: list[_Stage], layers: int, v: int, level: float) -> float:
    """min over integer splits of max_i g_i(n_i): from the real water level, raise the level to
    the next g_i(k) at an integer k until the whole blocks under it cover L (block counts are
    integers in the ILP, so this is still a lower bound of max_i t_i)."""
    counts = [min(math.floor(s.upper), max(v, math.floor(s.inverse(level)))) for s in stages]
    nexts = [(s.g(k + 1), i) for i, (s, k) in enumerate(zip(stages, counts)) if k + 1 <= s.upper]
    heapq.heapify(nexts)
    best = max(s.g(k) for s, k in zip(stages, counts))
    total = sum(counts)
    while total < layers and nexts:
        value, i = heapq.heappop(nexts)
        counts[i] += 1
        total += 1
        best = max(best, value)
        if counts[i] + 1 <= stages[i].upper:
            heapq.heappush(nexts, (stages[i].g(counts[i] + 1), i))
    return max(best, level)


def _simple_slowest(terms: CandidateTerms, st: Strategy, layers: int) -> float:
    """The max_i t_i lower bound that `step_lower_bound_s` used (replaced here)."""
    pp, v, c = st.pp, st.vpp, terms.block_none_s
    first = sum(terms.edge_s(0, pp))
    last = sum(terms.edge_s(pp - 1, pp)) if pp > 1 else 0.0
    if pp == 1:
        return layers * c + first
    return integer_min_max(layers, pp, v, c, first, last)


def _first_stage_min(terms: CandidateTerms, st: Strategy, stage0, level: float, lower: float,
                     big: float, r_max: float) -> float:
    """min over n_0 of (m - 1/v) max(T*, g_0(n_0)) + G_0(n_0) + P_0(n_0), minus the parts of
    G already counted by `step_lower_bound_s` (the tail, or g*params_0 at v blocks)."""
    pp, v, m = st.pp, st.vpp, terms.micro_batches
    b = terms.block
    fwd_e, bwd_e = terms.edge_s(0, pp)
    first = terms.stage_params(0, pp, 0)
    gc, pc, tail = terms.grad_comm_s_per_param, terms.param_gather_s_per_param, terms.grad_tail_s
    overlap = st.overlap_grad_reduce

    def grad(n: float) -> float:
        comm = gc * (n * terms.block_params + first)
        if overlap:
            return OVERLAP_CONTENTION * comm + max(tail, comm - (n * (b.bwd + r_max) + bwd_e), 0.0)
        return comm

    def gather(n: float) -> float:
        comm = pc * (n * terms.block_params + first)
        if overlap:
            return OVERLAP_CONTENTION * comm + max(comm - (n * b.fwd + fwd_e), 0.0)
        return comm

    def h(n: float) -> float:
        return (m - 1.0 / v) * max(level, stage0.g(n)) + grad(n) + gather(n)

    upper = min(big, stage0.upper)
    kinks = [lower, upper, stage0.kink, stage0.inverse(level)]
    if stage0.rk > 0:
        kinks.append((stage0.r_min + stage0.rd) / stage0.rk)
    for slope, offset in ((gc * terms.block_params - b.bwd - r_max, gc * first - bwd_e - tail),
                          (gc * terms.block_params - b.bwd - r_max, gc * first - bwd_e),
                          (pc * terms.block_params - b.fwd, pc * first - fwd_e)):
        if slope != 0:
            kinks.append(-offset / slope)
    # n_0 is an integer: a piecewise-linear h is smallest at a whole number next to a kink.
    lo, hi = math.ceil(lower - 1e-9), math.floor(upper + 1e-9)
    whole = {min(max(k, lo), hi) for n in kinks for k in (math.floor(n), math.ceil(n))}
    best = min(h(n) for n in whole)
    already = tail if overlap else gc * (v * terms.block_params + first)
    return best - already
