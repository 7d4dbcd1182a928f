"""Lower bounds that let the search skip candidates without solving their ILP.

Both time bounds bound the ILP's objective, which is `evaluate()`'s step time of the best split
(planner/ilp.py), from below; the memory bound bounds the smallest peak memory over all splits.

Notation (cost_models/estimate.py): stage i holds n_i blocks (sum n_i = L, n_i >= v), f_i fully
and s_i selectively recomputed; its per-micro-batch time is
    t_i = n_i c + f_i r_f + s_i r_s + e_i,        c = block fwd + bwd (+ exposed ZeRO traffic),
with e_i the embedding/output-layer time on the first/last stage, r_f, r_s >= 0. The step is
    T = sum_i t_i / v + (m - 1/v) max_i t_i + p2p + G + P + O
with G, P >= 0 the exposed gradient reduction / parameter gather and O = max_i opt * params_i.
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
                           slowest: float | None = None) -> float:
    """Lower bound of the pipeline makespan over all splits and recompute choices.

    Proof. r_f, r_s >= 0 give t_i >= n_i c + e_i, so S := sum_i t_i >= L c + e_first + e_last,
    and max_i t_i >= min over integer splits (n_i >= v, sum = L) of max_i (n_i c + e_i) =: T,
    computed exactly by `integer_min_max`. The makespan is S/v + (m - 1/v) max_i t_i with both
    coefficients >= 0 (m >= 1 >= 1/v), so substituting the lower bounds of S and max_i t_i
    bounds it from below. With pp = 1 the makespan is m t_0 = m S. `slowest` may pass T when
    the caller has it (see `integer_min_max_for_vpp`).
    """
    total = layers * block_s + first_s + last_s
    if pp == 1:
        return micro_batches * total
    if slowest is None:
        slowest = integer_min_max(layers, pp, vpp, block_s, first_s, last_s)
    return total / vpp + (micro_batches - 1.0 / vpp) * slowest


def integer_min_max_for_vpp(layers: int, pp: int, vpp: int, c: float, first: float, last: float,
                            at_one: float) -> float:
    """`integer_min_max` for vpp, given its value `at_one` for vpp = 1: the same whenever the
    vpp = 1 optimum already gives every stage >= vpp blocks (at_one >= vpp c + max edge)."""
    if vpp * c + max(first, last) <= at_one:
        return at_one
    return integer_min_max(layers, pp, vpp, c, first, last)


@functools.lru_cache(maxsize=65536)
def integer_min_max(layers: int, pp: int, vpp: int, c: float, first: float, last: float) -> float:
    """min over integer splits (n_i >= v, sum = L) of max_i (n_i c + e_i), where only the first
    and last stages have e_i > 0: the smallest level T whose whole-block capacities
    floor((T - e_i) / c) cover L (raise T to the next capacity step until they do)."""
    edges = [(first, 1), (0.0, pp - 2), (last, 1)]
    level = max((layers * c + first + last) / pp, vpp * c + first, vpp * c + last)
    if c <= 0:
        return level
    for _ in range(layers + 2):
        counts = [max(vpp, math.floor((level - e) / c + 1e-12)) for e, _ in edges]
        if sum(k * n for k, (_, n) in zip(counts, edges)) >= layers:
            return level
        level = min((k + 1) * c + e for k, (e, n) in zip(counts, edges) if n > 0)
    return level


def step_lower_bound_s(terms: CandidateTerms, st: Strategy, layers: int) -> float:
    """Lower bound of the ILP objective (step time) of one candidate with its terms."""
    return sum(step_bound_parts(terms, st, layers).values())


def step_bound_parts(terms: CandidateTerms, st: Strategy, layers: int) -> dict[str, float]:
    """The parts of `step_lower_bound_s`: sum_i t_i / v, (m - 1/v) max_i t_i, p2p, O, G, P.

    Proof. The makespan parts are `makespan_lower_bound_s` with c = block_none_s (which includes
    the exposed per-block ZeRO traffic). p2p is a constant of the candidate. O = max_i opt*params_i
    is at least opt * P_max, P_max = max(mean params, first/last stage params with v blocks).
    G (estimate.step_grad_exposed_s) is the max over stages of k c_i + max(0, ...) with
    c_i = g params_i and k the contention share: so G >= k g P_max, and stage 0 (no upstream
    slack) gives G >= k c_0 + tail; without overlap G = max_i c_i >= g P_max. P likewise:
    >= k p P_max with overlap, p P_max without.
    """
    pp, v, m = st.pp, st.vpp, terms.micro_batches
    first_fwd, first_bwd = terms.edge_s(0, pp)
    last_fwd, last_bwd = terms.edge_s(pp - 1, pp) if pp > 1 else (0.0, 0.0)
    first_s, last_s = first_fwd + first_bwd, last_fwd + last_bwd
    if terms.moe is not None:
        # MoE: d dense blocks and L - d MoE blocks in all; a stage's blocks each cost at least the
        # cheaper kind present. The step-level DP traffic and optimizer terms (>= 0) are bounded
        # by 0, since dense and expert states shard over different groups.
        moe_blocks = terms.moe_blocks_before(layers)
        c = min(terms.dense.none_s, terms.moe.none_s) if terms.dense_blocks_anywhere else terms.moe.none_s
        total_s = (layers - moe_blocks) * terms.dense.none_s + moe_blocks * terms.moe.none_s \
            + first_s + last_s
        slowest = total_s if pp == 1 else integer_min_max(layers, pp, v, c, first_s, last_s)
        return {"sum": total_s / v, "slowest": (m - 1.0 / v) * slowest, "p2p": terms.p2p_s,
                "optimizer": 0.0, "grad": 0.0, "gather": 0.0}
    c = terms.block_none_s
    total_s = layers * c + first_s + last_s
    slowest = total_s if pp == 1 else integer_min_max(layers, pp, v, c, first_s, last_s)
    bp = terms.block_params
    total_params = layers * bp + terms.first_params + terms.last_params
    first_params = v * bp + terms.first_params + (terms.last_params if pp == 1 else 0.0)
    last_params = v * bp + terms.last_params
    most = max(total_params / pp, first_params, last_params)
    k, gc, pc = OVERLAP_CONTENTION, terms.grad_comm_s_per_param, terms.param_gather_s_per_param
    if st.overlap_grad_reduce:
        grad = max(k * gc * first_params + terms.grad_tail_s, k * gc * most)
        gather = k * pc * most
    else:
        grad, gather = gc * most, pc * most
    return {"sum": total_s / v, "slowest": (m - 1.0 / v) * slowest, "p2p": terms.p2p_s,
            "optimizer": terms.optimizer_s_per_param * most, "grad": grad, "gather": gather}


def block_kinds(terms: CandidateTerms) -> list:
    """The kinds of block a candidate's stages can hold: dense, MoE, or both when an MoE model
    keeps leading dense blocks."""
    if terms.moe is None:
        return [terms.dense]
    return [terms.moe] + ([terms.dense] if terms.dense_blocks_anywhere else [])


def cheapest_activation_bytes(terms, limits: EngineLimits) -> float:
    """Smallest stored activation bytes per block over the recompute modes the target allows
    (of the dense block, or of the `BlockKind` passed)."""
    a = terms.acts
    by_mode = {"none": a.none, "selective": a.selective, "full": a.full}
    return min(by_mode[mode] for mode in ("none", *limits.recompute_modes))


def memory_lower_bound_bytes(terms: CandidateTerms, st: Strategy, layers: int,
                             limits: EngineLimits) -> float:
    """Lower bound of the smallest possible peak GPU memory over all splits and recompute.

    Proof. Stage i's memory is (1 + alpha)(params_i * state + z3 + in_flight_i * stored_i +
    transient_i + extra_i) with transient_i >= 0 and stored_i >= n_i * a_min, so it is at least
    base_i + k_i n_i (linear, k_i > 0). Relaxing n_i to reals, min over splits of max_i of these
    is the larger of the water level M with sum_i (M - base_i)/k_i = L (dropping n_i >= v only
    lowers the minimum) and max_i (base_i + k_i v) (every stage holds at least v blocks).
    """
    pp, v = st.pp, st.vpp
    scale = 1.0 + ALLOCATOR_FRACTION
    state = terms.states.weights + terms.states.grads + terms.states.optimizer
    expert_state = sum((terms.expert_states.weights, terms.expert_states.grads,
                        terms.expert_states.optimizer))
    kinds = block_kinds(terms)
    bases, slopes = [], []
    for i in range(pp):
        fixed = terms.stage_params(i, pp, 0) * state + terms.zero3_buffer_bytes + terms.extra_acts[i]
        bases.append(scale * fixed)
        slopes.append(scale * min(kind.params * state + kind.expert_params * expert_state
                                  + terms.in_flight[i] * cheapest_activation_bytes(kind, limits)
                                  for kind in kinds))
    floor = max(b + k * v for b, k in zip(bases, slopes))
    if min(slopes) <= 0:
        return floor
    level = (layers + sum(b / k for b, k in zip(bases, slopes))) / sum(1 / k for k in slopes)
    return max(floor, level)


def host_lower_bound_bytes(terms: CandidateTerms, st: Strategy, layers: int) -> float:
    """Lower bound of the largest host bytes per GPU: the mean over stages (max >= mean), with
    every block at the cheaper kind's host bytes for an MoE model."""
    kinds = block_kinds(terms)
    per_block = min(k.params * terms.states.host + k.expert_params * terms.expert_states.host
                    for k in kinds)
    edges = (terms.first_params + terms.last_params) * terms.states.host
    return (layers * per_block + edges) / st.pp


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
                                   act_bytes: float) -> float:
    """Lower bound of the peak memory of every member of a group (any ZeRO/offload, any split).

    `state_bytes` is the smallest GPU state bytes per parameter over the members and `act_bytes`
    the smallest stored bytes per block over the allowed recompute modes. Proof: stage i needs at
    least (1 + alpha)(n_i b state + in_flight_i n_i act + extra_i) (embedding/head parameters, the
    ZeRO-3 buffer and transients are >= 0). The max over stages is at least the mean, and
    in_flight_i >= in_flight of the last stage (in-flight counts fall along the pipeline); it is
    also at least stage 0's value with its minimum of v blocks.
    """
    pp, v, layers = outer.pp, outer.vpp, model.arch.layers
    m = outer.micro_batches(model)
    b = block_params(model.arch) / outer.tp
    if model.arch.moe is not None:  # an MoE block's dp-sharded part may be the smaller one
        moe_b = moe_block_params(model, outer).dense
        b = min(b, moe_b) if model.arch.moe.has_dense_blocks else moe_b
    first_in, last_in = in_flight_microbatches(0, outer, m), in_flight_microbatches(pp - 1, outer, m)
    first_extra = stage_extra_activations(model, outer, 0, first_in)
    last_extra = stage_extra_activations(model, outer, pp - 1, last_in) if pp > 1 else 0.0
    mean = (layers * b * state_bytes + layers * last_in * act_bytes + first_extra + last_extra) / pp
    first = v * b * state_bytes + first_in * v * act_bytes + first_extra
    return (1.0 + ALLOCATOR_FRACTION) * max(mean, first)
