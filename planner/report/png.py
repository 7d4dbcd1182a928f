"""The report's figures as PNG files (matplotlib, imported only here: `--png DIR`).

Same data and colours as the HTML page (`planner.report.content`, `planner.report.svg`).
"""
from __future__ import annotations

from pathlib import Path

from planner.errors import EnvironmentProblem, InputError
from planner.report.content import MEMORY_PARTS, TIME_LABELS, Report, gib
from planner.report.figures import zoom_windows
from planner.report.svg import LABELS, color
from planner.report.timeline import BLOCK_KINDS

FIGURES = ("timeline", "memory", "breakdown", "runners_up")
"""One PNG per figure: DIR/<name>.png."""


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise EnvironmentProblem("--png needs matplotlib, which is not installed "
                                 "(pip install 'fmplan[report]')") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def write_pngs(report: Report, out_dir: Path) -> list[Path]:
    """Write every figure of `report` as DIR/<name>.png (DIR is created); returns the paths."""
    plt = _pyplot()
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--png {out_dir} exists and is not a directory", hint="give a directory path")
    out_dir.mkdir(parents=True, exist_ok=True)
    drawers = {"timeline": _timeline, "memory": _memory, "breakdown": _breakdown,
               "runners_up": _space}
    paths = []
    for name in FIGURES:
        fig = drawers[name](plt, report)
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        paths.append(path)
    return paths


def _timeline(plt, r: Report):
    tl = r.timeline
    windows = zoom_windows(r)
    height = max(1.6, 0.28 * tl.pp + 0.9)
    fig, axes = plt.subplots(len(windows), 1, figsize=(11, height * len(windows) + 0.6), squeeze=False)
    for ax, (title, start, end) in zip(axes[:, 0], windows):
        for stage in range(tl.pp):
            ax.broken_barh([(0, tl.pipeline_s)], (stage - 0.4, 0.8), color=color("idle"))
            for kind in BLOCK_KINDS:
                spans = [(b.start_s, b.end_s - b.start_s) for b in tl.blocks
                         if b.stage == stage and b.kind == kind and b.end_s > start and b.start_s < end]
                if spans:
                    ax.broken_barh(spans, (stage - 0.4, 0.8), color=color(kind), linewidth=0)
        ax.axvline(tl.predicted_step_s, color="#c00", linestyle="--", linewidth=1)
        ax.set_xlim(start, end)
        ax.set_ylim(tl.pp - 0.5, -0.5)
        ax.set_yticks(range(tl.pp) if tl.pp <= 32 else range(0, tl.pp, 4))
        ax.set_ylabel("stage")
        ax.set_title(f"{title}: {tl.pp} stage(s) x {tl.vpp} chunk(s), {tl.micro_batches} micro-batches",
                     fontsize=10, loc="left")
    axes[-1, 0].set_xlabel(f"time in the step (s); dashed: predicted step {tl.predicted_step_s:.4g} s")
    kinds = [k for k in BLOCK_KINDS if any(b.kind == k for b in tl.blocks)] + ["idle"]
    handles = [plt.Rectangle((0, 0), 1, 1, color=color(k)) for k in kinds]
    fig.legend(handles, [LABELS[k] for k in kinds], loc="lower center", ncol=len(kinds), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def _memory(plt, r: Report):
    fig, ax = plt.subplots(figsize=(max(4.5, min(11, 0.45 * len(r.memory) + 2.5)), 4))
    stages = [m.stage for m in r.memory]
    bottom = [0.0] * len(stages)
    for part in MEMORY_PARTS:
        values = [gib(m.parts_bytes[part]) for m in r.memory]
        ax.bar(stages, values, bottom=bottom, color=color(part, memory=True), label=part, width=0.7)
        bottom = [b + v for b, v in zip(bottom, values)]
    cap = gib(r.cost.capacity_bytes)
    ax.axhline(cap, color="#c00", linestyle="--", linewidth=1.2)
    ax.text(stages[-1] + 0.4, cap, f"capacity {cap:.1f} GiB", color="#c00", ha="right", va="bottom", fontsize=9)
    ax.set_ylim(0, max(cap, max(bottom)) * 1.12)
    ax.set_xlabel("pipeline stage")
    ax.set_ylabel("peak memory per GPU (GiB)")
    ax.set_xticks(stages if len(stages) <= 32 else stages[::4])
    ax.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.15), frameon=False)
    fig.tight_layout()
    return fig


def _breakdown(plt, r: Report):
    parts = {k: v for k, v in r.time_parts_s.items() if v > 0}
    fig, ax = plt.subplots(figsize=(10, 2.2))
    left = 0.0
    for key, seconds in parts.items():
        ax.barh([0], [seconds], left=left, color=color(key), label=f"{TIME_LABELS[key]} {seconds:.3g} s")
        left += seconds
    ax.set_yticks([])
    ax.set_xlim(0, left)
    ax.set_title(f"step time {r.cost.step_time_s:.4g} s, by part (axis in seconds)", fontsize=10,
                 loc="left")
    ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.35), frameon=False)
    fig.tight_layout()
    return fig


def _space(plt, r: Report):
    fig, ax = plt.subplots(figsize=(6.5, 4))
    cap = gib(r.cost.capacity_bytes)
    for rank, p in enumerate(r.points):
        chosen = p.role == "chosen"
        ax.scatter([gib(p.peak_bytes)], [p.step_time_s], s=70 if chosen else 35,
                   color="#c00" if chosen else "#4e79a7", zorder=3)
        ax.annotate("chosen" if chosen else f"#{rank}", (gib(p.peak_bytes), p.step_time_s),
                    textcoords="offset points", xytext=(6, 3), fontsize=9)
    ax.axvline(cap, color="#c00", linestyle="--", linewidth=1.2)
    ax.text(cap, ax.get_ylim()[0], f"capacity {cap:.1f} GiB ", color="#c00", ha="right", va="bottom",
            fontsize=9)
    ax.set_xlim(0, max(cap, *(gib(p.peak_bytes) for p in r.points)) * 1.12)
    ax.set_xlabel("peak memory per GPU (GiB)")
    ax.set_ylabel("step time (s)")
    ax.set_title("ranked plans: step time vs peak memory", fontsize=10, loc="left")
    fig.tight_layout()
    return fig
