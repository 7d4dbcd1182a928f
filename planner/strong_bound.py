"""A stronger lower bound of one candidate's ILP objective: it prices the recompute that memory
forces on each stage and the exposed data-parallel traffic of the first stage.

Notation as in planner/bounds.py. For stage i with F_i in-flight micro-batches, the memory row
(dropping the transient, which is >= 0) reads
    F_i (sum of the bytes its recomputed blocks free) >= sum over its blocks of K - D_i,
    K = b*state + x*expert_state + F_i*a_none,   D_i = cap / (1 + alpha) - c_i*state - z3 - extra_i
(per block kind: b its dp*cp-sharded and x its routed-expert parameters; a block recomputed in
mode M frees D_M = a_none - a_M; c_i the embedding/head parameters). A dense model has one kind;
an MoE model's stage 0 holds its d dense blocks and n_0 - d MoE blocks, every other stage only
MoE blocks, so the block sum is n_i K + [i = 0] d (K_dense - K_moe) (`bounds.kind_split`), folded
into D_0. Recompute costs R_i = sum r_M >= rho_i (bytes freed) with rho_i = min of r/D over the
allowed modes of the kinds on stage i (recomputing dense blocks first, as the ILP does, only
adds), and one block frees at most fm (its kind's largest D_M). Once n_i K_i > D_i some block is
recomputed, so R_i >= r_min (one block) and the transient term adds at least D_min (the smallest
D_M on the stage) to the row. Hence
    t_i >= g_i(n_i) = n_i c + e_i + [n_i K_i > D_i] max(r_min, rho (n_i K_i - D_i + D_min) / F_i)
(c, e_i: the MoE block's time and stage 0's shift for an MoE model), for lo_i <= n_i <= U_i:
lo_0 = max(v, d), lo_i = v, and U_i the larger of D_i / K_i (fits without recompute) and the
largest n_i for which recomputing every block (each freeing fm) fits, rounded down (block counts
are whole). g_i is increasing and piecewise linear, so T* = min over real splits of
max_i g_i(n_i) is a water level, found exactly on the piecewise-linear sum of inverses. Any
split has max_i t_i >= max(T*, g_0(n_0)).

Stage 0 has no upstream slack, so with overlap G >= k c_0 + max(tail, c_0 - bwd_0) with
c_0 = g*params_0 + g_e*experts_0 and k the contention share (estimate.step_grad_exposed_s), and
P >= k p_0 + max(0, p_0 - fwd_0) likewise, where bwd_0 <= sum over its blocks of (b_bwd + r_max)
+ e_bwd (r_max the kind's dearest allowed mode) and fwd_0 = sum b_fwd + e_fwd; G and P are also
at least their split-free bounds (planner/bounds.py). For every whole n_0 the step is at least
sum_i t_i / v + (m - 1/v) max(T*, g_0(n_0)) + p2p + O + G + P with these lower bounds
substituted; the bound is the minimum of that over n_0.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

from cost_models.comm import OVERLAP_CONTENTION
from cost_models.memory import ALLOCATOR_FRACTION
from cost_models.terms import BlockKind, CandidateTerms
from planner.bounds import first_stage_blocks, kind_split, step_bound_parts
from planner.ilp import _MEMORY_MARGIN
from planner.strategy import Strategy
from planner.targets import EngineLimits

INFEASIBLE = float("inf")
_COUNT_TOLERANCE = 1e-6
"""Block counts within this of a memory limit count as within it (the limit moves up by it), so
the ILP's feasibility tolerance (1e-10 of capacity) cannot fit a whole block the bound excludes."""


def recompute_modes(kind: BlockKind, limits: EngineLimits) -> list[tuple[float, float]]:
    """(recompute seconds r, bytes freed D) of each allowed recompute mode of one block kind
    (every allowed mode, also one that frees nothing)."""
    b, a = kind.times, kind.acts
    modes = [(b.recompute_full, a.none - a.full, "full"),
             (b.recompute_selective, a.none - a.selective, "selective")]
    return [(r, d) for r, d, name in modes if name in limits.recompute_modes]


def strong_step_lower_bound_s(terms: CandidateTerms, st: Strategy, layers: int,
                              capacity_bytes: float, limits: EngineLimits) -> float:
    """Lower bound of the candidate's ILP objective (inf when no split can fit); see module doc.
    A model whose dense blocks sit between MoE blocks (`MoESpec.layer_interval` > 1) gets the
    split-free bound of planner/bounds.py."""
    if terms.moe is not None and terms.moe_interval > 1:
        return sum(step_bound_parts(terms, st, layers).values())
    pp, v = st.pp, st.vpp
    kinds = {"dense": terms.dense, "moe": terms.moe or terms.dense}
    modes = {name: recompute_modes(kind, limits) for name, kind in kinds.items()}
    most_freed = {name: max((d for _, d in modes[name] if d > 0), default=0.0) for name in kinds}
    on_first = ("dense", "moe") if terms.moe is not None and terms.first_dense_layers else ("moe",)
    c, c_shift = kind_split(terms, kinds["dense"].none_s, kinds["moe"].none_s)
    state = terms.states.weights + terms.states.grads + terms.states.optimizer
    expert_state = sum((terms.expert_states.weights, terms.expert_states.grads,
                        terms.expert_states.optimizer))
    room = capacity_bytes * (1 - _MEMORY_MARGIN) / (1 + ALLOCATOR_FRACTION)
    big = layers - v * (pp - 1)

    stages = []
    for i in range(pp):
        freeing = [(r, d) for name in (on_first if i == 0 else ("moe",)) for r, d in modes[name]
                   if d > 0]
        rho = min((r / d for r, d in freeing), default=0.0)
        r_min = min((r for r, _ in freeing), default=0.0)  # one recomputed block at least
        transient = min((d for _, d in freeing), default=0.0)  # its transient buffer at least
        flight = terms.in_flight[i]
        # Bytes per block (K), and per block when each frees the most it can (left).
        k, k_shift = kind_split(
            terms, _block_bytes(kinds["dense"], state, expert_state, flight, 0.0),
            _block_bytes(kinds["moe"], state, expert_state, flight, 0.0))
        left, left_shift = kind_split(
            terms, _block_bytes(kinds["dense"], state, expert_state, flight, most_freed["dense"]),
            _block_bytes(kinds["moe"], state, expert_state, flight, most_freed["moe"]))
        free = room - terms.stage_params(i, pp, 0) * state - terms.zero3_buffer_bytes \
            - terms.extra_acts[i]
        d = free - (k_shift if i == 0 else 0.0)
        recomputed = free - transient - (left_shift if i == 0 else 0.0)
        kink = d / k + _COUNT_TOLERANCE
        upper = min(big, math.floor(max(kink, big if left <= 0 else recomputed / left)
                                    + _COUNT_TOLERANCE))
        lower = first_stage_blocks(terms, st) if i == 0 else v
        if upper < lower:
            return INFEASIBLE
        fwd, bwd = terms.edge_s(i, pp)
        stages.append(_Stage(c=c, e=fwd + bwd + (c_shift if i == 0 else 0.0), rk=rho * k / flight,
                             rd=rho * (d - transient) / flight, kink=kink, upper=upper,
                             r_min=r_min, lower=lower))
    if sum(s.upper for s in stages) < layers:
        return INFEASIBLE

    parts = step_bound_parts(terms, st, layers)
    base = parts["sum"] + parts["p2p"] + parts["optimizer"]
    if pp == 1:  # one stage holds all L blocks: S = t_0 >= g_0(L) as well
        level = stages[0].g(layers)
        base += level - parts["sum"]
        return base + _first_stage_min(terms, st, stages[0], [level], parts, layers, layers, modes)
    level = _integer_level(stages, layers, _water_level(stages, layers))
    top = min(big, stages[0].upper)
    rest = _integer_levels(stages[1:], layers - top, layers - stages[0].lower)
    levels = [max(level, rest[layers - n - (layers - top)]) for n in range(stages[0].lower, top + 1)]
    return base + _first_stage_min(terms, st, stages[0], levels, parts, stages[0].lower, top, modes)


def _block_bytes(kind: BlockKind, state: float, expert_state: float, in_flight: float,
                 freed: float) -> float:
    """Memory of one block of `kind` on a stage with `in_flight` micro-batches, when
    recomputing it frees `freed` bytes per micro-batch (0: stored whole)."""
    return (kind.params * state + kind.expert_params * expert_state
            + in_flight * (kind.acts.none - freed))


@dataclass(frozen=True)
class _Stage:
    """g_i(n) = n c + e, plus max(r_min, rk n - rd) once n > kink (memory forces recompute)."""

    c: float
    e: float
    rk: float
    rd: float
    kink: float
    upper: int
    """U_i: the most whole blocks that can fit."""
    r_min: float
    lower: int
    """Fewest blocks the stage holds (v; on stage 0 of an MoE model also its d dense blocks)."""

    def g(self, n: float) -> float:
        """g_i(n) (see module doc); increasing, with an upward jump at the kink."""
        extra = max(self.r_min, self.rk * n - self.rd) if n > self.kink else 0.0
        return n * self.c + self.e + extra

    def inverse(self, level: float) -> float:
        """Largest real n with g_i(n) <= level, capped at U_i (at U_i whenever g_i(U_i) <= level,
        so rounding in (level - e) / c cannot lose the last block)."""
        if self.c <= 0 or self.g(self.upper) <= level:
            return self.upper
        n = (level - self.e) / self.c
        if n > self.kink:
            flat = (level - self.e - self.r_min) / self.c  # on the r_min piece
            if self.rk * flat - self.rd > self.r_min:
                flat = (level - self.e + self.rd) / (self.c + self.rk)
            n = max(self.kink, flat)
        return min(n, self.upper)

    def breakpoints(self) -> list[float]:
        """Levels where the inverse changes slope (within [lo_i, U_i])."""
        lower = self.lower
        ns = [self.kink, self.upper]
        if self.rk > 0:
            ns.append((self.r_min + self.rd) / self.rk)
        out = [self.g(self.upper)]
        for n in ns:
            if lower <= n <= self.upper:
                out.append(self.g(n))
                out.append(n * self.c + self.e + max(self.r_min, self.rk * n - self.rd))
        return out


def _water_level(stages: list[_Stage], layers: int) -> float:
    """min over real splits (lo_i <= n_i <= U_i, sum = L) of max_i g_i(n_i)."""
    low = max(s.g(s.lower) for s in stages)
    prev, prev_sum = low, sum(s.inverse(low) for s in stages)
    if prev_sum >= layers:
        return low
    points = sorted({p for s in stages for p in s.breakpoints() if p > low})
    for point in points:
        total = sum(s.inverse(point) for s in stages)
        if total >= layers:
            # Linear between breakpoints: interpolate to where the sum reaches L.
            return prev + (point - prev) * (layers - prev_sum) / (total - prev_sum)
        prev, prev_sum = point, total
    return points[-1] if points else low


def _integer_level(stages: list[_Stage], layers: int, level: float) -> float:
    """min over integer splits of max_i g_i(n_i): from the real water level, raise the level to
    the next g_i(k) at an integer k until the whole blocks under it cover L (block counts are
    integers in the ILP, so this is still a lower bound of max_i t_i)."""
    counts = [min(math.floor(s.upper), max(s.lower, math.floor(s.inverse(level)))) for s in stages]
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


def _integer_levels(stages: list[_Stage], low_total: int, high_total: int) -> list[float]:
    """`_integer_level` of `stages` for every total block count in [low_total, high_total]
    (inf where no whole split of that total fits): from the real water level of the smallest
    feasible total, add blocks one at a time to the stage whose next value g_i(k + 1) is
    smallest. Each g_i is increasing, so after R blocks the chosen values are the R smallest of
    the stages' value lists (each list taken from its start); any split of R blocks takes R of
    them, so its largest is at least the greedy's largest (and every value added at the real
    level is below it)."""
    lowest = sum(s.lower for s in stages)
    start = max(low_total, lowest)
    if start > high_total or sum(s.upper for s in stages) < start:
        return [INFEASIBLE] * (high_total - low_total + 1)
    level = _water_level(stages, start)
    counts = [min(s.upper, max(s.lower, math.floor(s.inverse(level)))) for s in stages]
    nexts = [(s.g(k + 1), i) for i, (s, k) in enumerate(zip(stages, counts)) if k + 1 <= s.upper]
    heapq.heapify(nexts)
    best, total = max(level, max(s.g(k) for s, k in zip(stages, counts))), sum(counts)
    out = []
    for wanted in range(low_total, high_total + 1):
        while total < wanted and nexts:
            value, i = heapq.heappop(nexts)
            counts[i] += 1
            total += 1
            best = max(best, value)
            if counts[i] + 1 <= stages[i].upper:
                heapq.heappush(nexts, (stages[i].g(counts[i] + 1), i))
        out.append(best if lowest <= wanted <= total else INFEASIBLE)
    return out


def _first_stage_min(terms: CandidateTerms, st: Strategy, stage0: _Stage, levels: list[float],
                     parts: dict[str, float], lower: int, upper: int, modes: dict) -> float:
    """min over whole n_0 in [lower, upper] of (m - 1/v) max(T(n_0), g_0(n_0)) +
    max(G_lb, G_0(n_0)) + max(P_lb, P_0(n_0)), with T(n_0) = `levels`[n_0 - lower] the smallest
    max_i t_i of the other stages holding the remaining L - n_0 blocks (and at least T*), and
    G_lb, P_lb the split-free bounds of `step_bound_parts`; `modes` holds the (r, D) recompute
    modes of the "dense" and "moe" kinds (`recompute_modes`)."""
    pp, v, m = st.pp, st.vpp, terms.micro_batches
    k, dense, moe = OVERLAP_CONTENTION, terms.dense, terms.moe or terms.dense
    fwd_e, bwd_e = terms.edge_s(0, pp)
    first = terms.stage_params(0, pp, 0)
    gc, egc = terms.grad_comm_s_per_param, terms.expert_grad_comm_s_per_param
    pc, epc = terms.param_gather_s_per_param, terms.expert_param_gather_s_per_param
    tail, overlap = terms.grad_tail_s, st.overlap_grad_reduce

    def slowest_bwd(kind: BlockKind, name: str) -> float:
        return kind.times.bwd + max((r for r, _ in modes[name]), default=0.0)

    # Per block of stage 0 (MoE coefficient) plus stage 0's shift (its dense blocks).
    grad_c = kind_split(terms, gc * dense.params, gc * moe.params + egc * moe.expert_params)
    gather_c = kind_split(terms, pc * dense.params, pc * moe.params + epc * moe.expert_params)
    bwd_c = kind_split(terms, slowest_bwd(dense, "dense"), slowest_bwd(moe, "moe"))
    fwd_c = kind_split(terms, dense.times.fwd, moe.times.fwd)

    def h(n: int) -> float:
        if levels[n - lower] == INFEASIBLE:  # the other stages cannot hold the rest
            return INFEASIBLE
        grad = n * grad_c[0] + grad_c[1] + gc * first
        gather = n * gather_c[0] + gather_c[1] + pc * first
        if overlap:
            grad = k * grad + max(tail, grad - (n * bwd_c[0] + bwd_c[1] + bwd_e), 0.0)
            gather = k * gather + max(gather - (n * fwd_c[0] + fwd_c[1] + fwd_e), 0.0)
        return ((m - 1.0 / v) * max(levels[n - lower], stage0.g(n)) + max(parts["grad"], grad)
                + max(parts["gather"], gather))

    return min(h(n) for n in range(lower, max(lower, upper) + 1))
