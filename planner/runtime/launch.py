"""Launch validation runs through torchrun and collect every rank's result.

One `torch.distributed.run --standalone` launch per world size runs all the given runs in turn
(a launch costs ~5 s here; the runs then share one process group). torchrun is used rather than
`torch.multiprocessing.spawn` because it is what users launch real jobs with, and its rank
environment (RANK, LOCAL_RANK, WORLD_SIZE) is the one the worker reads.

A failed launch reports the failing rank's traceback (its last 25 lines; set FMPLAN_TRACE_LINES
for more).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.errors import EnvironmentProblem
from planner.plan import model_to_mapping, strategy_to_mapping
from planner.specs import ModelSpec
from planner.strategy import Strategy

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, kw_only=True)
class RunRequest:
    """One plan to run: an id (a folder name), the runtime model and the resolved strategy."""

    run_id: str
    model: ModelSpec
    strategy: Strategy


def launch(runs: list[RunRequest], *, device: str, steps: int, warmup: int, seed: int = 0,
           timeout_s: float = 900.0, states_dir: Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """Run `runs` (all with the same world size) on `device`; return each run's rank results.
    With `states_dir`, every rank also saves its final parameters to
    `<states_dir>/<run id>/rank<r>.pt` (`planner.runtime.states`)."""
    worlds = {r.strategy.world for r in runs}
    if len(worlds) != 1:
        raise ValueError(f"one launch runs one world size, got {sorted(worlds)}")
    world = worlds.pop()
    with tempfile.TemporaryDirectory(prefix="fmplan-validate-") as tmp:
        out_dir = Path(tmp) / "out"
        job = {"device": device, "steps": steps, "warmup": warmup, "seed": seed,
               "out_dir": str(out_dir), "states_dir": str(states_dir) if states_dir else None,
               "runs": [{"id": r.run_id, "model": model_to_mapping(r.model),
                         "strategy": strategy_to_mapping(r.strategy)} for r in runs]}
        job_path = Path(tmp) / "job.json"
        job_path.write_text(json.dumps(job))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc-per-node={world}", "-m", "planner.runtime.worker", str(job_path)]
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT),
                                                           os.environ.get("PYTHONPATH")]))}
        proc = _run(command, env=env, cwd=tmp, timeout_s=timeout_s)
        if proc.returncode != 0:
            errors = [p.read_text() for p in sorted(out_dir.glob("error_rank*.txt"))]
            # A crash on one rank shows up on its peers as a closed connection: report the cause.
            causes = [e for e in errors if "Connection closed by peer" not in e] or errors
            text = causes[0] if causes else (proc.stderr or proc.stdout)
            tail = "\n".join(text.strip().splitlines()[-int(os.environ.get("FMPLAN_TRACE_LINES", "25")):])
            raise EnvironmentProblem(f"torchrun with {world} processes failed "
                                     f"(exit {proc.returncode}):\n{tail}")
        return {r.run_id: _collect(out_dir / r.run_id, world) for r in runs}


def _run(command: list[str], *, env: dict[str, str], cwd: str,
         timeout_s: float) -> subprocess.CompletedProcess:
    """Run torchrun to the end; on a timeout or Ctrl-C stop it and every worker first.

    torchrun starts each worker in its own session (torch.distributed.elastic), so a signal to
    torchrun's process group misses them and killing torchrun alone orphans them: torchrun gets
    SIGTERM (it stops its workers), and whatever is left of the process tree after STOP_GRACE_S is
    killed."""
    with subprocess.Popen(command, env=env, cwd=cwd, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as proc:
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop(proc)
            raise EnvironmentProblem(f"torchrun did not finish within {timeout_s:.0f} s "
                                     "(hint: fewer --steps, or --scale-down)") from None
        except KeyboardInterrupt:
            _stop(proc)
            raise
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


STOP_GRACE_S = 10.0
"""How long torchrun may take to stop its workers after SIGTERM."""


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to `proc`, then SIGKILL to it and to every descendant still alive."""
    tree = descendants(proc.pid)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
    for pid, started in {**tree, **descendants(proc.pid)}.items():
        if _start_time(pid) == started:  # the same process, not a reused id
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    proc.wait()


def descendants(pid: int) -> dict[int, str]:
    """Processes below `pid` in the process tree, as {pid: start time} (Linux /proc; empty
    elsewhere)."""
    children: dict[int, list[int]] = {}
    started: dict[int, str] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        fields = _stat_fields(int(entry.name))
        if fields:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
            started[int(entry.name)] = fields[19]
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = started[child]
            todo.append(child)
    return found


def _start_time(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[19] if fields else None


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (state, ppid, ...; field 22, start time, is [19])."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()  # the name, in parentheses, may hold spaces


def _collect(folder: Path, world: int) -> list[dict[str, Any]]:
    results = [json.loads((folder / f"rank{r}.json").read_text()) for r in range(world)]
    return sorted(results, key=lambda r: r["rank"])
