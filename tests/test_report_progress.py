"""The live progress line of `fmplan solve`: what the search reports, what the line shows, and
when it stays off (--json, --quiet, output not a terminal)."""
from __future__ import annotations

import io
from dataclasses import replace

from solve_helpers import small_cluster, tiny_model

from cli.progress import ProgressLine, progress_for
from cost_models.hardware import from_cluster
from planner.search import SearchOptions, SearchProgress, search
from planner.targets import TARGETS


def _progress(best: float, bound: float, left: int = 1234, phase: str = "searching") -> SearchProgress:
    return SearchProgress(elapsed_s=2.0, ilps_solved=7, best=best, bound=bound,
                          candidates_left=lambda: left, phase=phase)


def test_the_line_shows_candidates_best_bound_and_gap_then_is_erased():
    stream = io.StringIO()
    line = ProgressLine("s", stream)
    line(_progress(10.0, 9.0))
    assert stream.getvalue() == ""           # nothing in the first second
    line.started -= 2.0
    line(_progress(10.0, 9.0))
    shown = stream.getvalue()
    assert shown.startswith("\rsearching") and "1,234 candidates left" in shown
    assert "best 10 s" in shown and "bound 9 s" in shown and "gap 10.0 %" in shown
    line(_progress(9.5, 9.4))
    assert stream.getvalue() == shown        # redrawn at most every REFRESH_S
    line.close()
    assert stream.getvalue().endswith("\r" + " " * 120 + "\r")


def test_before_the_first_plan_and_while_enumerating():
    stream = io.StringIO()
    line = ProgressLine("GPU-h", stream)
    line.started -= 2.0
    line(_progress(float("inf"), 3.0, left=99, phase="enumerating"))
    assert "enumerating" in stream.getvalue() and "99 candidates enumerated" in stream.getvalue()
    assert "best" not in stream.getvalue()


def test_off_for_json_quiet_and_when_output_is_not_a_terminal():
    assert progress_for(as_json=True, quiet=False) is None
    assert progress_for(as_json=False, quiet=True) is None
    assert progress_for(as_json=False, quiet=False) is None   # pytest captures stdout: no tty


def test_search_reports_its_progress_and_returns_the_same_plan():
    model, cluster = tiny_model(layers=8, batch=16), small_cluster(4)
    hw = from_cluster(cluster)
    options = SearchOptions(limits=TARGETS["any"], time_limit_s=60)
    seen: list[SearchProgress] = []
    plain = search(model, cluster, hw, options)
    watched = search(model, cluster, hw, replace(options, progress=seen.append))
    assert [r.strategy for r in watched.ranked] == [r.strategy for r in plain.ranked]
    searching = [p for p in seen if p.phase == "searching"]
    assert searching and seen[0].phase == "enumerating"
    bests = [p.best for p in searching]
    assert bests == sorted(bests, reverse=True)              # the incumbent only improves
    assert min(bests) >= plain.ranked[0].objective - 1e-12
    # A true lower bound of the best plan: what is left in the queue, or the incumbent.
    assert all(min(p.bound, p.best) <= plain.ranked[0].objective + 1e-12 for p in searching)
    assert searching[0].candidates_left() <= plain.stats.candidates
