"""Collectives over message and group sizes through torch.distributed (NCCL on CUDA, gloo on CPU).

Every rank takes part in every group's creation; only the ranks of the measured group (the
first n ranks) run the collective, the slowest rank's median is kept. Groups of consecutive ranks
stay within a node while n <= LOCAL_WORLD_SIZE (torchrun numbers ranks node by node), so those
samples measure the intra-node tier and larger ones the inter-node tier.

`spawn_local` starts N local workers itself (`fmplan profile --nproc N`); under torchrun
(multi-node, its usual arguments) `run_collectives` runs in the already initialised processes.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cost_models.profile_format import CommSample
from cost_models.profiler.settings import Settings
from planner.errors import EnvironmentProblem

COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "p2p")


def group_sizes(world: int) -> list[int]:
    """Powers of two from 2 up to the world size, and the world size itself."""
    sizes = [n for n in (2 ** p for p in range(1, 12)) if n <= world]
    return sorted(set(sizes + [world])) if world >= 2 else []


def plan(world: int, local_world: int, settings: Settings) -> list[tuple[str, int, str, int]]:
    """(collective, group size, tier, bytes) to measure; send/recv only between two ranks."""
    cases = []
    for n in group_sizes(world):
        tier = "intra" if n <= local_world else "inter"
        for kind in COLLECTIVES:
            if kind == "p2p" and n != 2:
                continue
            cases.extend((kind, n, tier, nbytes) for nbytes in settings.comm_bytes)
    return cases


def _operation(kind: str, n: int, nbytes: int, group, device: torch.device) -> Callable[[], None]:
    """One call of the collective on a buffer of `nbytes` (the full, unsharded size)."""
    rank = dist.get_rank()
    elems = max(nbytes // 4 // n * n, n)
    full = torch.ones(elems, device=device)
    shard = torch.ones(elems // n, device=device)
    if kind == "all_reduce":
        return lambda: dist.all_reduce(full, group=group)
    if kind == "all_gather":
        return lambda: dist.all_gather_single(full, shard, group=group)
    if kind == "reduce_scatter":
        return lambda: dist.reduce_scatter_single(shard, full, group=group)
    if kind == "all_to_all":
        out = torch.empty_like(full)
        return lambda: dist.all_to_all_single(out, full, group=group)
    peer = 1 - rank

    def ping_pong() -> None:  # one send/recv each way; the caller halves the time
        if rank == 0:
            dist.send(full, peer)
            dist.recv(full, peer)
        else:
            dist.recv(full, peer)
            dist.send(full, peer)
    return ping_pong


def _time_s(op: Callable[[], None], group, device: torch.device, settings: Settings) -> float:
    for _ in range(settings.warmup + 2):  # the first calls set up connections and buffers
        op()
    times = []
    for _ in range(settings.repeats + 2):
        dist.barrier(group=group)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        op()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_collectives(device: torch.device, settings: Settings, done: set[tuple],
                    sink: Callable[[CommSample | None], None]) -> None:
    """Measure the plan in an initialised process group; rank 0 calls `sink` per case (None for
    a case already in the profile)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    groups = {n: dist.new_group(list(range(n))) for n in group_sizes(world)}
    for kind, n, tier, nbytes in plan(world, local_world, settings):
        if (kind, n, tier, nbytes) in done:
            if rank == 0:
                sink(None)
            continue
        elapsed = 0.0
        if rank < n:
            group = groups[n]
            elapsed = _time_s(_operation(kind, n, nbytes, group, device), group, device, settings)
            elapsed = elapsed / 2 if kind == "p2p" else elapsed
        slowest = torch.tensor([elapsed], device=device)
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        if rank == 0:
            sink(CommSample(collective=kind, group_size=n, tier=tier, bytes=nbytes,
                            time_s=float(slowest.item())))


def _worker(rank: int, world: int, port: int, device_kind: str, settings: Settings,
            done: set[tuple], out_path: str) -> None:
    os.environ.update(LOCAL_WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    if device_kind == "cuda":
        torch.cuda.set_device(rank % torch.cuda.device_count())
        device, backend = torch.device("cuda", torch.cuda.current_device()), "nccl"
    else:
        torch.set_num_threads(1)
        device, backend = torch.device("cpu"), "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, device_id=device if device_kind == "cuda" else None)
    try:
        with open(out_path, "a") as out:
            def sink(sample: CommSample | None) -> None:
                out.write(json.dumps(asdict(sample) if sample else {}) + "\n")
                out.flush()
            run_collectives(device, settings, done, sink)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_local(nproc: int, device_kind: str, settings: Settings, done: set[tuple], out_path: Path,
                on_line: Callable[[dict], None]) -> None:
    """Run the collectives in `nproc` local worker processes; `on_line` sees each result line as
    rank 0 writes it (so progress moves and a Ctrl-C keeps what was measured)."""
    out_path.write_text("")
    ctx = mp.start_processes(_worker, args=(nproc, _free_port(), device_kind, settings, done,
                                            str(out_path)),
                             nprocs=nproc, join=False, start_method="spawn")
    seen = 0
    try:
        finished = False
        while not finished:
            try:
                finished = ctx.join(timeout=0.2)
            finally:
                lines = out_path.read_text().split("\n")[:-1]  # complete lines only
                for line in lines[seen:]:
                    on_line(json.loads(line))
                seen = len(lines)
    except (mp.ProcessRaisedException, mp.ProcessExitedException) as exc:
        if "KeyboardInterrupt" in str(exc) or getattr(exc, "exit_code", 0) == -signal.SIGINT:
            raise KeyboardInterrupt from None  # Ctrl-C reached a worker first
        raise EnvironmentProblem(f"a collective worker failed: {str(exc).strip().splitlines()[-1]}") from None
    finally:
        for proc in ctx.processes:
            if proc.is_alive():
                proc.terminate()

