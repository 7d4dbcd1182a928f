"""Lower bounds that let the search skip candidates without solving their ILP.

Both time bounds bound the ILP's objective, which is `evaluate()`'s step time of the best split
(planner/ilp.py), from below; the memory bound bounds the smallest peak memory over all splits.

Notation (cost_models/estimate.py): stage i holds n_i blocks (sum n_i = L, n_i >= v), f_i fully
and s_i selectively recomputed; its per-micro-batch time is
    t_i = n_i c + f_i r_f + s_i r_s + e_i,        c = block fwd + bwd (+ exposed ZeRO traffic),
with e_i the embedding/output-layer time on the first/last stage, r_f, r_s >= 0. The step is
    T = sum_i t_i / v + (m - 1/v) max_i t_i + p2p + G + P + O
with G, P >= 0 the exposed gradient reduction / parameter gather and O = max_i opt * params_i.
An MoE model has two kinds of block: its d leading dense blocks are on stage 0 (n_0 >= d, as
the ILP requires) and every other block is an MoE block, so every per-block sum over a stage is
linear in n_i with the MoE block's coefficient plus a constant shift on stage 0 (`kind_split`).
"""
from __future__ import annotations

import functools
import math

from cost_models import comm
from cost_models.comm import OVERLAP_CONTENTION
from cost_models.flops import block_params
from cost_models.hardware import Hardware
from cost_models.memory import ALLOCATOR_FRACTION, in_flight_microbatches, stage_extra_activations
from cost_models.moe import moe_block_params
from cost_models.pipeline import p2p_transfers_on_critical_path
from cost_models.terms import CandidateTerms
from planner.specs import ModelSpec
from planner.strategy import Strategy
from planner.targets import EngineLimits


def makespan_lower_bound_s(*, layers: int, pp: int, vpp: int, micro_batches: int,
                           block_s: float, first_s: float, last_s: float,
                           slowest: float | None = None, first_blocks: int = 0) -> float:
    """Lower bound of the pipeline makespan over all splits and recompute choices.

    Proof. r_f, r_s >= 0 give t_i >= n_i c + e_i, so S := sum_i t_i >= L c + e_first + e_last,
    and max_i t_i >= min over integer splits (n_i >= v, n_0 >= `first_blocks`, sum = L) of
    max_i (n_i c + e_i) =: T, computed exactly by `integer_min_max`. The makespan is
    S/v + (m - 1/v) max_i t_i with both coefficients >= 0 (m >= 1 >= 1/v), so substituting the
    lower bounds of S and max_i t_i bounds it from below. With pp = 1 the makespan is
    m t_0 = m S. `slowest` may pass T when the caller has it (see `integer_min_max_for_vpp`).
    For an MoE model, c is the MoE block's time and `first_s` carries stage 0's shift
    d (c_dense - c) (see `kind_split`), which may be negative.
    """
    total = layers * block_s + first_s + last_s
    if pp == 1:
        return micro_batches * total
    if slowest is None:
        slowest = integer_min_max(layers, pp, vpp, block_s, first_s, last_s, first_blocks)
    return total / vpp + (micro_batches - 1.0 / vpp) * slowest


def integer_min_max_for_vpp(layers: int, pp: int, vpp: int, c: float, first: float, last: float,
                            at_one: float, first_blocks: int = 0) -> float:
    """`integer_min_max` for vpp, given its value `at_one` for vpp = 1: the same whenever the
    vpp = 1 optimum already leaves room for the larger minimum counts, i.e. at_one >= n_lo c + e
    on every stage (then a split between the new minimum counts and the level's capacities
    exists, as the vpp = 1 capacities already cover L)."""
    lowest = max(max(vpp, first_blocks) * c + first, vpp * c + max(last, 0.0))
    if lowest <= at_one:
        return at_one
    return integer_min_max(layers, pp, vpp, c, first, last, first_blocks)


@functools.lru_cache(maxsize=65536)
def integer_min_max(layers: int, pp: int, vpp: int, c: float, first: float, last: float,
                    first_blocks: int = 0) -> float:
    """min over integer splits (n_i >= v, n_0 >= `first_blocks`, sum = L) of max_i (n_i c + e_i),
    where only the first and last stages have e_i != 0: the smallest level T whose whole-block
    capacities floor((T - e_i) / c) cover L (raise T to the next capacity step until they do)."""
    lows = [max(vpp, first_blocks), vpp, vpp]
    edges = [(first, 1), (0.0, pp - 2), (last, 1)]
    level = max((layers * c + first + last) / pp, lows[0] * c + first, vpp * c + last, vpp * c)
    if c <= 0:
        return level
    for _ in range(layers + 2):
        counts = [max(lo, math.floor((level - e) / c + 1e-12)) for lo, (e, _) in zip(lows, edges)]
        if sum(k * n for k, (_, n) in zip(counts, edges)) >= layers:
            return level
        level = min((k + 1) * c + e for k, (e, n) in zip(counts, edges) if n > 0)
    return level


def kind_split(terms: CandidateTerms, dense_value: float, moe_value: float) -> tuple[float, float]:
    """(c, shift) such that a per-block quantity (dense_value per dense block, moe_value per MoE
    block) sums over stage i's blocks to n_i c + [i = 0] shift.

    An MoE model's d leading dense blocks all sit on stage 0 (planner/ilp.py: n_0 >= d; they
    come first in block order) and every other block is an MoE block, so stage 0 sums to
    d dense_value + (n_0 - d) moe_value = n_0 moe_value + d (dense_value - moe_value) and every
    other stage to n_i moe_value. A dense model has one kind: (dense_value, 0). With dense blocks
    between MoE blocks too (`MoESpec.layer_interval` > 1) the pair is (min of the two, 0): every
    stage's sum is then at least n_i c, which is all the bounds need (a weaker relaxation).
    """
    if terms.moe is None:
        return dense_value, 0.0
    return split_by_kind(terms.first_dense_layers, terms.moe_interval, dense_value, moe_value)


def split_by_kind(first_dense: int, interval: int, dense_value: float,
                  moe_value: float) -> tuple[float, float]:
    """`kind_split` of an MoE model with `first_dense` leading dense blocks and one MoE block in
    every `interval` after them: (moe_value, d (dense_value - moe_value)), or with interval > 1
    (dense blocks between MoE ones: each block >= the smaller value) (min of the two, 0)."""
    if interval > 1:
        return min(dense_value, moe_value), 0.0
    return moe_value, first_dense * (dense_value - moe_value)


def first_stage_blocks(terms: CandidateTerms, st: Strategy) -> int:
    """Fewest blocks stage 0 can hold: v, and an MoE model's d leading dense blocks."""
    return max(st.vpp, terms.first_dense_layers) if terms.moe is not None else st.vpp


def step_lower_bound_s(terms: CandidateTerms, st: Strategy, layers: int) -> float:
    """Lower bound of the ILP objective (step time) of one candidate with its terms."""
    return sum(step_bound_parts(terms, st, layers).values())


def step_bound_parts(terms: CandidateTerms, st: Strategy, layers: int) -> dict[str, float]:
    """The parts of `step_lower_bound_s`: sum_i t_i / v, (m - 1/v) max_i t_i, p2p, O, G, P.

    Proof. The makespan parts are `makespan_lower_bound_s` with c = block_none_s (which includes
    the exposed per-block ZeRO traffic); for an MoE model c is the MoE block's and stage 0 is
    shifted by its dense blocks (`kind_split`; n_0 >= max(v, d)). p2p is a constant of the
    candidate. O, G and P are maxima over stages of w_i = a params_i + b experts_i with a, b >= 0
    (dp*cp-sharded and expert parameters): sum_i w_i is split-free (every block is on exactly one
    stage, and the kind of each block is fixed), so max_i w_i >= W_max := max(sum_i w_i / pp,
    w_0 with n_0 at its minimum, w_last with v blocks). O = max_i opt-weights >= W_max.
    G (estimate.step_grad_exposed_s) is the max over stages of k c_i + max(0, ...) with c_i the
    gradient weights and k the contention share: so G >= k W_max, and stage 0 (no upstream
    slack) gives G >= k c_0 + tail; without overlap G = max_i c_i >= W_max. P likewise:
    >= k W_max with overlap, W_max without.
    """
    pp, v, m = st.pp, st.vpp, terms.micro_batches
    first_fwd, first_bwd = terms.edge_s(0, pp)
    last_fwd, last_bwd = terms.edge_s(pp - 1, pp) if pp > 1 else (0.0, 0.0)
    first_s, last_s = first_fwd + first_bwd, last_fwd + last_bwd
    moe = terms.moe or terms.dense
    c, shift = kind_split(terms, terms.dense.none_s, moe.none_s)
    lo = first_stage_blocks(terms, st)
    total_s = layers * c + shift + first_s + last_s
    slowest = total_s if pp == 1 else integer_min_max(layers, pp, v, c, first_s + shift, last_s, lo)
    k = OVERLAP_CONTENTION
    grad_most, grad_first = _stage_weight_floor(
        terms, st, layers, terms.grad_comm_s_per_param, terms.expert_grad_comm_s_per_param)
    gather_most, _ = _stage_weight_floor(
        terms, st, layers, terms.param_gather_s_per_param, terms.expert_param_gather_s_per_param)
    optimizer, _ = _stage_weight_floor(
        terms, st, layers, terms.optimizer_s_per_param, terms.expert_optimizer_s_per_param)
    if st.overlap_grad_reduce:
        grad = max(k * grad_first + terms.grad_tail_s, k * grad_most)
        gather = k * gather_most
    else:
        grad, gather = grad_most, gather_most
    return {"sum": total_s / v, "slowest": (m - 1.0 / v) * slowest, "p2p": terms.p2p_s,
            "optimizer": optimizer, "grad": grad, "gather": gather}


def _stage_weight_floor(terms: CandidateTerms, st: Strategy, layers: int, per_param: float,
                        per_expert: float) -> tuple[float, float]:
    """(W_max, w_0 at its fewest blocks) for w_i = per_param params_i + per_expert experts_i
    (see `step_bound_parts`)."""
    pp, v = st.pp, st.vpp
    moe = terms.moe or terms.dense
    c, shift = kind_split(terms, per_param * terms.dense.params,
                          per_param * moe.params + per_expert * moe.expert_params)
    first, last = per_param * terms.first_params, per_param * terms.last_params
    total = layers * c + shift + first + last
    first_min = first_stage_blocks(terms, st) * c + shift + first + (last if pp == 1 else 0.0)
    last_min = v * c + last
    return max(total / pp, first_min, last_min), first_min


def cheapest_activation_bytes(terms, limits: EngineLimits) -> float:
    """Smallest stored activation bytes per block over the recompute modes the target allows
    (of the dense block, or of the `BlockKind` passed)."""
    a = terms.acts
    by_mode = {"none": a.none, "selective": a.selective, "full": a.full}
    return min(by_mode[mode] for mode in ("none", *limits.recompute_modes))


def memory_lower_bound_bytes(terms: CandidateTerms, st: Strategy, layers: int,
                             limits: EngineLimits) -> float:
    """Lower bound of the smallest possible peak GPU memory over all splits and recompute.

    Proof. Stage i's memory is (1 + alpha)(params_i * state + experts_i * expert_state + z3 +
    in_flight_i * stored_i + transient_i + extra_i) with transient_i >= 0 and stored_i >= the sum
    of its blocks' smallest stored bytes, so it is at least base_i + k_i n_i (linear, k_i > 0;
    for an MoE model k_i is an MoE block's bytes and stage 0's base holds the shift of its d
    dense blocks, `kind_split`). Relaxing n_i to reals, min over splits of max_i of these is the
    larger of the water level M with sum_i (M - base_i)/k_i = L (dropping the minimum counts
    only lowers the minimum) and max_i (base_i + k_i n_lo,i) (stage 0 holds at least
    `first_stage_blocks`, every other stage at least v).
    """
    pp, v = st.pp, st.vpp
    scale = 1.0 + ALLOCATOR_FRACTION
    state = terms.states.weights + terms.states.grads + terms.states.optimizer
    expert_state = sum((terms.expert_states.weights, terms.expert_states.grads,
                        terms.expert_states.optimizer))
    moe = terms.moe or terms.dense
    bases, slopes, lows = [], [], []
    for i in range(pp):
        per_kind = [kind.params * state + kind.expert_params * expert_state
                    + terms.in_flight[i] * cheapest_activation_bytes(kind, limits)
                    for kind in (terms.dense, moe)]
        k, shift = kind_split(terms, *per_kind)
        fixed = terms.stage_params(i, pp, 0) * state + terms.zero3_buffer_bytes + terms.extra_acts[i]
        bases.append(scale * (fixed + (shift if i == 0 else 0.0)))
        slopes.append(scale * k)
        lows.append(first_stage_blocks(terms, st) if i == 0 else v)
    floor = max(b + k * n for b, k, n in zip(bases, slopes, lows))
    if min(slopes) <= 0:
        return floor
    level = (layers + sum(b / k for b, k in zip(bases, slopes))) / sum(1 / k for k in slopes)
    return max(floor, level)


def host_lower_bound_bytes(terms: CandidateTerms, st: Strategy, layers: int) -> float:
    """Lower bound of the largest host bytes per GPU: the mean over stages (max >= mean); the
    total is split-free (each block's kind is fixed)."""
    moe = terms.moe or terms.dense
    c, shift = kind_split(
        terms, terms.dense.params * terms.states.host,
        moe.params * terms.states.host + moe.expert_params * terms.expert_states.host)
    edges = (terms.first_params + terms.last_params) * terms.states.host
    return (layers * c + shift + edges) / st.pp


def pipeline_p2p_s(model: ModelSpec, st: Strategy, hw: Hardware) -> float:
    """`CandidateTerms.p2p_s` computed alone (cheap, for group bounds); the tests check that it
    equals the terms' value, so a change in terms.py cannot silently weaken the bound."""
    if st.pp == 1:
        return 0.0
    train = model.training
    nbytes = st.mbs * (train.seq_len // st.cp) * model.arch.hidden * 2 / st.tp
    link = comm.group_link(hw, st.pp, st.tp * st.cp * st.dp)
    transfers = p2p_transfers_on_critical_path(st.pp, st.micro_batches(model), st.vpp)
    return transfers * comm.collective_time_s("p2p", nbytes, 2, link)


def group_memory_lower_bound_bytes(model: ModelSpec, outer: Strategy, *, state_bytes: float,
                                   act_bytes: float, expert_state_bytes: float = 0.0,
                                   moe_act_bytes: float | None = None) -> float:
    """Lower bound of the peak memory of every member of a group (any ZeRO/offload, any split).

    `state_bytes` (`expert_state_bytes`) is the smallest GPU state bytes per dp*cp-sharded
    (routed-expert) parameter over the members and `act_bytes` (`moe_act_bytes`) the smallest
    stored bytes per dense (MoE) block over the allowed recompute modes. Proof: stage i needs at
    least (1 + alpha)(sum over its blocks of (params state + experts expert_state +
    in_flight_i act) + extra_i) (embedding/head parameters, the ZeRO-3 buffer and transients are
    >= 0). The max over stages is at least the mean, where every block is on some stage with
    its kind fixed (an MoE model's d dense blocks lead) and in_flight_i >= in_flight of the last
    stage (in-flight counts fall along the pipeline); it is also at least stage 0's value with
    its fewest blocks (v, and the d dense blocks of an MoE model).
    """
    pp, v, layers = outer.pp, outer.vpp, model.arch.layers
    m = outer.micro_batches(model)
    dense_params = block_params(model.arch) / outer.tp
    d, first_blocks, moe_state, moe_act = layers, v, dense_params * state_bytes, act_bytes
    if model.arch.moe is not None:
        split = moe_block_params(model, outer)
        d = model.arch.moe.first_dense_layers
        first_blocks = max(v, d)
        moe_state = split.dense * state_bytes + split.experts * expert_state_bytes
        moe_act = act_bytes if moe_act_bytes is None else moe_act_bytes
    dense_state = dense_params * state_bytes
    if model.arch.moe is not None and model.arch.moe.layer_interval > 1:
        # Dense blocks between MoE ones: every block counts its kinds' smaller state and
        # smaller activation bytes (each term is >= 0, so the sum stays a lower bound).
        dense_state = moe_state = min(dense_state, moe_state)
        act_bytes = moe_act = min(act_bytes, moe_act)
        d = 0

    def blocks_bytes(dense: int, moe: int, in_flight: float) -> float:
        return dense * (dense_state + in_flight * act_bytes) + moe * (moe_state + in_flight * moe_act)

    first_in, last_in = in_flight_microbatches(0, outer, m), in_flight_microbatches(pp - 1, outer, m)
    first_extra = stage_extra_activations(model, outer, 0, first_in)
    last_extra = stage_extra_activations(model, outer, pp - 1, last_in) if pp > 1 else 0.0
    mean = (blocks_bytes(d, layers - d, last_in) + first_extra + last_extra) / pp
    first_dense = min(d, first_blocks)
    first = blocks_bytes(first_dense, first_blocks - first_dense, first_in) + first_extra
    return (1.0 + ALLOCATOR_FRACTION) * max(mean, first)
