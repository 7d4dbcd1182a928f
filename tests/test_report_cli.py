"""`fmplan report`, `solve --report` and `estimate --report` as a user runs them: one
self-contained page, deterministic, clear errors on bad input, no heavy imports for estimate."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def fmplan(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "COLUMNS": "120"}
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("plan")
    proc = fmplan("solve", "llama3-70b", "--cluster", "dgx-h100-8n", "--out", str(out), "--force")
    assert proc.returncode == 0, proc.stderr
    return out


def assert_self_contained(html: str) -> None:
    """No scripts, no external references, and a CSP that blocks any request."""
    assert html.startswith("<!DOCTYPE html>")
    assert "default-src 'none'; style-src 'unsafe-inline'; img-src data:" in html
    assert "<script" not in html.lower() and "@import" not in html and "url(" not in html
    refs = re.findall(r"""(?:href|src)\s*=\s*["']([^"']*)""", html)
    assert refs == []
    # The only URLs are the SVG namespace declarations (names, never fetched).
    urls = set(re.findall(r"(?:https?|file|ftp)://[^\s\"'<>]*", html))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls


def test_report_of_a_plan_dir_and_of_its_plan_yaml(plan_dir, tmp_path):
    proc = fmplan("report", str(plan_dir), "--out", str(tmp_path / "r.html"))
    assert proc.returncode == 0, proc.stderr
    html = (tmp_path / "r.html").read_text()
    assert_self_contained(html)
    assert html.count("<svg") == 6   # 3 timeline panels (256 micro-batches), memory, breakdown, plans
    for title in ("Pipeline timeline", "Memory per stage", "Step-time breakdown", "Runners-up"):
        assert title in html
    assert "plan.yaml keeps no runners-up" in html
    again = fmplan("report", str(plan_dir / "plan.yaml"), "--out", str(tmp_path / "s.html"))
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "s.html").read_bytes() == (tmp_path / "r.html").read_bytes()  # deterministic


def test_predicted_step_time_on_the_page_is_the_plans(plan_dir, tmp_path):
    from planner.plan import load_plan
    plan = load_plan(plan_dir / "plan.yaml")
    assert fmplan("report", str(plan_dir), "--out", str(tmp_path / "r.html")).returncode == 0
    html = (tmp_path / "r.html").read_text()
    step = f"{plan.predicted['step_time_s']:.4g} s"
    assert f"step time <b>{step}</b>" in html and f"predicted step {step}" in html
    assert "re-estimated now" not in html   # the plan's own prediction, reproduced


def test_solve_report_draws_the_runners_up_and_keeps_json_clean(tmp_path):
    page = tmp_path / "solve.html"
    proc = fmplan("solve", "llama-tiny", "--cluster", "dgx-h100-1n", "--json", "--report", str(page))
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)   # nothing but the JSON object on stdout
    assert f"wrote {page}" in proc.stderr
    html = page.read_text()
    assert_self_contained(html)
    assert len(payload["runners_up"]) == 3
    assert all(f">#{i}<" in html for i in (1, 2, 3)) and "runner(s)-up the search proved" in html


def test_estimate_report_imports_no_solver_numpy_or_matplotlib(tmp_path):
    page = tmp_path / "e.html"
    code = ("import json, sys, runpy; sys.argv = ['fmplan', 'estimate', 'llama3-8b', '--cluster', "
            f"'dgx-h100-1n', '--tp', '2', '--pp', '2', '--report', {str(page)!r}]\n"
            "try:\n    runpy.run_module('cli', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('pulp', 'highspy', 'numpy', 'torch', 'matplotlib'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
    html = page.read_text()
    assert_self_contained(html)
    assert "there are no runners-up" in html


@pytest.mark.parametrize("case", ["missing", "directory without plan", "not yaml", "bad key",
                                  "out dir missing", "bad validate.json"])
def test_bad_input_is_one_clear_line_and_exit_1(plan_dir, tmp_path, case):
    target, out = tmp_path / "nothing", tmp_path / "r.html"
    if case == "directory without plan":
        target.mkdir()
    elif case in ("not yaml", "bad key"):
        target = tmp_path / "plan.yaml"
        text = (plan_dir / "plan.yaml").read_text()
        target.write_text("{{{ not yaml" if case == "not yaml" else text.replace("tp:", "tpp:", 1))
    elif case == "out dir missing":
        target, out = plan_dir, tmp_path / "no" / "such" / "r.html"
    elif case == "bad validate.json":
        target = tmp_path / "dir"
        target.mkdir()
        (target / "plan.yaml").write_text((plan_dir / "plan.yaml").read_text())
        (target / "validate.json").write_text(json.dumps({"rows": [{"quantity": "peak", "measured": "x"}]}))
    proc = fmplan("report", str(target), "--out", str(out))
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert not out.exists()
    expected = {"missing": "no such plan file", "directory without plan": "no such plan file",
                "not yaml": "plan.yaml", "bad key": "tpp", "out dir missing": "no such directory",
                "bad validate.json": "rows[0].measured"}[case]
    assert expected in proc.stderr


def test_validate_results_beside_the_plan_are_shown(plan_dir, tmp_path):
    target = tmp_path / "dir"
    target.mkdir()
    (target / "plan.yaml").write_text((plan_dir / "plan.yaml").read_text())
    rows = [{"rank": 0, "stage": 0, "quantity": "peak", "unit": "bytes", "predicted": 2.0 * 2 ** 30,
             "measured": 2.1 * 2 ** 30, "error_pct": 5.0},
            {"rank": 0, "stage": 0, "quantity": "step_time", "unit": "s", "predicted": None,
             "measured": 0.5, "error_pct": None}]
    (target / "validate.json").write_text(json.dumps({"rows": rows}))
    proc = fmplan("report", str(target), "--out", str(tmp_path / "r.html"))
    assert proc.returncode == 0, proc.stderr
    html = (tmp_path / "r.html").read_text()
    assert "Measured vs predicted" in html
    assert "2.000 GiB" in html and "2.100 GiB" in html and "+5.0" in html


def test_png_figures(plan_dir, tmp_path):
    pytest.importorskip("matplotlib", reason="--png needs matplotlib (the `report` extra)")
    from planner.report.png import FIGURES
    proc = fmplan("report", str(plan_dir), "--png", str(tmp_path / "png"))
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "report.html").exists() and not (ROOT / "report.html").exists()
    assert fmplan("report", str(plan_dir), "--png", str(tmp_path / "again")).returncode == 0
    for name in FIGURES:
        data = (tmp_path / "png" / f"{name}.png").read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
        assert (tmp_path / "again" / f"{name}.png").read_bytes() == data   # deterministic


def test_readme_shows_each_figure_and_the_command_that_wrote_it():
    from planner.report.png import FIGURES
    readme = (ROOT / "README.md").read_text()
    assert "fmplan solve llama3-70b --cluster dgx-h100-8n --report report.html --png docs/report" in readme
    for name in FIGURES:
        assert f"(docs/report/{name}.png)" in readme
        data = (ROOT / "docs" / "report" / f"{name}.png").read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) < 200_000   # small files
