"""Rich rendering of results for people (machine output is `--json`)."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from cost_models.breakdown import GIB, MEMORY_KEYS, TIME_KEYS, CostBreakdown
from planner.specs import ClusterSpec, ModelSpec
from planner.strategy import Strategy


def render_estimate(model: ModelSpec, cluster: ClusterSpec, strategy: Strategy,
                    result: CostBreakdown, console: Console | None = None,
                    stack: str = "megatron-core") -> None:
    """Print the step-time and memory breakdown of one strategy."""
    console = console or Console()
    console.print(f"[bold]{model.name}[/] on {cluster.name} ({cluster.gpus} x {cluster.device.name})")
    console.print(f"strategy: {strategy.describe()}  micro-batches: {result.micro_batches}  "
                  f"stack: {stack}")
    console.print(
        f"step {result.step_time_s:.3f} s | {result.tokens_per_s:,.0f} tokens/s | "
        f"MFU {100 * result.mfu:.1f}% | model {result.model_tflops_per_gpu:.0f} / hardware "
        f"{result.hardware_tflops_per_gpu:.0f} TFLOP/s per GPU")
    times = Table(title="step time")
    times.add_column("part")
    times.add_column("seconds", justify="right")
    times.add_column("share", justify="right")
    for key in TIME_KEYS:
        value = result.time_s[key]
        times.add_row(key, f"{value:.4f}", f"{100 * value / result.step_time_s:.1f}%")
    console.print(times)
    mem = Table(title=f"memory per GPU (stage {result.peak_stage}, the peak)")
    mem.add_column("part")
    mem.add_column("GiB", justify="right")
    peak = result.stages[result.peak_stage]
    for key in MEMORY_KEYS:
        mem.add_row(key, f"{peak.memory_bytes[key] / GIB:.2f}")
    mem.add_row("total", f"{result.peak_memory_bytes / GIB:.2f} of {result.capacity_bytes / GIB:.1f}")
    console.print(mem)
    if len(result.stages) > 1:
        stages = Table(title="pipeline stages")
        for col in ("stage", "layers", "full", "selective", "ms / micro-batch", "GiB"):
            stages.add_column(col, justify="right")
        for s in result.stages:
            stages.add_row(str(s.stage), str(s.layers), str(s.full_recompute),
                           str(s.selective_recompute), f"{1e3 * s.time_per_microbatch_s:.1f}",
                           f"{s.peak_bytes / GIB:.1f}")
        console.print(stages)
    overflow = result.overflow()
    if overflow:
        console.print(f"[bold red]does not fit[/]: {overflow}")
    else:
        console.print("[green]fits[/]")
