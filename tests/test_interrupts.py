"""Ctrl-C is clean: `fmplan` runs as a subprocess and gets a real SIGINT once it is working.

The timing is not guessed: with FMPLAN_PAUSE_AT=<point> the command stops at that safe point,
writes `fmplan: paused at <point>` on stderr and waits for the signal (planner.interrupt); the
profiler test waits until the profile file first appears; the validate test waits until the
torchrun workers exist. Each asserts exit 130, no traceback and the message a user sees."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _start(*args: str, pause_at: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("FMPLAN_PAUSE_AT", None)
    if pause_at:
        env["FMPLAN_PAUSE_AT"] = pause_at
    return subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for_pause(proc: subprocess.Popen, point: str) -> list[str]:
    """stderr lines up to the pause marker (fails if the command ends first)."""
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.strip() == f"fmplan: paused at {point}":
            return lines
    proc.wait(timeout=60)
    raise AssertionError(f"never paused at {point} (exit {proc.returncode}): {''.join(lines)}")


def _interrupt(proc: subprocess.Popen, point: str, times: int = 1) -> tuple[str, str]:
    before = _wait_for_pause(proc, point)
    for _ in range(times):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
    out, err = proc.communicate(timeout=120)
    return out, "".join(before) + err


SOLVE = ("solve", "llama3-8b", "--cluster", "dgx-h100-1n")


def test_solve_ctrl_c_prints_the_best_plan_so_far(tmp_path):
    proc = _start(*SOLVE, "--out", str(tmp_path / "out"), pause_at="search:incumbent")
    out, err = _interrupt(proc, "search:incumbent")
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted: the best plan so far, within" in err  # one ILP solved: a gap is left
    assert "; nothing written" in err
    assert "step time" in out.lower() and "search:" in out  # the plan's breakdown and the search
    assert not (tmp_path / "out").exists()


def test_solve_ctrl_c_json_marks_the_plan_interrupted():
    proc = _start(*SOLVE, "--json", pause_at="search:incumbent")
    out, err = _interrupt(proc, "search:incumbent")
    assert proc.returncode == 130 and "Traceback" not in err
    payload = json.loads(out)
    assert payload["interrupted"] is True
    solver = payload["plan"]["solver"]
    assert solver["status"] == "gap" and 0 < solver["gap"] < 1
    assert solver["lower_bound"] < solver["objective_value"] and payload["strategy"]


def test_solve_ctrl_c_before_any_plan_says_so():
    proc = _start(*SOLVE, pause_at="search")
    out, err = _interrupt(proc, "search")
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted: no plan yet (" in err and "ILPs solved before Ctrl-C)" in err
    assert out == ""


def test_first_sigint_is_a_request_the_second_a_keyboard_interrupt():
    from planner import interrupt
    with interrupt.graceful():
        assert not interrupt.requested("test")
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)  # the handler runs between bytecodes
        assert interrupt.requested("test")
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert not interrupt.requested("test")  # later work in this process is not stopped


def _profile(out: Path, pause_at: str) -> tuple[subprocess.Popen, str, dict]:
    proc = _start("profile", "--device", "cpu", "--quick", "--precision", "fp32", "--json",
                  "--out", str(out), pause_at=pause_at)
    stdout, err = _interrupt(proc, pause_at)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    return proc, err, json.loads(stdout)


def _samples(path: Path) -> dict[str, list]:
    data = json.loads(path.read_text())
    return {k: v for k, v in data.items() if isinstance(v, list) and k != "memory_checks"}


@pytest.mark.slow
def test_profile_ctrl_c_keeps_the_samples_and_a_rerun_resumes(tmp_path):
    out = tmp_path / "cpu.json"
    # Stopped as the GEMMs begin: overhead and streaming copies are measured and on disk.
    _, err, first = _profile(out, "profile:GEMM fp32")
    assert first["interrupted"] is True
    assert f"interrupted: kept {first['new_samples']} new samples in {out}" in " ".join(err.split())
    one = _samples(out)
    assert one["stream"] and one["kernel_overhead_time_s"] and not one["gemm"]
    assert first["new_samples"] == sum(map(len, one.values()))
    # The re-run skips what the file holds and goes on; stopped again before the CPU AdamW step.
    _, err, second = _profile(out, "profile:CPU AdamW step")
    two = _samples(out)
    assert two["gemm"] and two["attention"] and not two["host_optimizer"]
    assert two["stream"] == one["stream"]  # kept as measured, not measured again
    assert two["kernel_overhead_time_s"] == one["kernel_overhead_time_s"]
    assert second["new_samples"] == (len(two["gemm"]) + len(two["attention"])
                                     + 1)  # its own (discarded) kernel-overhead sample


def _alive(pid: int, started: str) -> bool:
    """Running (not a zombie) and the same process (same start time)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return stat[0] != "Z" and stat[19] == started


@pytest.mark.slow
def test_validate_ctrl_c_leaves_no_process_behind(tmp_path):
    from dataclasses import replace

    from planner.loading import load_cluster, load_model
    from planner.plan import Plan
    from planner.runtime.launch import descendants
    from planner.strategy import Strategy
    plan = tmp_path / "plan.yaml"
    cluster = replace(load_cluster("dgx-h100"), gpus_per_node=2)
    Plan(model=load_model("llama-tiny"), cluster=cluster, strategy=Strategy(dp=2)).write(plan)
    proc = _start("validate", str(plan), "--steps", "100000")
    deadline, tree = time.monotonic() + 120, {}
    while time.monotonic() < deadline and proc.poll() is None:
        tree = descendants(proc.pid)
        cmdlines = [Path(f"/proc/{pid}/cmdline").read_bytes() if Path(f"/proc/{pid}").exists()
                    else b"" for pid in tree]
        if sum(b"planner.runtime.worker" in c for c in cmdlines) >= 3:  # torchrun + 2 ranks
            break
        time.sleep(0.1)
    else:
        proc.kill()
        raise AssertionError(f"the workers never started: {proc.communicate()[1]}")
    time.sleep(1.0)  # the ranks are past their start (imports, process group)
    tree = descendants(proc.pid)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted: validation stopped; torchrun and its workers have ended" in err
    assert len(tree) >= 3
    assert not [pid for pid, started in tree.items() if _alive(pid, started)]
