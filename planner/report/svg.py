"""A few SVG primitives and the report's colours (no library: the page must be self-contained)."""
from __future__ import annotations

import math
from html import escape

COLORS = {
    "fwd": "#4e79a7", "bwd": "#59a14f", "recompute": "#b07aa1", "tp_comm": "#f28e2b",
    "cp_comm": "#edc948", "ep_comm": "#e15759", "dp_comm": "#9c755f", "pp_p2p": "#76b7b2",
    "optimizer": "#555555", "idle": "#eeeeee",
    "weights": "#4e79a7", "grads": "#76b7b2", "optimizer_states": "#59a14f",
    "activations": "#f28e2b", "transient": "#edc948", "buffers": "#b07aa1", "allocator": "#bab0ac",
    "compute": "#4e79a7", "dp_comm_exposed": "#9c755f", "pp_bubble": "#d3d3d3",
}
"""Colour per block kind / memory part / time part (Tableau 10, readable in print)."""

LABELS = {"fwd": "forward", "bwd": "backward", "recompute": "recompute", "tp_comm": "TP comm",
          "cp_comm": "CP comm", "ep_comm": "EP all-to-all", "dp_comm": "DP / ZeRO comm",
          "pp_p2p": "PP send/recv", "optimizer": "optimizer step", "idle": "idle (bubble)"}


def color(key: str, memory: bool = False) -> str:
    """The colour of a key; memory's "optimizer" (states) differs from the optimizer step."""
    return COLORS["optimizer_states" if memory and key == "optimizer" else key]


def num(x: float) -> str:
    """A coordinate with one decimal, no trailing zeros."""
    return f"{x:.1f}".rstrip("0").rstrip(".")


def rect(x: float, y: float, w: float, h: float, fill: str, title: str = "", extra: str = "") -> str:
    """A filled rectangle, with a hover title when given."""
    body = f"<title>{escape(title)}</title>" if title else ""
    tag = f'<rect x="{num(x)}" y="{num(y)}" width="{num(max(w, 0.0))}" height="{num(h)}" fill="{fill}"{extra}'
    return f"{tag}>{body}</rect>" if body else f"{tag}/>"


def text(x: float, y: float, s: str, anchor: str = "start", size: int = 12, extra: str = "") -> str:
    """A text label."""
    return (f'<text x="{num(x)}" y="{num(y)}" font-size="{size}" text-anchor="{anchor}"{extra}>'
            f"{escape(s)}</text>")


def line(x1: float, y1: float, x2: float, y2: float, stroke: str = "#333", extra: str = "") -> str:
    """A straight line."""
    return f'<line x1="{num(x1)}" y1="{num(y1)}" x2="{num(x2)}" y2="{num(y2)}" stroke="{stroke}"{extra}/>'


def svg(width: float, height: float, body: list[str], label: str) -> str:
    """An inline SVG element of the given size that scales to the page width."""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {num(width)} {num(height)}" '
            f'width="{num(width)}" role="img" aria-label="{escape(label)}" '
            f'font-family="sans-serif">{"".join(body)}</svg>')


def nice_ticks(top: float, count: int = 6) -> list[float]:
    """Round tick values from 0 to at least `top` (1-2-5 steps)."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 5, 10) if s * mag >= raw)
    n = math.ceil(top / step - 1e-9)
    return [i * step for i in range(n + 1)]


def legend(x: float, y: float, keys: list[str], labels: dict[str, str], memory: bool = False,
           width: float = 1000) -> tuple[list[str], float]:
    """Colour swatches with labels in rows from (x, y); returns the elements and the height."""
    out, cx, cy = [], x, y
    for key in keys:
        label = labels.get(key, key)
        w = 22 + 7 * len(label)
        if cx + w > x + width:
            cx, cy = x, cy + 18
        out += [rect(cx, cy, 12, 12, color(key, memory), extra=' stroke="#999" stroke-width="0.5"'),
                text(cx + 16, cy + 10, label, size=11)]
        cx += w + 10
    return out, cy - y + 18
