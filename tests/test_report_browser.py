"""The report page in a real browser (headless Chromium, Debian's `chromium`, installed by .ci/run):
it renders with no console messages and makes no network request, and its screenshot shows the
figures. Controls prove the checks can fail: a page that loads an image is caught by the network
log, and the same page under the report's Content-Security-Policy by the console log."""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from cost_models.hardware import from_cluster
from planner.loading import load_cluster, load_model
from planner.report.content import build_report
from planner.report.html import CSP, render_html
from planner.strategy import Strategy

BROWSER = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="no headless Chromium here (.ci/run installs Debian's `chromium` "
                            "with apt-get; it could not be installed on this machine)")
WIDTH, HEIGHT = 1200, 1600
FORWARD_RGB = (0x4E, 0x79, 0xA7)
"""The timeline's forward-block colour (planner.report.svg.COLORS)."""


def open_page(page: Path, tmp: Path) -> dict:
    """Load `page` headless; its console lines, the requests the page itself started and the
    screenshot's pixels."""
    netlog, shot = tmp / f"{page.stem}.netlog.json", tmp / f"{page.stem}.png"
    proc = subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=3000", "--hide-scrollbars", f"--user-data-dir={tmp / 'profile'}",
         f"--log-net-log={netlog}", f"--window-size={WIDTH},{HEIGHT}", f"--screenshot={shot}",
         page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.exists(), proc.stderr[-3000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return {"console": console, "requests": page_requests(netlog), "pixels": read_png(shot)}


def page_requests(netlog: Path) -> list[str]:
    """URLs of requests the page started (the browser's own background requests have no origin)."""
    log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [e["params"]["url"] for e in log["events"]
            if e["type"] == start and "url" in e.get("params", {})
            and e["params"].get("initiator") != "not an origin"]


def read_png(path: Path) -> tuple[int, int, int, list[bytes]]:
    """(width, height, bytes per pixel, rows) of an 8-bit RGB/RGBA PNG (PNG spec §9 filters)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color_type = header[:4]
    assert depth == 8 and color_type in (2, 6), header
    bpp = 3 if color_type == 2 else 4
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytearray(width * bpp)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


def colours(pixels) -> dict[tuple[int, int, int], int]:
    """Pixel count per RGB colour."""
    width, _, bpp, rows = pixels
    counts: dict[tuple[int, int, int], int] = {}
    for row in rows:
        for x in range(0, width * bpp, bpp):
            rgb = (row[x], row[x + 1], row[x + 2])
            counts[rgb] = counts.get(rgb, 0) + 1
    return counts


def test_report_renders_without_console_messages_or_requests(tmp_path):
    model, cluster = load_model("gpt3-175b"), load_cluster("dgx-a100-128n")
    st = Strategy(dp=16, tp=8, pp=8, vpp=3, zero=1, sp=True, recompute="selective")
    page = tmp_path / "report.html"
    page.write_text(render_html(build_report(model, cluster, st, from_cluster(cluster))))
    seen = open_page(page, tmp_path)
    assert seen["console"] == [] and seen["requests"] == []
    shutil.copy(tmp_path / "report.png", tmp_path / "screenshot.png")  # kept for a look on failure
    width, height, _, _ = seen["pixels"]
    assert (width, height) == (WIDTH, HEIGHT)
    counts = colours(seen["pixels"])
    white = counts.get((255, 255, 255), 0)
    assert white < 0.9 * width * height          # not a blank page
    assert len(counts) > 20                      # text, axes and several fills
    assert counts.get(FORWARD_RGB, 0) > 2000     # the timeline's forward blocks were drawn


def test_the_checks_catch_a_request_and_a_blocked_one(tmp_path):
    image = '<img src="http://127.0.0.1:9/x.png">'
    loads = tmp_path / "loads.html"
    loads.write_text(f"<!DOCTYPE html><html><body><p>x</p>{image}</body></html>")
    assert open_page(loads, tmp_path)["requests"] == ["http://127.0.0.1:9/x.png"]
    blocked = tmp_path / "blocked.html"
    blocked.write_text(f'<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" '
                       f'content="{CSP}"></head><body><p>x</p>{image}</body></html>')
    seen = open_page(blocked, tmp_path)
    assert seen["requests"] == [] and any("Content Security Policy" in c for c in seen["console"])
