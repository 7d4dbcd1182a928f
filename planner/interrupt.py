"""Ctrl-C during long work: inside `graceful()`, the first SIGINT becomes a request that the work
polls at safe points (`requested`), so it can stop there and report what it has, e.g. the search
its best plan so far; a second SIGINT raises KeyboardInterrupt as usual.

For tests that interrupt a running command without guessing its timing, `FMPLAN_PAUSE_AT=<point>`
makes the command wait for a SIGINT at that point (`pause_point`). Nothing else reads it.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

PAUSE_ENV = "FMPLAN_PAUSE_AT"
PAUSE_S = 60.0
"""Longest wait at a pause point before the work goes on."""

_state = {"requested": False, "paused": False}


@contextmanager
def graceful() -> Iterator[None]:
    """Within: the first SIGINT sets the stop request, the second raises KeyboardInterrupt.
    Outside the main thread (where signals cannot be caught) it changes nothing."""
    _state.update(requested=False, paused=False)
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum, frame) -> None:
        if _state["requested"]:
            raise KeyboardInterrupt
        _state["requested"] = True

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _state["requested"] = False  # a request ends with the work it stopped


def requested(point: str) -> bool:
    """Whether a stop was requested; `point` names the safe point polling (see `pause_point`)."""
    pause_point(point)
    return _state["requested"]


def pause_point(point: str) -> None:
    """For tests: when FMPLAN_PAUSE_AT names `point`, the first time it is reached write
    `fmplan: paused at <point>` on stderr and wait (at most PAUSE_S) for a SIGINT. Under the
    default handler the SIGINT raises KeyboardInterrupt here; under `graceful` it sets the request.
    """
    if _state["paused"] or os.environ.get(PAUSE_ENV) != point:
        return
    _state["paused"] = True
    sys.stderr.write(f"fmplan: paused at {point}\n")
    sys.stderr.flush()
    deadline = time.monotonic() + PAUSE_S
    while not _state["requested"] and time.monotonic() < deadline:
        time.sleep(0.01)
