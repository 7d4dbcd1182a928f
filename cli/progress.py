"""A live progress line on stderr for long searches: candidates left, best step time, bound, gap.

Shown only when stderr is a terminal, stdout is one too (piped output stays clean), `--json`
and `--quiet` are off, and the search has run for more than `DELAY_S`.
"""
from __future__ import annotations

import sys
import time

DELAY_S = 1.0
"""Searches shorter than this show nothing."""
REFRESH_S = 0.25


class ProgressLine:
    """A callback for `SearchOptions.progress` that redraws one stderr line, at most every
    REFRESH_S; `close()` erases it."""

    def __init__(self, unit: str = "s", stream=None):
        self.unit = unit
        """Unit of the objective: s (step time) or GPU-h (--objective cost)."""
        self.stream = stream or sys.stderr
        self.started = time.perf_counter()
        self.last = 0.0
        self.shown = False

    def __call__(self, progress) -> None:
        now = time.perf_counter()
        if now - self.started < DELAY_S or now - self.last < REFRESH_S:
            return
        self.last = now
        best, bound = progress.best, progress.bound
        if progress.phase == "enumerating":
            parts = [f"{progress.candidates_left():,} candidates enumerated"]
        else:
            parts = [f"{progress.candidates_left():,} candidates left", f"{progress.ilps_solved} ILPs"]
        if best < float("inf"):
            gap = max(0.0, (best - bound) / best) if bound < best else 0.0
            parts += [f"best {best:.4g} {self.unit}", f"bound {min(bound, best):.4g} {self.unit}",
                      f"gap {100 * gap:.1f} %"]
        line = f"{progress.phase} {now - self.started:5.1f} s: " + ", ".join(parts)
        self.stream.write("\r" + line[:120].ljust(120 if self.shown else 0))
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        """Erase the line (if one was drawn)."""
        if self.shown:
            self.stream.write("\r" + " " * 120 + "\r")
            self.stream.flush()


def progress_for(as_json: bool, quiet: bool, unit: str = "s") -> ProgressLine | None:
    """The progress line, or None where it must stay off."""
    if as_json or quiet or not (sys.stdout.isatty() and sys.stderr.isatty()):
        return None
    return ProgressLine(unit)
