"""`fmplan profile`: measure this machine and write (or extend) a profile file.

torch is imported only inside the command, so `fmplan --help`, `estimate` and `solve` stay fast.
Under torchrun (multi-node: torchrun's usual --nnodes/--node-rank/--rdzv-* arguments), every rank
runs this command; rank 0 measures and writes the file, the others join the collectives.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.options import JsonOpt
from planner.errors import EnvironmentProblem, InputError
from planner.loading import load_model


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("profile")(profile_command)


def profile_command(
    device: Annotated[Optional[str], typer.Option("--device", help="cuda or cpu (default: cuda when available).")] = None,
    nproc: Annotated[int, typer.Option("--nproc", min=1, help="Local worker processes for the collectives.")] = 1,
    quick: Annotated[bool, typer.Option("--quick", help="Small sizes, few repeats (under a minute on a CPU).")] = False,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Also time this model's GEMM/attention shapes and check its block's memory.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Profile file to write or extend.")] = Path("fmplan-profile.json"),
    precision: Annotated[Optional[list[str]], typer.Option("--precision", help="GEMM precision (repeatable): bf16, fp16, fp32. Default: all the device supports.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure compute, memory and communication rates and write a profile file."""
    try:
        import torch
    except ImportError:
        raise EnvironmentProblem("fmplan profile needs torch: pip install 'fmplan[torch]'") from None
    from cost_models.profiler.run import (ProfileRequest, init_torchrun_world, run_profile,
                                          torchrun_worker)
    kind = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if kind not in ("cuda", "cpu"):
        raise InputError(f"--device must be cuda or cpu, got {kind!r}")
    request = ProfileRequest(device_kind=kind, nproc=nproc, quick=quick, out=out,
                             model=load_model(model) if model else None,
                             precisions=tuple(p.lower() for p in precision or ()))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if init_torchrun_world(kind) != 0:
            torchrun_worker(request)
            return
    err = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, disable=as_json) as progress:
        def new_task(description: str, total: int):
            task = progress.add_task(description, total=total)
            return lambda steps: progress.advance(task, steps)
        run = run_profile(request, new_task)
    from cost_models.profile_fit import fit_profile
    fitted = fit_profile(run.profile)
    if as_json:
        typer.echo(json.dumps({"out": str(out), "wall_s": run.wall_s, "interrupted": run.interrupted,
                               "new_samples": run.new_samples, "fitted": fitted.to_dict(),
                               "memory_checks": [c.to_dict() for c in run.checks]}, indent=2,
                              sort_keys=True))
    else:
        render_profile(run, fitted, Console())
    if run.interrupted:
        err.print(f"interrupted: kept {run.new_samples} new samples in {out}")
        sys.exit(130)


def _rate(flops_per_s: float) -> str:
    return f"{flops_per_s / 1e12:.3f} TFLOP/s" if flops_per_s >= 1e11 else f"{flops_per_s / 1e9:.2f} GFLOP/s"


def render_profile(run, fitted, console: Console) -> None:
    """The fitted rates, the collectives' alpha-beta fits and the block memory checks."""
    p = run.profile
    console.print(f"[bold]{p.device.name}[/] ({p.device.kind}, {p.device.threads} threads) | "
                  f"{run.new_samples} new samples, {p.count()} in file | {run.wall_s:.1f} s")
    rates = Table(title="measured rates")
    rates.add_column("what")
    rates.add_column("value", justify="right")
    for dtype, best in sorted(fitted.gemm_best_flops_per_s.items()):
        rates.add_row(f"GEMM {dtype} best", _rate(best))
    if fitted.attention_flops_per_s:
        rates.add_row("attention fwd / bwd", " / ".join(_rate(r) for r in fitted.attention_flops_per_s))
    if fitted.stream_bandwidth_GBps:
        rates.add_row("streaming copy", f"{fitted.stream_bandwidth_GBps:.1f} GB/s")
    if fitted.kernel_overhead_s:
        rates.add_row("tiny kernel", f"{fitted.kernel_overhead_s * 1e6:.1f} us")
    for kind, bw in fitted.host_copy_GBps.items():
        rates.add_row(f"host<->device {kind}", f"{bw:.1f} GB/s")
    if fitted.host_optimizer_params_per_s:
        rates.add_row("CPU AdamW", f"{fitted.host_optimizer_params_per_s / 1e6:.0f} M params/s")
    for tier, link in fitted.links.items():
        rates.add_row(f"link {tier} (all collectives)",
                      f"{link['bandwidth_GBps']:.2f} GB/s, {link['latency_us']:.1f} us")
    console.print(rates)
    if fitted.comm:
        fits = Table(title="collectives: t = alpha + bytes / bandwidth (cost model's ring terms)")
        for col in ("collective", "ranks", "tier", "alpha us", "link GB/s", "per-step us"):
            fits.add_column(col, justify="right")
        for kind, by_n in fitted.comm.items():
            for n, f in by_n.items():
                fits.add_row(kind, str(n), f.tier, f"{f.alpha_s * 1e6:.1f}", f"{f.bandwidth_GBps:.2f}",
                             f"{f.latency_us:.1f}")
        console.print(fits)
    for section, reason in sorted(p.skipped.items()):
        console.print(f"[yellow]not measured[/] {section}: {reason}")
    for check in run.checks:
        render_block_check(check, console)


def render_block_check(check, console: Console) -> None:
    """Measured vs analytic activation bytes per term, then states and FLOPs."""
    mib = 2.0 ** 20
    c = check.config
    table = Table(title=f"{c['model']} block, tp={c['tp']} mbs={c['mbs']} s={c['seq_len']} "
                        f"{c['dtype']}: stored activations (MiB)")
    for col in ("term", "measured", "analytic", "measured/analytic"):
        table.add_column(col, justify="right")
    terms = list(dict.fromkeys([*check.analytic_bytes, *check.measured_bytes]))
    for term in terms:
        m, a = check.measured_bytes.get(term, 0.0), check.analytic_bytes.get(term, 0.0)
        table.add_row(term, f"{m / mib:.2f}", f"{a / mib:.2f}", f"{m / a:.2f}" if a else "-")
    total_m, total_a = sum(check.measured_bytes.values()), sum(check.analytic_bytes.values())
    table.add_row("total", f"{total_m / mib:.2f}", f"{total_a / mib:.2f}", f"{total_m / total_a:.2f}")
    table.add_row("MemTracker", f"{check.memtracker_activation_bytes / mib:.2f}", "", "")
    for name, pair in check.states_bytes.items():
        table.add_row(name, f"{pair['measured'] / mib:.2f}", f"{pair['analytic'] / mib:.2f}",
                      f"{pair['measured'] / pair['analytic']:.2f}")
    console.print(table)
    f = check.flops
    console.print(f"FLOPs per block: forward measured {f['measured_fwd']:.4g} vs analytic "
                  f"{f['analytic_fwd']:.4g}; backward {f['measured_bwd']:.4g} vs {f['analytic_bwd']:.4g}")
