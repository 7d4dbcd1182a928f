"""A stronger lower bound of one candidate's ILP objective: it prices the recompute that memory
forces on each stage and the exposed data-parallel traffic of the first stage.

Notation as in planner/bounds.py. For stage i with F_i in-flight micro-batches, the memory row
(dropping the transient, which is >= 0) reads
    F_i (f_i D_f + s_i D_s) >= n_i K_i - D_i,   K_i = b*state + F_i*a_none,
    D_i = cap / (1 + alpha) - c_i*state - z3 - extra_i
(D_f = a_none - a_full, D_s = a_none - a_selective, c_i the embedding/head parameters). Recompute
costs R_i = f_i r_f + s_i r_s >= rho (f_i D_f + s_i D_s) with rho = min over allowed modes of
r/D, and f_i + s_i <= n_i caps the bytes recompute can free. Hence
    t_i >= g_i(n_i) = n_i c + e_i + rho max(0, (n_i K_i - D_i) / F_i),   n_i <= U_i,
with U_i the largest n_i for which even recomputing every block fits. g_i is convex and
increasing, so T* = min over real splits of max_i g_i(n_i) is a water level (found exactly on
the piecewise-linear sum of inverses). Any split has max_i t_i >= max(T*, g_0(n_0)).

Stage 0 has no upstream slack, so with overlap G >= max(tail, g*params_0 - bwd_0) and
P >= p*params_0 - fwd_0, where bwd_0 <= n_0 (b_bwd + r_max) + e_bwd. Every term is a convex
piecewise-linear function of n_0, so the bound minimises their sum over n_0 exactly by checking
the kinks and the end points. Summing lower bounds of separate terms bounds the sum.
"""
from __future__ import annotations

from cost_models.memory import ALLOCATOR_FRACTION
from cost_models.terms import CandidateTerms
from planner.bounds import step_lower_bound_s
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
        upper = big if slope_left <= 0 else min(big, d / slope_left)
        if upper < v:
            return INFEASIBLE
        stages.append((c, fwd + bwd, rho * k / flight, rho * d / flight, d / k, upper))
    if sum(s[5] for s in stages) < layers:
        return INFEASIBLE

    simple = step_lower_bound_s(terms, st, layers)
    base = simple - (m - 1.0 / v) * _simple_slowest(terms, st, layers)
    if pp == 1:  # one stage holds all L blocks: S = t_0 >= g_0(L) as well
        level = _g(stages[0], layers)
        base += level - (layers * c + stages[0][1])
        return base + _first_stage_min(terms, st, stages[0], level, layers, layers, r_max)
    level = _water_level(stages, layers, v)
    return base + _first_stage_min(terms, st, stages[0], level, v, big, r_max)


def _g(stage, n: float) -> float:
    """g_i(n) (see module doc)."""
    c, e, rk, rd, kink, _ = stage
    return n * c + e + (rk * n - rd if n > kink else 0.0)


def _g_inverse(stage, level: float) -> float:
    """Largest real n with g_i(n) <= level, capped at U_i."""
    c, e, rk, rd, kink, upper = stage
    n = (level - e) / c if c > 0 else upper
    if n > kink:
        n = (level - e + rd) / (c + rk)
    return min(n, upper)


def _water_level(stages, layers: int, v: int) -> float:
    """min over real splits (v <= n_i <= U_i, sum = L) of max_i g_i(n_i)."""
    low = max(_g(s, v) for s in stages)
    if sum(_g_inverse(s, low) for s in stages) >= layers:
        return low
    points = sorted({p for s in stages for p in (_g(s, min(max(s[4], v), s[5])), _g(s, s[5]))
                     if p > low})
    prev, prev_sum = low, sum(_g_inverse(s, low) for s in stages)
    for point in points:
        total = sum(_g_inverse(s, point) for s in stages)
        if total >= layers:
            # Linear between breakpoints: interpolate to where the sum reaches L.
            return prev + (point - prev) * (layers - prev_sum) / (total - prev_sum)
        prev, prev_sum = point, total
    return points[-1] if points else low


def _simple_slowest(terms: CandidateTerms, st: Strategy, layers: int) -> float:
    """The max_i t_i lower bound that `step_lower_bound_s` used (replaced here)."""
    pp, v, c = st.pp, st.vpp, terms.block_none_s
    first = sum(terms.edge_s(0, pp))
    last = sum(terms.edge_s(pp - 1, pp)) if pp > 1 else 0.0
    if pp == 1:
        return layers * c + first
    return max((layers * c + first + last) / pp, v * c + first, v * c + last)


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
        if overlap:
            return max(tail, gc * (n * terms.block_params + first) - (n * (b.bwd + r_max) + bwd_e), 0.0)
        return gc * (n * terms.block_params + first)

    def gather(n: float) -> float:
        comm = pc * (n * terms.block_params + first)
        return max(comm - (n * b.fwd + fwd_e) if overlap else comm, 0.0)

    def h(n: float) -> float:
        return (m - 1.0 / v) * max(level, _g(stage0, n)) + grad(n) + gather(n)

    upper = min(big, stage0[5])
    kinks = [lower, upper, stage0[4], _g_inverse(stage0, level)]
    for slope, offset in ((gc * terms.block_params - b.bwd - r_max, gc * first - bwd_e - tail),
                          (gc * terms.block_params - b.bwd - r_max, gc * first - bwd_e),
                          (pc * terms.block_params - b.fwd, pc * first - fwd_e)):
        if slope != 0:
            kinks.append(-offset / slope)
    best = min(h(min(max(n, lower), upper)) for n in kinks)
    already = tail if overlap else gc * (v * terms.block_params + first)
    return best - already
