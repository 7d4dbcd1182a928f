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
from planner.errors import EnvironmentProblem
from planner.strategy import StageLayers, Strategy, balanced_split
from planner.targets import EngineLimits

Solver = Literal["highs", "cbc"]
Status = Literal["optimal", "feasible", "infeasible", "unsolved", "cutoff"]
MIP_REL_GAP = 1e-7
"""Relative gap at which a branch-and-bound run counts as optimal (HiGHS/CBC stop there)."""
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
    a = terms.acts
    time_unit = max(layers * terms.block_none_s * m / pp, 1e-9)
    mem_unit = capacity_bytes

    prob = pulp.LpProblem("split", pulp.LpMinimize)
    # Variables (integers are block counts, binaries mark a recompute mode used on a stage).
    n = [prob.add_variable(f"n{i}", v, big_n, cat="Integer") for i in range(pp)]  # blocks
    allow_full = "full" in limits.recompute_modes
    allow_sel = "selective" in limits.recompute_modes
    f = [prob.add_variable(f"f{i}", 0, big_n if allow_full else 0, cat="Integer") for i in range(pp)]
    s = [prob.add_variable(f"s{i}", 0, big_n if allow_sel else 0, cat="Integer") for i in range(pp)]
    xf = [prob.add_variable(f"xf{i}", cat="Binary") for i in range(pp)]  # f_i > 0
    xs = [prob.add_variable(f"xs{i}", cat="Binary") for i in range(pp)]  # s_i > 0
    tau = [prob.add_variable(f"tau{i}", 0) for i in range(pp)]  # transient recompute bytes / unit
    t_max = prob.add_variable("t_max", 0)  # slowest stage per micro-batch / unit
    grad = prob.add_variable("grad", 0)  # exposed gradient reduction / unit
    gather = prob.add_variable("gather", 0)  # exposed parameter gather / unit
    opt = prob.add_variable("opt", 0)  # optimizer step / unit

    expr = _stage_expressions(terms, st, n, f, s)
    times = [e / time_unit for e in expr["time"]]
    if objective == "time":
        # Makespan (pipeline.makespan_s): sum_i t_i / v + (m - 1/v) max_i t_i, min-max via t_max.
        prob += (pulp.lpSum(times) * (1.0 / v) + (m - 1.0 / v) * t_max
                 + terms.p2p_s / time_unit + grad + gather + opt)
    else:
        peak = prob.add_variable("peak", 0)  # min-max of stage memory / unit
        prob += peak

    # [Constraint] every block on one stage; recompute counts within the stage.
    prob += pulp.lpSum(n) == layers
    for i in range(pp):
        prob += f[i] + s[i] <= n[i]
        prob += f[i] <= big_n * xf[i]  # big-M: xf_i = 1 when any block is fully recomputed
        prob += s[i] <= big_n * xs[i]
        prob += t_max >= times[i]  # min-max: slowest stage

    # [Constraint] step-level exposed communication and optimizer: convex max of linear pieces.
    _add_step_pieces(prob, terms, st, expr, time_unit, grad, gather, opt)

    # [Constraint] memory per stage (estimate.stage_memory), transient = max of two indicators.
    mem_scale = (1.0 + ALLOCATOR_FRACTION) / mem_unit
    for i in range(pp):
        prob += tau[i] >= (a.none - a.full) / mem_unit * xf[i]
        prob += tau[i] >= (a.none - a.selective) / mem_unit * xs[i]
        stored = n[i] * a.none - f[i] * (a.none - a.full) - s[i] * (a.none - a.selective)
        row = mem_scale * (expr["params"][i] * _state_bytes(terms) + terms.zero3_buffer_bytes
                           + terms.in_flight[i] * stored + terms.extra_acts[i]) \
            + (1.0 + ALLOCATOR_FRACTION) * tau[i]
        if objective == "time":
            prob += row <= 1.0 - _MEMORY_MARGIN
        else:
            prob += peak >= row
        if terms.states.host > 0:
            prob += expr["params"][i] * terms.states.host / host_capacity_bytes <= 1.0 - _MEMORY_MARGIN

    _add_target_limits(prob, limits, st, layers, n, f, s, big_n)
    unit = time_unit if objective == "time" else mem_unit
    cmd = _run(prob, solver, time_limit_s, cutoff / unit)
    result = _result(prob, cmd, n, f, s, unit)
    if cutoff < float("inf") and (result.objective >= cutoff or
                                  (result.status == "infeasible" and solver == "highs")):
        return IlpResult(status="cutoff", bound=cutoff)
    return result


def _stage_expressions(terms: CandidateTerms, st: Strategy, n, f, s) -> dict[str, list]:
    """Per-stage linear expressions in seconds/parameters (estimate.stage_time_parts)."""
    pp, b = st.pp, terms.block
    out: dict[str, list] = {"time": [], "fwd": [], "bwd": [], "params": []}
    for i in range(pp):
        edge_fwd, edge_bwd = terms.edge_s(i, pp)
        recompute = b.recompute_full * f[i] + b.recompute_selective * s[i]
        out["time"].append(terms.block_none_s * n[i] + recompute + (edge_fwd + edge_bwd))
        out["fwd"].append(b.fwd * n[i] + edge_fwd)
        out["bwd"].append(b.bwd * n[i] + edge_bwd + recompute)
        out["params"].append(terms.block_params * n[i] + terms.stage_params(i, pp, 0))
    return out


def _state_bytes(terms: CandidateTerms) -> float:
    return terms.states.weights + terms.states.grads + terms.states.optimizer


def _add_step_pieces(prob, terms: CandidateTerms, st: Strategy, expr, unit: float,
                     grad, gather, opt) -> None:
    """Epigraph rows of step_grad_exposed_s, step_param_gather_exposed_s and the optimizer max.

    Each is a max over stages of k*c_i + max(0, linear pieces) (k = OVERLAP_CONTENTION), i.e. a
    max of linear pieces; minimising a positive multiple of the epigraph variable makes it equal
    the max at the optimum. The upstream slack sum_{j<i} of backward (forward) times is carried in
    prefix-sum variables so the rows stay O(pp) in size.
    """
    overlap, pp, k = st.overlap_grad_reduce, st.pp, OVERLAP_CONTENTION
    has_grad = terms.grad_comm_s_per_param > 0 or terms.grad_tail_s > 0
    has_gather = terms.param_gather_s_per_param > 0
    # prefix sums / unit: bwd_before[i] = sum_{j<i} bwd_j, fwd_before[i] = sum_{j<i} fwd_j
    bwd_before = [prob.add_variable(f"bwd_before{i}") for i in range(pp)] if has_grad else []
    fwd_before = [prob.add_variable(f"fwd_before{i}") for i in range(pp)] if has_gather else []
    for i in range(pp):
        params = expr["params"][i]
        if has_grad:
            prob += bwd_before[i] == (0 if i == 0 else bwd_before[i - 1] + expr["bwd"][i - 1] / unit)
            comm = terms.grad_comm_s_per_param * params / unit
            if overlap:
                prob += grad >= k * comm
                prob += grad >= k * comm + comm - expr["bwd"][i] / unit - bwd_before[i]
                prob += grad >= k * comm + terms.grad_tail_s / unit - bwd_before[i]
            else:
                prob += grad >= comm
        if has_gather:
            prob += fwd_before[i] == (0 if i == 0 else fwd_before[i - 1] + expr["fwd"][i - 1] / unit)
            comm = terms.param_gather_s_per_param * params / unit
            prob += gather >= (k * comm if overlap else comm)
            if overlap:
                prob += gather >= k * comm + comm - expr["fwd"][i] / unit - fwd_before[i]
        prob += opt >= terms.optimizer_s_per_param * params / unit


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


def _run(prob: pulp.LpProblem, solver: Solver, time_limit_s: float, cutoff: float):
    """Solve with a time limit and gap; return the solver command (for the dual bound)."""
    limit = max(time_limit_s, 0.01)
    if solver == "highs":
        silence_highs_banner()
        extra = {"objective_bound": cutoff} if cutoff < float("inf") else {}
        cmd = pulp.HiGHS(msg=False, timeLimit=limit, gapRel=MIP_REL_GAP, threads=1,
                         mip_feasibility_tolerance=1e-10, primal_feasibility_tolerance=1e-10,
                         **extra)
    elif solver == "cbc":
        cmd = pulp.PULP_CBC_CMD(msg=False, timeLimit=limit, gapRel=MIP_REL_GAP, threads=1,
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
