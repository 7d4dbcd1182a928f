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
P >= k p_0 + max(0, p_0 - fwd_0) with p_0 = p*params_0, where bwd_0 <= n_0 (b_bwd + r_max) +
e_bwd; G and P are also at least their split-free bounds (planner/bounds.py). For every whole
n_0 the step is at least sum_i t_i / v + (m - 1/v) max(T*, g_0(n_0)) + p2p + O + G + P with
these lower bounds substituted; the bound is the minimum of that over n_0.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

from cost_models.comm import OVERLAP_CONTENTION
from cost_models.memory import ALLOCATOR_FRACTION
from cost_models.terms import CandidateTerms
from planner.bounds import step_bound_parts
from planner.ilp import _MEMORY_MARGIN
from planner.strategy import Strategy
from planner.targets import EngineLimits

INFEASIBLE = float("inf")


def strong_step_lower_bound_s(terms: CandidateTerms, st: Strategy, layers: int,
                              capacity_bytes: float, limits: EngineLimits) -> float:
    """Lower bound of the candidate's ILP objective (inf when no split can fit). MoE candidates
    (two block kinds) get the split-free bound of planner/bounds.py."""
    if terms.moe is not None:
        return sum(step_bound_parts(terms, st, layers).values())
    pp, v = st.pp, st.vpp
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

    parts = step_bound_parts(terms, st, layers)
    base = parts["sum"] + parts["p2p"] + parts["optimizer"]
    if pp == 1:  # one stage holds all L blocks: S = t_0 >= g_0(L) as well
        level = stages[0].g(layers)
        base += level - parts["sum"]
        return base + _first_stage_min(terms, st, stages[0], level, parts, layers, layers, r_max)
    level = _integer_level(stages, layers, v, _water_level(stages, layers, v))
    return base + _first_stage_min(terms, st, stages[0], level, parts, v, big, r_max)


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


def _first_stage_min(terms: CandidateTerms, st: Strategy, stage0: _Stage, level: float,
                     parts: dict[str, float], lower: int, upper: int, r_max: float) -> float:
    """min over whole n_0 of (m - 1/v) max(T*, g_0(n_0)) + max(G_lb, G_0(n_0)) +
    max(P_lb, P_0(n_0)), with G_lb, P_lb the split-free bounds of `step_bound_parts`."""
    pp, v, m = st.pp, st.vpp, terms.micro_batches
    b, k = terms.block, OVERLAP_CONTENTION
    fwd_e, bwd_e = terms.edge_s(0, pp)
    first = terms.stage_params(0, pp, 0)
    gc, pc, tail = terms.grad_comm_s_per_param, terms.param_gather_s_per_param, terms.grad_tail_s
    overlap = st.overlap_grad_reduce

    def h(n: int) -> float:
        grad = gc * (n * terms.block_params + first)
        gather = pc * (n * terms.block_params + first)
        if overlap:
            grad = k * grad + max(tail, grad - (n * (b.bwd + r_max) + bwd_e), 0.0)
            gather = k * gather + max(gather - (n * b.fwd + fwd_e), 0.0)
        return ((m - 1.0 / v) * max(level, stage0.g(n)) + max(parts["grad"], grad)
                + max(parts["gather"], gather))

    top = min(upper, math.floor(stage0.upper))
    return min(h(n) for n in range(lower, max(lower, top) + 1))
