"""`--out DIR`: every file written atomically, all of them or none; a DIR holding other files is
refused without --force; an interrupted or failed write leaves the previous files intact."""
from __future__ import annotations

import pytest

from bench.fuzz import run_cli
from planner import output
from planner.emit import OUTPUT_NAMES
from planner.errors import InputError
from planner.output import write_files

SOLVE = ["solve", "llama-tiny", "--cluster", "dgx-h100-1n", "--target", "megatron"]


def _tree(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def _no_staging_left(parent):
    assert not [p for p in parent.iterdir() if ".fmplan-" in p.name]


def test_solve_out_writes_a_new_dir_then_swaps_it_whole(tmp_path):
    out = tmp_path / "plans" / "tiny"
    assert run_cli([*SOLVE, "--out", str(out)], 60)[:2] == ("exit", 0)
    first = _tree(out)
    assert set(first) == {"plan.yaml", "megatron.sh", "slurm.sbatch"}
    assert (out / "megatron.sh").stat().st_mode & 0o777 == 0o755
    assert run_cli([*SOLVE, "--out", str(out)], 60)[:2] == ("exit", 0)
    assert _tree(out) == first
    # emit into the solve directory: the plan stays, the deepspeed files join it
    status, code, err = run_cli(["emit", str(out / "plan.yaml"), "--target", "deepspeed",
                                 "--out", str(out)], 60)
    assert (status, code) == ("exit", 0), err
    assert set(_tree(out)) == {"plan.yaml", "megatron.sh", "slurm.sbatch", "deepspeed.sh",
                               "ds_config.json"}
    assert _tree(out)["plan.yaml"] == first["plan.yaml"]
    _no_staging_left(out.parent)


def test_other_content_is_refused_unless_force(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    status, code, err = run_cli([*SOLVE, "--out", str(out)], 60)
    assert (status, code) == ("exit", 1) and "notes.txt" in err and "--force" in err
    assert _tree(out) == {"notes.txt": b"keep me"}
    status, code, err = run_cli([*SOLVE, "--out", str(out), "--force"], 60)
    assert (status, code) == ("exit", 0), err
    assert set(_tree(out)) == {"notes.txt", "plan.yaml", "megatron.sh", "slurm.sbatch"}
    assert (out / "notes.txt").read_text() == "keep me"
    _no_staging_left(tmp_path)
    (tmp_path / "file").write_text("x")
    status, code, err = run_cli([*SOLVE, "--out", str(tmp_path / "file")], 60)
    assert (status, code) == ("exit", 1) and "not a directory" in err


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_failed_or_interrupted_write_leaves_the_previous_files(tmp_path, monkeypatch, failure):
    out = tmp_path / "out"
    write_files(out, {"plan.yaml": "old plan\n", "megatron.sh": "old script\n"},
                owned=OUTPUT_NAMES)
    before = _tree(out)
    real = output._write_file
    calls = []

    def failing(path, text):
        calls.append(path.name)
        if len(calls) == 2:
            raise failure
        real(path, text)

    monkeypatch.setattr(output, "_write_file", failing)
    with pytest.raises(type(failure)):
        write_files(out, {"plan.yaml": "new plan\n", "megatron.sh": "new\n",
                          "slurm.sbatch": "new\n"}, owned=OUTPUT_NAMES)
    assert _tree(out) == before
    calls.clear()
    with pytest.raises(type(failure)):
        write_files(tmp_path / "fresh", {"plan.yaml": "x", "megatron.sh": "y"}, owned=OUTPUT_NAMES)
    assert not (tmp_path / "fresh").exists()
    _no_staging_left(tmp_path)


def test_a_plan_the_engine_cannot_express_writes_nothing(tmp_path):
    out = tmp_path / "out"
    solve = ["solve", "moe-tiny", "--cluster", "dgx-h100-1n", "--out", str(out)]
    assert run_cli(solve, 60)[:2] == ("exit", 0)
    before = _tree(out)
    status, code, err = run_cli(["emit", str(out / "plan.yaml"), "--target", "deepspeed",
                                 "--out", str(out)], 60)
    assert (status, code) == ("exit", 1) and "deepspeed" in err
    assert _tree(out) == before
    _no_staging_left(tmp_path)
