"""`fmplan profile` end to end: measure each section, keep every sample as it completes, merge
with the file already at `--out`, save. Reads top to bottom in the order sections run:

1. tiny-kernel overhead and streaming bandwidth (fast; they size nothing else),
2. GEMMs per precision (sweep + the model's shapes), then attention in the 16-bit precision,
3. host side (copies on CUDA; CPU AdamW),
4. collectives (local workers via `--nproc`, or the torchrun world this process is part of),
5. the per-block memory/FLOP check of the model (FakeTensorMode; no device work).

The file is saved (atomically, merged with the old one) as each section finishes and once more at
the end, so a run stopped any way keeps its finished sections, and Ctrl-C also keeps the samples
of the section it stopped; a re-run measures only what the file lacks.
"""
from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

import torch
import torch.distributed as dist

from cost_models import profile_format as pf
from cost_models.profiler import comm, compute, host
from cost_models.profiler.identity import device_identity, software
from cost_models.profiler.memory import BlockCheck, measure_block
from cost_models.profiler.settings import settings_for
from planner import interrupt
from planner.errors import EnvironmentProblem, InputError
from planner.specs import ModelSpec

Advance = Callable[[int], None]
NewTask = Callable[[str, int], Advance]
"""`new_task(description, total)` returns the task's `advance(steps)` (a progress bar)."""


@dataclass(frozen=True, kw_only=True)
class ProfileRequest:
    """What `fmplan profile` was asked to measure."""

    device_kind: Literal["cuda", "cpu"]
    nproc: int = 1
    """Local processes for the collectives (1: no collectives unless under torchrun)."""
    quick: bool = False
    model: ModelSpec | None = None
    out: Path
    precisions: tuple[str, ...] = ()
    """GEMM precisions; empty means every precision the device supports."""


@dataclass
class Collected:
    """Samples measured in this run, appended as each completes (Ctrl-C keeps them)."""

    samples: dict[str, list] = field(default_factory=lambda: {k: [] for k in pf.SECTIONS})
    kernel_overhead_s: list[float] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    checks: list[BlockCheck] = field(default_factory=list)

    def recorder(self, section: str) -> Callable[[object], None]:
        return self.samples[section].append

    def count(self) -> int:
        """Samples measured so far (as `Profile.count`)."""
        return sum(map(len, self.samples.values())) + len(self.kernel_overhead_s)


@dataclass(frozen=True)
class ProfileRun:
    """The saved profile and how the run went."""

    profile: pf.Profile
    new_samples: int
    wall_s: float
    interrupted: bool
    checks: list[BlockCheck]


def run_profile(req: ProfileRequest, new_task: NewTask) -> ProfileRun:
    """Measure, merge into `req.out` (if it exists) and save; see the module doc for the order."""
    start = time.perf_counter()
    device = _device(req.device_kind)
    world = dist.get_world_size() if _in_torchrun() else 1
    old = pf.load(req.out) if req.out.exists() else None
    identity = device_identity(device, max(req.nproc, world))
    if old is not None and (old.device.name, old.device.kind) != (identity.name, identity.kind):
        raise InputError(f"was measured on {old.device.name!r}, this machine has {identity.name!r}",
                         source=str(req.out), hint="choose another --out for this device")
    done = {section: old.keys(section) if old else set() for section in pf.SECTIONS}
    got = Collected()
    backend = ("nccl" if device.type == "cuda" else "gloo") if max(req.nproc, world) > 1 else None

    def checkpoint() -> pf.Profile:
        """Save what is measured so far, merged with the old file (atomic: pf.save)."""
        new = _profile(identity, software(device, backend), got)
        profile = pf.merge(old, new) if old is not None else new
        pf.save(profile, req.out)
        return profile

    def new_section(description: str, total: int) -> Advance:
        if got.count() or got.checks:  # each finished section is on disk before the next one starts
            checkpoint()
        interrupt.pause_point(f"profile:{description}")
        return new_task(description, total)

    interrupted = False
    try:
        _measure(req, device, done, got, new_section)
    except KeyboardInterrupt:
        interrupted = True
    profile = checkpoint()
    return ProfileRun(profile, got.count(), time.perf_counter() - start, interrupted, got.checks)


def _profile(identity, versions: dict, got: Collected) -> pf.Profile:
    """A profile of this run's samples alone (pf.merge adds the old file's)."""
    now = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    return pf.Profile(device=identity, software=versions, host=socket.gethostname(),
                      created_utc=now, updated_utc=now,
                      kernel_overhead_s=tuple(got.kernel_overhead_s), samples={k: tuple(v) for k, v in got.samples.items()}, skipped=got.skipped,
                      memory_checks=tuple(c.to_dict() for c in got.checks))


def _measure(req: ProfileRequest, device: torch.device, done: dict[str, set], got: Collected,
             new_task: NewTask) -> None:
    settings = settings_for(device.type, req.quick)
    supported = compute.supported_precisions(device)
    precisions = list(req.precisions) or supported
    for p in precisions:
        if p not in supported:
            raise InputError(f"--precision {p} is not measurable on {device.type}",
                             hint=f"choose from {', '.join(supported)}")

    advance = new_task("kernel overhead, streaming copies", 1 + len(settings.stream_bytes))
    got.kernel_overhead_s.append(compute.measure_kernel_overhead_s(device, settings))
    advance(1)
    compute.measure_stream(device, settings, done["stream"], got.recorder("stream"), advance)

    cases = compute.gemm_cases(settings, req.model)
    best_rate: dict[str, float] = {}
    for precision in precisions:
        advance = new_task(f"GEMM {precision}", len(cases))
        done_keys = done["gemm"]
        skipped = compute.measure_gemms(cases, precision, device, settings, done_keys,
                                        got.recorder("gemm"), advance)
        if skipped:
            got.skipped[f"gemm_{precision}"] = (f"{skipped} shapes predicted slower than "
                                                f"{settings.max_call_s} s per call")
        best_rate[precision] = max((2.0 * g.m * g.k * g.n / g.time_s for g in got.samples["gemm"]
                                    if g.dtype == precision), default=0.0)

    attn_precision = next((p for p in ("bf16", "fp16", "fp32") if p in precisions), precisions[0])
    att_cases = compute.attention_cases(settings, req.model)
    advance = new_task(f"attention {attn_precision}", len(att_cases))
    skipped = compute.measure_attention(att_cases, attn_precision, device, settings,
                                        done["attention"], got.recorder("attention"), advance,
                                        rate_guess_flops_per_s=best_rate.get(attn_precision) or 1e9)
    if skipped:
        got.skipped["attention"] = f"{skipped} shapes predicted too slow for this run"

    if device.type == "cuda":
        cases_n = 4 * len(settings.copy_bytes)
        compute_copies = new_task("host<->device copies", cases_n)
        host.measure_copies(device, settings, done["host_copy"], got.recorder("host_copy"),
                            compute_copies)
    else:
        got.skipped["host_copy"] = host.CPU_COPY_SKIP
    advance = new_task("CPU AdamW step", len(settings.adam_params))
    host.measure_cpu_adam(settings, done["host_optimizer"], got.recorder("host_optimizer"), advance)

    _measure_comm(req, device, settings, done["comm"], got, new_task)

    if req.model is not None:
        tps = compute.model_tp_degrees(req.model, settings)[:1 if req.quick else None]
        advance = new_task("block memory and FLOPs (FakeTensorMode)", len(tps))
        for tp in tps:
            got.checks.append(measure_block(req.model, tp=tp, mbs=1))
            advance(1)


def _measure_comm(req: ProfileRequest, device: torch.device, settings, done: set, got: Collected,
                  new_task: NewTask) -> None:
    if _in_torchrun():
        world = dist.get_world_size()
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        advance = new_task(f"collectives ({world} ranks)", len(comm.plan(world, local, settings)))

        def sink(sample: pf.CommSample | None) -> None:
            if sample is not None:
                got.samples["comm"].append(sample)
            advance(1)

        shared = [done]
        dist.broadcast_object_list(shared, src=0)  # the other ranks wait in `torchrun_worker`
        comm.run_collectives(device, settings, done, sink)
        return
    if req.nproc < 2:
        got.skipped["comm"] = "one process: run with --nproc N (or under torchrun) to measure collectives"
        return
    advance = new_task(f"collectives ({req.nproc} local workers)",
                       len(comm.plan(req.nproc, req.nproc, settings)))

    def on_line(line: dict) -> None:
        if line:
            got.samples["comm"].append(pf.CommSample(**line))
        advance(1)

    with tempfile.TemporaryDirectory() as tmp:
        comm.spawn_local(req.nproc, device.type, settings, done, Path(tmp) / "comm.jsonl", on_line)


def _in_torchrun() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _device(kind: str) -> torch.device:
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise EnvironmentProblem("--device cuda: torch sees no CUDA GPU (use --device cpu, "
                                     "or install a CUDA build of torch)")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def init_torchrun_world(device_kind: str) -> int:
    """Join the process group torchrun set up (env://); returns this process's rank.

    The timeout is generous: the other ranks wait while rank 0 measures compute first."""
    backend = "nccl" if device_kind == "cuda" else "gloo"
    if device_kind == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    else:
        torch.set_num_threads(max(1, torch.get_num_threads() // int(os.environ.get("LOCAL_WORLD_SIZE", 1))))
    dist.init_process_group(backend, timeout=timedelta(hours=2))
    return dist.get_rank()


def torchrun_worker(req: ProfileRequest) -> None:
    """Ranks other than 0: take part in the collectives rank 0 plans, measure nothing else."""
    device = _device(req.device_kind)
    shared: list = [None]
    dist.broadcast_object_list(shared, src=0)
    comm.run_collectives(device, settings_for(device.type, req.quick), shared[0], lambda s: None)
