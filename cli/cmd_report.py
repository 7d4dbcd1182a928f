"""`fmplan report`: a saved plan as one self-contained HTML page (and, with --png, PNG figures)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.options import ProfileOpt

ReportOpt = Annotated[Optional[Path], typer.Option(
    "--report", help="Also write a self-contained HTML report of the plan (timeline, memory, runners-up).")]
PngOpt = Annotated[Optional[Path], typer.Option(
    "--png", help="Also write the report's figures as PNGs into DIR (needs matplotlib).")]


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("report")(report_command)


def report_command(
    plan: Annotated[Path, typer.Argument(help="plan.yaml, or the --out DIR of `fmplan solve`.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="HTML file to write (default report.html unless only --png is given).")] = None,
    png: PngOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Draw a plan: pipeline timeline of one step, memory per stage, step-time breakdown."""
    from planner.report.sources import report_from_plan  # the cost model loads only when it runs
    if out is None and png is None:
        out = Path("report.html")
    written = write_report(report_from_plan(plan, profile), out, png)
    for path in written:
        typer.echo(f"wrote {path}")


def write_report(report, html_path: Path | None, png_dir: Path | None) -> list[Path]:
    """Write the HTML page and/or the PNG figures of `report`; returns the paths written."""
    from planner.report.html import render_html
    from planner.report.sources import write_text_atomic
    written = []
    if png_dir is not None:
        from planner.report.png import write_pngs  # matplotlib: only for --png
        written += write_pngs(report, png_dir)
    if html_path is not None:
        written.append(write_text_atomic(html_path, render_html(report)))
    return written
