"""The report as one self-contained HTML page: inline CSS and SVG, no scripts, fonts or links,
and a Content-Security-Policy that would block (and log) any request the page tried to make."""
from __future__ import annotations

from html import escape

from planner.report.content import TIME_LABELS, Report, gib
from planner.report.figures import (breakdown_svg, memory_svg, space_svg, timeline_svg,
                                     zoom_windows)

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

CSS = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1120px; padding: 0 1em; color: #222; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
.sub { color: #555; margin-top: 0; } svg { max-width: 100%; height: auto; display: block; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 10px; text-align: right; }
th:first-child, td:first-child, .l { text-align: left; } .note { color: #555; font-size: 0.9em; }
.kpi span { display: inline-block; margin: 0 1.6em 0.4em 0; } .kpi b { font-size: 1.15em; }
section { page-break-inside: avoid; break-inside: avoid; }
@media print { body { max-width: none; margin: 0; } h2 { page-break-after: avoid; } }
"""


def _table(header: list[str], rows: list[list[str]], left: tuple[int, ...] = ()) -> str:
    """An HTML table; columns in `left` (text) are left-aligned, the others (numbers) right."""
    def cell(tag: str, i: int, c: str) -> str:
        return f'<{tag} class="l">{escape(c)}</{tag}>' if i in left else f"<{tag}>{escape(c)}</{tag}>"
    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _summary(r: Report) -> str:
    c = r.cost
    fits = "fits" if c.fits else f"does not fit: {c.overflow()}"
    kpis = [("step time", f"{c.step_time_s:.4g} s"), ("MFU", f"{100 * c.mfu:.1f} %"),
            ("tokens/s", f"{c.tokens_per_s:,.0f}"), ("GPUs", str(c.gpus)),
            ("peak memory", f"{gib(c.peak_memory_bytes):.1f} / {gib(c.capacity_bytes):.1f} GiB ({fits})")]
    spans = "".join(f"<span>{escape(k)} <b>{escape(v)}</b></span>" for k, v in kpis)
    return f'<div class="kpi">{spans}</div>'


def _breakdown_table(r: Report) -> str:
    total = r.cost.step_time_s
    rows = [[TIME_LABELS[k], f"{v:.4g}", f"{100 * v / total:.1f}"]
            for k, v in r.time_parts_s.items() if v > 0]
    return _table(["part", "seconds", "% of step"], rows)


def _points_table(r: Report) -> str:
    best = r.points[0].step_time_s
    rows = [["chosen" if i == 0 else f"#{i}", p.strategy, f"{p.step_time_s:.4g}",
             f"{100 * (p.step_time_s / best - 1):+.2f}", f"{gib(p.peak_bytes):.1f}", p.note]
            for i, p in enumerate(r.points)]
    return _table(["plan", "strategy", "step (s)", "vs chosen %", "peak GiB", "what separates it"], rows,
                  left=(1, 5))


def _validation(r: Report) -> str:
    if not r.validation_rows:
        return ""

    def fmt(row: dict, key: str) -> str:
        value = row.get(key)
        if value is None:
            return "-"
        return f"{value / 2 ** 30:.3f} GiB" if row.get("unit") == "bytes" else f"{value:.4g} {row.get('unit', '')}"

    rows = [[str(row.get("quantity")), str(row.get("rank")), str(row.get("stage")),
             fmt(row, "predicted"), fmt(row, "measured"),
             "-" if row.get("error_pct") is None else f"{row['error_pct']:+.1f}"]
            for row in r.validation_rows]
    return ("<section><h2>Measured vs predicted (fmplan validate)</h2>"
            + _table(["quantity", "rank", "stage", "predicted", "measured", "error %"], rows)
            + "</section>")


def render_html(r: Report) -> str:
    """The whole page (deterministic: same report, same bytes)."""
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in r.notes)
    sections = [
        ("Pipeline timeline", "".join(timeline_svg(r, *w) for w in zoom_windows(r)),
         "Each row is one pipeline stage; numbers are micro-batches, lighter shades the odd "
         "virtual chunks; grey is idle. Block lengths are the cost model's per-stage times. The "
         "cost model prices the send/recv on the critical path as one step-level term, drawn "
         "after the drain with the exposed gradient reduction and the optimizer step."),
        ("Memory per stage", memory_svg(r),
         "Each bar sums to the stage's predicted peak per GPU."),
        ("Step-time breakdown", breakdown_svg(r) + _breakdown_table(r), ""),
        ("Runners-up", space_svg(r) + _points_table(r), r.points_note),
    ]
    body = "".join(f"<section><h2>{escape(title)}</h2>{fig}"
                   + (f'<p class="note">{escape(caption)}</p>' if caption else "") + "</section>"
                   for title, fig, caption in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>fmplan report: {escape(r.model)} on {escape(r.cluster)}</title>"
        f"<style>{CSS}</style></head><body>"
        f"<h1>{escape(r.model)} on {escape(r.cluster)}</h1>"
        f'<p class="sub">{escape(r.strategy)}</p>{_summary(r)}{notes}{body}{_validation(r)}'
        '<p class="note">Generated by fmplan report.</p></body></html>\n')
