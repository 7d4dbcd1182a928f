"""The inner mixed-integer program: for one outer candidate, the per-stage layer split and the
per-stage recompute that minimise `evaluate()`'s step time under the memory limits.

Every coefficient comes from `CandidateTerms` (the same numbers `evaluate()` uses), and every
piece of the step time is linear in the block counts or a convex max of linear pieces, so the
program's optimum *is* the cost model's optimum for that candidate (tests check the objective
against `evaluate()` on the solution).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Literal

import pulp

from cost_models.comm import OVERLAP_CONTENTION
from cost_models.memory import ALLOCATOR_FRACTION
from cost_models.terms import CandidateTerms
from planner.errors import EnvironmentProblem, InputError
from planner.strategy import StageLayers, Strategy, balanced_split
from planner.targets import EngineLimits

Solver = Literal["highs", "cbc"]
Status = Literal["optimal", "feasible", "infeasible", "unsolved", "cutoff"]
MIP_REL_GAP = 1e-7
"""Relative gap at which a branch-and-bound run counts as optimal (HiGHS/CBC stop there)."""
SOLVER_THREADS_ENV = "FMPLAN_SOLVER_THREADS"
"""Environment variable for the solver's thread count (`solver_threads`)."""
_MEMORY_MARGIN = 1e-9
"""Memory rows are scaled to capacity 1; keeping them below 1 - margin, with feasibility
tolerances below the margin, makes every accepted split fit exactly under `evaluate()`."""


@dataclass(frozen=True, kw_only=True)
class IlpResult:
    """Outcome of one inner program."""

    status: Status
    """optimal (within MIP_REL_GAP), feasible (time limit hit with a solution), infeasible (no
    split fits: proven), unsolved (time limit hit without a solution), cutoff (no split beats
    the cutoff)."""
    stages: tuple[StageLayers, ...] = ()
    """The chosen split (empty unless optimal or feasible)."""
    objective: float = float("inf")
    """The solution's objective (seconds, or bytes for objective="memory")."""
    bound: float = 0.0
    """Proven lower bound of the objective (= objective up to the gap when optimal)."""


def solve_split(terms: CandidateTerms, st: Strategy, layers: int, *, capacity_bytes: float,
                host_capacity_bytes: float, limits: EngineLimits, objective: str = "time",
                time_limit_s: float = 60.0, solver: Solver = "highs",
                cutoff: float = float("inf")) -> IlpResult:
    """Build and solve the program for candidate `st` (outer fields only).

    objective="time" minimises the step time subject to memory; "memory" minimises the peak
    GPU memory (used to explain infeasibility) with no capacity row. With a finite `cutoff`
    (seconds) HiGHS prunes every branch that cannot beat it; a candidate with nothing below the
    cutoff comes back as status "cutoff".
    """
    pp, v, m = st.pp, st.vpp, terms.micro_batches
    big_n = layers - v * (pp - 1)
    time_unit = max(layers * terms.block_none_s * m / pp, 1e-9)
    mem_unit = capacity_bytes

    prob = pulp.LpProblem("split", pulp.LpMinimize)
    # Variables (integers are block counts, binaries mark a recompute mode used on a stage).
    n = [prob.add_variable(f"n{i}", v, big_n, cat="Integer") for i in range(pp)]  # blocks
    # Full recompute never combines with the expert-parallel overlap (Strategy.validate).
    allow_full = "full" in limits.recompute_modes and not st.ep_comm_overlap
    allow_sel = "selective" in limits.recompute_modes
    f = [prob.add_variable(f"f{i}", 0, big_n if allow_full else 0, cat="Integer") for i in range(pp)]
    s = [prob.add_variable(f"s{i}", 0, big_n if allow_sel else 0, cat="Integer") for i in range(pp)]
    tau = [prob.add_variable(f"tau{i}", 0) for i in range(pp)]  # transient recompute bytes / unit
    t_max = prob.add_variable("t_max", 0)  # slowest stage per micro-batch / unit
    grad = prob.add_variable("grad", 0)  # exposed gradient reduction / unit
    gather = prob.add_variable("gather", 0)  # exposed parameter gather / unit
    opt = prob.add_variable("opt", 0)  # optimizer step / unit

    mixes = _stage_mixes(prob, terms, st, n, f, s, big_n)
    expr = _stage_expressions(terms, st, mixes)
    times = [e / time_unit for e in expr["time"]]
    fills = [(e + u) / time_unit for e, u in zip(expr["time"], expr["unpaired"])]
    if objective == "time":
        # Makespan (pipeline.makespan_s): sum_i u_i / v + (m - 1/v) max_i t_i with the fill and
        # drain times u_i = t_i + unpaired exchange, min-max via t_max.
        prob += (pulp.lpSum(fills) * (1.0 / v) + (m - 1.0 / v) * t_max
                 + terms.p2p_s / time_unit + grad + gather + opt)
    else:
        peak = prob.add_variable("peak", 0)  # min-max of stage memory / unit
        prob += peak

    # [Constraint] every block on one stage; recompute counts within the stage.
    prob += pulp.lpSum(n) == layers
    for i in range(pp):
        prob += f[i] + s[i] <= n[i]
        prob += t_max >= times[i]  # min-max: slowest stage

    # [Constraint] step-level exposed communication and optimizer: convex max of linear pieces.
    _add_step_pieces(prob, terms, st, expr, time_unit, grad, gather, opt)

    # [Constraint] memory per stage (estimate.stage_memory); the transient is the max over the
    # block kinds and modes used on the stage (binaries marking "count > 0", big-M).
    mem_scale = (1.0 + ALLOCATOR_FRACTION) / mem_unit
    es = terms.expert_states
    for i in range(pp):
        stored = 0
        for j, (kind, count, full, sel) in enumerate(mixes[i]):
            a = kind.acts
            xf = prob.add_variable(f"xf{i}_{j}", cat="Binary")  # full > 0 for this kind
            xs = prob.add_variable(f"xs{i}_{j}", cat="Binary")  # selective > 0 for this kind
            prob += full <= big_n * xf
            prob += sel <= big_n * xs
            prob += tau[i] >= (a.none - a.full) / mem_unit * xf
            prob += tau[i] >= (a.none - a.selective) / mem_unit * xs
            stored += count * a.none - full * (a.none - a.full) - sel * (a.none - a.selective)
        states = (expr["params"][i] * _state_bytes(terms.states)
                  + expr["experts"][i] * _state_bytes(es))
        row = mem_scale * (states + terms.zero3_buffer_bytes + terms.in_flight[i] * stored
                           + terms.extra_acts[i] + terms.paired_block_bytes) \
            + (1.0 + ALLOCATOR_FRACTION) * tau[i]
        if objective == "time":
            prob += row <= 1.0 - _MEMORY_MARGIN
        else:
            prob += peak >= row
        if terms.states.host > 0 or es.host > 0:
            host = expr["params"][i] * terms.states.host + expr["experts"][i] * es.host
            prob += host / host_capacity_bytes <= 1.0 - _MEMORY_MARGIN

    _add_target_limits(prob, limits, st, layers, n, f, s, big_n)
    unit = time_unit if objective == "time" else mem_unit
    cmd = _run(prob, solver, time_limit_s, cutoff / unit)
    if solver == "highs" and _highs_solve_error(prob):
        # HiGHS can stop with "Solve error" on rows that are tight at the 1e-10 tolerances;
        # the same program goes to CBC, the documented fallback.
        cmd = _run(prob, "cbc", time_limit_s, cutoff / unit)
    result = _result(prob, cmd, n, f, s, unit)
    if cutoff < float("inf") and (result.objective >= cutoff or
                                  (result.status == "infeasible" and solver == "highs")):
        return IlpResult(status="cutoff", bound=cutoff)
    return result


def _stage_mixes(prob, terms: CandidateTerms, st: Strategy, n, f, s, big_n: int) -> list[list]:
    """Per stage, (kind, blocks, full, selective) linear expressions per block kind, matching
    `estimate.stage_mix`: a dense model has one kind; an MoE model's d leading dense blocks sit on
    the first stage and are recomputed first (`_leading_dense_recompute`); the rest are MoE, or
    interleaved with dense blocks (`_interleaved_mixes`)."""
    if terms.moe is None:
        return [[(terms.dense, n[i], f[i], s[i])] for i in range(st.pp)]
    if terms.moe_interval > 1:
        return _interleaved_mixes(prob, terms, st, n, f, s, big_n)
    d = terms.first_dense_layers
    mixes = [[(terms.moe, n[i], f[i], s[i])] for i in range(st.pp)]
    if d == 0:
        return mixes
    fd, sd = _leading_dense_recompute(prob, terms, n, f, s, big_n)
    mixes[0] = [(terms.dense, d, fd, sd), (terms.moe, n[0] - d, f[0] - fd, s[0] - sd)]
    return mixes


def _leading_dense_recompute(prob, terms: CandidateTerms, n, f, s, big_n: int):
    """(full, selective) among stage 0's d leading dense blocks: recompute goes to blocks in
    order, so full_d = min(f_0, d) and sel_d = min(s_0, d - full_d), linearised with two
    binaries (z: a block after them is fully recomputed, so full_d = d; w: one is selectively
    recomputed, so full_d + sel_d = d). [Constraint] n_0 >= d: they sit on the first stage."""
    d = terms.first_dense_layers
    prob += n[0] >= d
    fd = prob.add_variable("full_dense", 0, d, cat="Integer")
    sd = prob.add_variable("sel_dense", 0, d, cat="Integer")
    z = prob.add_variable("moe_full_used", cat="Binary")
    w = prob.add_variable("moe_sel_used", cat="Binary")
    prob += fd <= f[0]
    prob += sd <= s[0]
    prob += fd + sd <= d
    prob += f[0] - fd <= big_n * z
    prob += fd >= d * z
    prob += s[0] - sd <= big_n * w
    prob += fd + sd >= d * w
    return fd, sd


def _interleaved_mixes(prob, terms: CandidateTerms, st: Strategy, n, f, s, big_n: int) -> list[list]:
    """Stage mixes when one block in every N after the d leading dense blocks is MoE
    (`estimate.stage_mix`). The MoE blocks among blocks 0..x-1 number floor((x - d) / N) for
    x >= d, and an integer q with N q <= x - d <= N q + N - 1 is exactly that floor. With the
    prefix P_i = n_0 + ... + n_{i-1} (>= d for i >= 1) and recompute on a stage's first blocks:
        moe_i = q(P_{i+1}) - q(P_i),  moe_full_i = q(P_i + f_i) - q(P_i),
        moe_sel_i = q(P_i + f_i + s_i) - q(P_i + f_i);
    on stage 0 the same counts run over the blocks after the leading dense ones, whose
    recompute shares come from `_leading_dense_recompute`. Dense counts are the rest."""
    d, step, pp = terms.first_dense_layers, terms.moe_interval, st.pp
    top = big_n * pp // step + 1

    def floor_after_dense(name: str, blocks):
        """floor(blocks / N) for a non-negative integer expression."""
        q = prob.add_variable(name, 0, top, cat="Integer")
        prob.addConstraint(step * q <= blocks)
        prob.addConstraint(step * q >= blocks - (step - 1))
        return q

    fd, sd = _leading_dense_recompute(prob, terms, n, f, s, big_n) if d else (0, 0)
    after = [pulp.lpSum(n[:i]) - d for i in range(pp)]  # P_i - d (used for i >= 1)
    start = [0] + [floor_after_dense(f"q{i}", after[i]) for i in range(1, pp)]
    full_end = [floor_after_dense("r0", f[0] - fd)] + [
        floor_after_dense(f"r{i}", after[i] + f[i]) for i in range(1, pp)]
    sel_end = [floor_after_dense("u0", f[0] - fd + s[0] - sd)] + [
        floor_after_dense(f"u{i}", after[i] + f[i] + s[i]) for i in range(1, pp)]
    layers = big_n + st.vpp * (pp - 1)
    end = start[1:] + [terms.moe_blocks_before(layers)]
    mixes = []
    for i in range(pp):
        moe = end[i] - start[i]
        moe_full, moe_sel = full_end[i] - start[i], sel_end[i] - full_end[i]
        mixes.append([(terms.dense, n[i] - moe, f[i] - moe_full, s[i] - moe_sel),
                      (terms.moe, moe, moe_full, moe_sel)])
    return mixes


def _stage_expressions(terms: CandidateTerms, st: Strategy, mixes) -> dict[str, list]:
    """Per-stage linear expressions in seconds/parameters (estimate.stage_time_parts)."""
    pp = st.pp
    out: dict[str, list] = {"time": [], "unpaired": [], "fwd": [], "bwd": [], "params": [],
                            "experts": []}
    for i in range(pp):
        edge_fwd, edge_bwd = terms.edge_s(i, pp)
        time, fwd, bwd, params, experts = edge_fwd + edge_bwd, edge_fwd, edge_bwd, 0, 0
        unpaired = 0
        for kind, count, full, sel in mixes[i]:
            b = kind.times
            recompute = b.recompute_full * full + b.recompute_selective * sel
            time += kind.none_s * count + recompute
            unpaired += b.ep_unpaired * count
            fwd += b.fwd * count
            bwd += b.bwd * count + recompute
            params += kind.params * count
            experts += kind.expert_params * count
        out["time"].append(time)
        out["unpaired"].append(unpaired)
        out["fwd"].append(fwd)
        out["bwd"].append(bwd)
        out["params"].append(params + terms.stage_params(i, pp, 0))
        out["experts"].append(experts)
    return out


def _state_bytes(states) -> float:
    return states.weights + states.grads + states.optimizer


def _add_step_pieces(prob, terms: CandidateTerms, st: Strategy, expr, unit: float,
                     grad, gather, opt) -> None:
    """Epigraph rows of step_grad_exposed_s, step_param_gather_exposed_s and the optimizer max.

    Each is a max over stages of k*c_i + max(0, linear pieces) (k = OVERLAP_CONTENTION), i.e. a
    max of linear pieces; minimising a positive multiple of the epigraph variable makes it equal
    the max at the optimum. The upstream slack sum_{j<i} of backward (forward) times is carried in
    prefix-sum variables so the rows stay O(pp) in size.
    """
    overlap, pp, k = st.overlap_grad_reduce, st.pp, OVERLAP_CONTENTION
    has_grad = (terms.grad_comm_s_per_param > 0 or terms.expert_grad_comm_s_per_param > 0
                or terms.grad_tail_s > 0)
    has_gather = terms.param_gather_s_per_param > 0 or terms.expert_param_gather_s_per_param > 0
    # prefix sums / unit: bwd_before[i] = sum_{j<i} bwd_j, fwd_before[i] = sum_{j<i} fwd_j
    bwd_before = [prob.add_variable(f"bwd_before{i}") for i in range(pp)] if has_grad else []
    fwd_before = [prob.add_variable(f"fwd_before{i}") for i in range(pp)] if has_gather else []
    for i in range(pp):
        params, experts = expr["params"][i], expr["experts"][i]
        if has_grad:
            prob += bwd_before[i] == (0 if i == 0 else bwd_before[i - 1] + expr["bwd"][i - 1] / unit)
            comm = (terms.grad_comm_s_per_param * params
                    + terms.expert_grad_comm_s_per_param * experts) / unit
            if overlap:
                prob += grad >= k * comm
                prob += grad >= k * comm + comm - expr["bwd"][i] / unit - bwd_before[i]
                prob += grad >= k * comm + terms.grad_tail_s / unit - bwd_before[i]
            else:
                prob += grad >= comm
        if has_gather:
            prob += fwd_before[i] == (0 if i == 0 else fwd_before[i - 1] + expr["fwd"][i - 1] / unit)
            comm = (terms.param_gather_s_per_param * params
                    + terms.expert_param_gather_s_per_param * experts) / unit
            prob += gather >= (k * comm if overlap else comm)
            if overlap:
                prob += gather >= k * comm + comm - expr["fwd"][i] / unit - fwd_before[i]
        prob += opt >= (terms.optimizer_s_per_param * params
                        + terms.expert_optimizer_s_per_param * experts) / unit


def _add_target_limits(prob, limits: EngineLimits, st: Strategy, layers: int, n, f, s,
                       big_n: int) -> None:
    """[Constraint] what the target engine can express (planner/targets.py, exactly as its
    `violations` checks it)."""
    pp, v = st.pp, st.vpp
    if limits.stage_split == "balanced":
        for i, count in enumerate(balanced_split(layers, pp)):
            prob += n[i] == count
    elif limits.stage_split == "even":
        for i in range(1, pp):
            prob += n[i] == n[0]
    elif limits.stage_split == "first_last":
        for i in range(2, pp - 1):
            prob += n[i] == n[1]
    both = "full" in limits.recompute_modes and "selective" in limits.recompute_modes
    if not limits.mixed_recompute and both:
        full_mode = prob.add_variable("full_mode", cat="Binary")  # one mode for the whole model
        for i in range(pp):
            prob += f[i] <= big_n * full_mode
            prob += s[i] <= big_n * (1 - full_mode)
    for name, counts, rule in (("full", f, limits.full_counts), ("sel", s, limits.selective_counts)):
        if rule == "all":
            # Every block or none: counts_i = n_i * used (big-M on the binary `used`).
            used = prob.add_variable(f"{name}_all", cat="Binary")
            for i in range(pp):
                prob += counts[i] <= big_n * used
                prob += counts[i] >= n[i] - big_n * (1 - used)
        elif rule == "uniform":
            # Megatron's --recompute-num-layers k acts on each of the v chunks of a stage, whose
            # sizes differ by at most one; the sum of min(chunk, k) is then min(v k, n_i).
            # counts_i = min(v k, n_i) via a binary per stage (big-M = v * largest chunk).
            k = prob.add_variable(f"{name}_k", 0, -(-big_n // v), cat="Integer")
            big = v * -(-big_n // v) + big_n
            for i in range(pp):
                below = prob.add_variable(f"{name}_below{i}", cat="Binary")  # 1: n_i <= v k
                prob += counts[i] <= v * k
                prob += counts[i] <= n[i]
                prob += counts[i] >= v * k - big * below
                prob += counts[i] >= n[i] - big * (1 - below)


def solver_threads() -> int:
    """Threads per ILP solve: FMPLAN_SOLVER_THREADS, default 1 (the search solves many small ILPs
    one after another; tests/test_determinism.py checks the plan does not depend on it)."""
    text = os.environ.get(SOLVER_THREADS_ENV, "1")
    if not text.isdigit() or not 1 <= int(text) <= 256:
        raise InputError(f"{SOLVER_THREADS_ENV} must be a whole number of threads from 1 to 256, "
                         f"got {text!r}")
    return int(text)


def _run(prob: pulp.LpProblem, solver: Solver, time_limit_s: float, cutoff: float):
    """Solve with a time limit and gap; return the solver command (for the dual bound)."""
    limit = max(time_limit_s, 0.01)
    if solver == "highs":
        silence_highs_banner()
        # HiGHS compares objective_bound with the objective *without* its constant term (PuLP
        # keeps the constant on its side), so the cutoff is shifted by that constant.
        offset = prob.objective.constant if prob.objective is not None else 0.0
        extra = {"objective_bound": cutoff - offset} if cutoff < float("inf") else {}
        cmd = pulp.HiGHS(msg=False, timeLimit=limit, gapRel=MIP_REL_GAP, threads=solver_threads(),
                         mip_feasibility_tolerance=1e-10, primal_feasibility_tolerance=1e-10,
                         **extra)
    elif solver == "cbc":
        cmd = pulp.PULP_CBC_CMD(msg=False, timeLimit=limit, gapRel=MIP_REL_GAP,
                                threads=solver_threads(),
                                options=["primalT 1e-10", "integerT 1e-10"])
        if not cmd.available():
            raise EnvironmentProblem("the CBC solver is not available",
                                     hint="pip install pulp (it bundles CBC) or use --solver highs")
    else:
        raise EnvironmentProblem(f"unknown solver {solver!r}", hint="use highs or cbc")
    prob.solve(cmd)
    return cmd


def _result(prob: pulp.LpProblem, cmd, n, f, s, unit: float) -> IlpResult:
    """Read sol_status (CBC reports status Optimal when it stops on the time limit; PuLP maps a
    HiGHS time limit to "integer feasible" even without a solution, so ask HiGHS directly)."""
    sol = prob.sol_status
    model = getattr(prob, "solverModel", None)
    if model is not None and sol == pulp.LpSolutionIntegerFeasible:
        if model.getInfo().primal_solution_status != 2:  # kSolutionStatusFeasible
            sol = pulp.LpSolutionNoSolutionFound
    if sol == pulp.LpSolutionInfeasible or prob.status == pulp.LpStatusInfeasible:
        return IlpResult(status="infeasible", bound=float("inf"))
    if sol not in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
        return IlpResult(status="unsolved", bound=_dual_bound(prob, cmd, unit, 0.0))
    stages = tuple(StageLayers(round(ni.value()), round(fi.value()), round(si.value()))
                   for ni, fi, si in zip(n, f, s))
    value = pulp.value(prob.objective) * unit
    if sol == pulp.LpSolutionOptimal:
        return IlpResult(status="optimal", stages=stages, objective=value,
                         bound=value * (1 - MIP_REL_GAP))
    return IlpResult(status="feasible", stages=stages, objective=value,
                     bound=_dual_bound(prob, cmd, unit, 0.0))


def _highs_solve_error(prob: pulp.LpProblem) -> bool:
    """Whether HiGHS gave up with a solve error (not infeasible, not a time limit)."""
    import highspy

    model = getattr(prob, "solverModel", None)
    return model is not None and model.getModelStatus() == highspy.HighsModelStatus.kSolveError


def _dual_bound(prob: pulp.LpProblem, cmd, unit: float, default: float) -> float:
    """The proven lower bound of a run stopped early (HiGHS reports it; CBC does not here)."""
    model = getattr(prob, "solverModel", None)
    if model is None:
        return default
    bound = model.getInfo().mip_dual_bound
    return bound * unit if bound == bound and abs(bound) < 1e300 else default


_BANNER_SILENCED = False


def silence_highs_banner() -> None:
    """The first `highspy.Highs()` prints a banner to file descriptor 1, bypassing sys.stdout;
    create it once with fd 1 pointed at /dev/null so `--json` output stays clean."""
    global _BANNER_SILENCED
    if _BANNER_SILENCED:
        return
    import highspy

    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
    _BANNER_SILENCED = True
