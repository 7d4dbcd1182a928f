"""The report's figures as inline SVG: pipeline timeline, memory per stage, step-time breakdown
and the ranked plans (step time vs peak memory)."""
from __future__ import annotations

import math

from planner.report.content import MEMORY_PARTS, TIME_LABELS, Report, gib
from planner.report.svg import (LABELS, color, legend, line, nice_ticks, rect, svg, text)
from planner.report.timeline import BLOCK_KINDS, Block

PLOT_W = 1000.0
LEFT = 70.0
MIN_LABEL_PX = 16.0
"""Micro-batch numbers are written in blocks at least this wide."""


def _merged(blocks: list[Block], px_per_s: float) -> list[tuple[Block, float]]:
    """Blocks of one stage in time order, touching same-kind neighbours merged when they are
    too narrow to tell apart (< 3 px); returns (first block, merged end)."""
    out: list[tuple[Block, float]] = []
    for b in sorted(blocks, key=lambda b: b.start_s):
        if out:
            first, end = out[-1]
            touching = first.kind == b.kind and abs(b.start_s - end) * px_per_s < 0.05
            same_op = (first.micro_batch, first.chunk) == (b.micro_batch, b.chunk)
            if touching and (same_op or (end - first.start_s) * px_per_s < 3):
                out[-1] = (first, b.end_s)
                continue
        out.append((b, b.end_s))
    return out


def _x_axis(y: float, start: float, end: float, px_per_unit: float, label: str) -> list[str]:
    """A horizontal axis from `start` to `end` with round ticks."""
    out = [line(LEFT, y, LEFT + (end - start) * px_per_unit, y)]
    ticks = nice_ticks(end - start)
    step = ticks[1] - ticks[0]
    t = math.ceil(start / step - 1e-9) * step
    while t <= end * (1 + 1e-9):
        x = LEFT + (t - start) * px_per_unit
        out += [line(x, y, x, y + 4), text(x, y + 16, f"{t:.6g}", "middle", 11)]
        t += step
    out.append(text(LEFT + PLOT_W / 2, y + 32, label, "middle", 11))
    return out


def zoom_windows(report: Report) -> list[tuple[str, float, float]]:
    """(title, start, end) of the timeline panels: the whole step and, when micro-batches are
    too many to read, the fill and the drain + step tail at a readable scale."""
    tl = report.timeline
    end = max(tl.makespan_s, tl.predicted_step_s)
    panels = [("whole step", 0.0, end)]
    slot_s = max(tl.busy_s) / tl.micro_batches
    window = slot_s * (2 * tl.pp / tl.vpp + 4)
    if end > 3 * window:
        panels += [("zoom: the fill", 0.0, window),
                   ("zoom: the drain and the step-level tail", tl.pipeline_s - window, end)]
    return panels


def timeline_svg(report: Report, title: str = "whole step", start_s: float = 0.0,
                 end_s: float | None = None) -> str:
    """Every stage's row from `start_s` to `end_s`: forward/backward/recompute blocks per
    micro-batch (numbered), exposed communication, idle time, then the step-level tail; the
    predicted step time as a line."""
    tl = report.timeline
    end_s = max(tl.makespan_s, tl.predicted_step_s) if end_s is None else end_s
    px = PLOT_W / (end_s - start_s)
    row_h = 20.0 if tl.pp <= 16 else max(5.0, 320.0 / tl.pp)
    top = 24.0

    def xpos(t: float) -> float:
        return LEFT + (min(max(t, start_s), end_s) - start_s) * px

    sched = "interleaved 1F1B" if tl.vpp > 1 else "1F1B"
    body = [text(LEFT, 15, f"{title}: {tl.pp} stage(s) x {tl.vpp} chunk(s), {tl.micro_batches} "
                 f"micro-batches, {sched}", size=13)]
    by_stage: dict[int, list[Block]] = {}
    for b in tl.blocks:
        if b.end_s > start_s and b.start_s < end_s:
            by_stage.setdefault(b.stage, []).append(b)
    for stage in range(tl.pp):
        y = top + stage * row_h
        if tl.pp <= 32 or stage % 4 == 0:
            body.append(text(LEFT - 6, y + row_h * 0.7, f"stage {stage}", "end", 11))
        body.append(rect(xpos(0), y + 1, xpos(tl.pipeline_s) - xpos(0), row_h - 2, color("idle"),
                         f"stage {stage}: idle {tl.bubble_s(stage):.4g} s"))
        for first, end in _merged(by_stage.get(stage, []), px):
            x0, x1 = xpos(first.start_s), xpos(end)
            shade = ' fill-opacity="0.62"' if first.chunk % 2 else ""
            what = f"{LABELS[first.kind]} mb {first.micro_batch} chunk {first.chunk}" \
                if first.micro_batch >= 0 else LABELS[first.kind]
            tip = f"{what}: {end - first.start_s:.4g} s" if x1 - x0 >= 3 else ""
            body.append(rect(x0, y + 1, x1 - x0, row_h - 2, color(first.kind), tip, shade))
            if first.micro_batch >= 0 and first.kind in ("fwd", "bwd") and x1 - x0 >= MIN_LABEL_PX \
                    and row_h >= 14:
                body.append(text((x0 + x1) / 2, y + row_h * 0.7, str(first.micro_batch), "middle", 9,
                                 ' fill="#fff"'))
    bottom = top + tl.pp * row_h
    if start_s <= tl.predicted_step_s <= end_s:
        x_pred = xpos(tl.predicted_step_s)
        body += [line(x_pred, top - 4, x_pred, bottom + 2, "#c00", ' stroke-dasharray="4 3"'),
                 text(min(x_pred, LEFT + PLOT_W - 4), top - 6,
                      f"predicted step {tl.predicted_step_s:.4g} s", "end", 11, ' fill="#c00"')]
    body += _x_axis(bottom + 4, start_s, end_s, px, "time in the step (s)")
    kinds = [k for k in BLOCK_KINDS if any(b.kind == k for b in tl.blocks)] + ["idle"]
    items, h = legend(LEFT, bottom + 44, kinds, LABELS)
    body += items
    return svg(LEFT + PLOT_W + 20, bottom + 44 + h + 6, body, f"pipeline timeline, {title}")


def memory_svg(report: Report) -> str:
    """Stacked per-stage peak memory (MEMORY_PARTS) against the GPU's capacity."""
    cap = gib(report.cost.capacity_bytes)
    stages = report.memory
    peak = max(gib(s.peak_bytes) for s in stages)
    top_gib = max(cap, peak) * 1.08
    plot_h, top = 260.0, 30.0
    width = min(PLOT_W, max(320.0, 46.0 * len(stages)))
    slot = width / len(stages)
    bar_w = min(34.0, slot * 0.75)
    scale = plot_h / top_gib
    base = top + plot_h
    body = [text(LEFT, 16, "Peak memory per GPU, by stage (GiB)", size=13)]
    for t in nice_ticks(top_gib):
        if t > top_gib:
            break
        y = base - t * scale
        body += [line(LEFT - 4, y, LEFT + width, y, "#ddd"), text(LEFT - 8, y + 4, f"{t:g}", "end", 11)]
    for s in stages:
        x = LEFT + s.stage * slot + (slot - bar_w) / 2
        y = base
        for part in MEMORY_PARTS:
            h = gib(s.parts_bytes[part]) * scale
            if h <= 0:
                continue
            y -= h
            body.append(rect(x, y, bar_w, h, color(part, memory=True),
                             f"stage {s.stage} {part}: {gib(s.parts_bytes[part]):.2f} GiB"))
        if len(stages) <= 16:
            body.append(text(x + bar_w / 2, y - 4, f"{gib(s.peak_bytes):.1f}", "middle", 10))
        if len(stages) <= 32 or s.stage % 4 == 0:
            body.append(text(x + bar_w / 2, base + 14, str(s.stage), "middle", 11))
    y_cap = base - cap * scale
    body += [line(LEFT, base, LEFT + width, base),
             line(LEFT, y_cap, LEFT + width, y_cap, "#c00", ' stroke-dasharray="6 3" stroke-width="1.5"'),
             text(LEFT + width, y_cap - 5, f"capacity {cap:.1f} GiB", "end", 11, ' fill="#c00"'),
             text(LEFT + width / 2, base + 30, "pipeline stage", "middle", 11)]
    items, h = legend(LEFT, base + 42, list(MEMORY_PARTS), {}, memory=True, width=max(width, 560))
    return svg(LEFT + max(width, 560) + 20, base + 42 + h + 6, body + items, "memory per stage")


def breakdown_svg(report: Report) -> str:
    """The step time as one stacked bar of its parts (cost_models TIME_KEYS)."""
    parts = {k: v for k, v in report.time_parts_s.items() if v > 0}
    total = sum(parts.values())
    px = PLOT_W / total
    body = [text(LEFT, 16, f"Step time {report.cost.step_time_s:.4g} s, by part", size=13)]
    x = LEFT
    for key, seconds in parts.items():
        w = seconds * px
        body.append(rect(x, 26, w, 30, color(key), f"{TIME_LABELS[key]}: {seconds:.4g} s"))
        if w > 44:
            body.append(text(x + w / 2, 45, f"{100 * seconds / total:.0f}%", "middle", 11, ' fill="#fff"'))
        x += w
    body += _x_axis(60, 0.0, total, px, "seconds")
    items, h = legend(LEFT, 104, list(parts), TIME_LABELS)
    return svg(LEFT + PLOT_W + 20, 104 + h + 6, body + items, "step-time breakdown")


def space_svg(report: Report) -> str:
    """Step time vs peak memory of the chosen plan and the runners-up, with the capacity line."""
    pts = report.points
    cap = gib(report.cost.capacity_bytes)
    x_top = max(cap, *(gib(p.peak_bytes) for p in pts)) * 1.1
    times = [p.step_time_s for p in pts]
    lo, hi = min(times), max(times)
    pad = max((hi - lo) * 0.15, hi * 0.02)
    y_lo, y_hi = max(0.0, lo - pad), hi + pad
    w, h, top = 600.0, 300.0, 30.0
    sx, sy = w / x_top, h / (y_hi - y_lo)
    base = top + h
    body = [text(LEFT, 16, "Ranked plans: step time vs peak memory per GPU", size=13),
            line(LEFT, base, LEFT + w, base), line(LEFT, top, LEFT, base)]
    for t in nice_ticks(x_top):
        if t <= x_top:
            body += [line(LEFT + t * sx, base, LEFT + t * sx, base + 4),
                     text(LEFT + t * sx, base + 16, f"{t:g}", "middle", 11)]
    for i in range(5):
        t = y_lo + (y_hi - y_lo) * i / 4
        body += [line(LEFT - 4, base - (t - y_lo) * sy, LEFT, base - (t - y_lo) * sy),
                 text(LEFT - 8, base - (t - y_lo) * sy + 4, f"{t:.4g}", "end", 11)]
    x_cap = LEFT + cap * sx
    body += [line(x_cap, top, x_cap, base, "#c00", ' stroke-dasharray="6 3" stroke-width="1.5"'),
             text(x_cap - 4, top + 12, f"capacity {cap:.1f} GiB", "end", 11, ' fill="#c00"'),
             text(LEFT + w / 2, base + 32, "peak memory per GPU (GiB)", "middle", 11),
             text(16, top + h / 2, "step time (s)", "middle", 11,
                  f' transform="rotate(-90 16 {top + h / 2:.1f})"')]
    for rank, p in reversed(list(enumerate(pts))):
        cx, cy = LEFT + gib(p.peak_bytes) * sx, base - (p.step_time_s - y_lo) * sy
        fill, r = ("#c00", 7) if p.role == "chosen" else ("#4e79a7", 5)
        tip = f"{'chosen' if rank == 0 else f'#{rank}'} {p.strategy}: {p.step_time_s:.4g} s, {gib(p.peak_bytes):.1f} GiB"
        body.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r}" fill="{fill}" stroke="#fff">'
                    f"<title>{tip}</title></circle>")
        body.append(text(cx + 9, cy + 4, "chosen" if rank == 0 else f"#{rank}", size=11))
    return svg(LEFT + w + 30, base + 42, body, "ranked plans")
