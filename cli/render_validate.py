"""Rich rendering of a `fmplan validate` report: measured vs predicted, per rank."""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

MIB = 1024.0 ** 2


def _amount(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value / MIB:.2f}" if unit == "bytes" else f"{value:.4f}"


def render_validation(report: dict[str, Any], console: Console | None = None) -> None:
    """Print the run summary, the losses and the measured-vs-predicted table."""
    console = console or Console()
    console.print(f"[bold]{report['model']}[/]: {report['strategy']} on {report['world']} "
                  f"{report['device']} processes ({report['runtime']})")
    for note in report["notes"]:
        console.print(f"note: {note}")
    console.print("loss per step: " + ", ".join(f"{x:.4f}" for x in report["losses"]))
    table = Table(title="measured vs predicted (memory in MiB, time in s)")
    for col in ("rank", "stage", "quantity", "predicted", "measured", "error"):
        table.add_column(col, justify="left" if col == "quantity" else "right")
    for row in report["rows"]:
        error = "-" if row["error_pct"] is None else f"{row['error_pct']:+.1f}%"
        table.add_row(str(row["rank"]), str(row["stage"]), row["quantity"],
                      _amount(row["predicted"], row["unit"]), _amount(row["measured"], row["unit"]),
                      error)
    console.print(table)
    tracker = Table(title="MemTracker at the tracked step's peak (MiB)")
    keys = ("params", "grads", "optimizer", "activations", "temporaries", "buffers", "other", "total")
    for col in ("rank", *keys):
        tracker.add_column(col, justify="right")
    for rank in report["ranks"]:
        peak = rank["tracker_peak_bytes"]
        tracker.add_row(str(rank["rank"]), *(_amount(peak.get(k, 0), "bytes") for k in keys))
    console.print(tracker)
