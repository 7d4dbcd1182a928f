"""Bounds on every number and limits on every document: absurd inputs fail fast with exit 1, the
file, the key path and the reason; no input hangs or crashes the parser."""
from __future__ import annotations

import json
import os
import re
import time

import pytest

from bench.fuzz import HF_CONFIGS, run_cli
from planner.errors import InputError
from planner.limits import BOUNDS, MAX_DOCUMENT_BYTES
from planner.loading import load_model
from planner.plan import load_plan

MODEL = """\
name: m
architecture: {layers: 4, hidden: 256, heads: 8, kv_heads: 4, ffn_hidden: 688, vocab: 1000, mlp: swiglu}
training: {seq_len: 256, global_batch: 16}
"""
CLUSTER = "nodes: 2\ngpus_per_node: 8\ngpu: H100-SXM-80GB\nintra_node_bw_GBps: 450\ninter_node_bw_GBps: 50\n"


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.fixture(autouse=True, scope="module")
def _cli_imported():
    """The first in-process run imports the CLI modules; time the later ones only."""
    run_cli(["--version"], timeout_s=30)


def _fails_fast(argv, *fragments):
    start = time.perf_counter()
    status, code, err = run_cli(argv, timeout_s=10)
    elapsed = time.perf_counter() - start
    assert (status, code) == ("exit", 1), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err
    assert elapsed < 3.0, f"{argv} took {elapsed:.2f} s"
    return err


@pytest.mark.parametrize("old, new, key_path", [
    ("layers: 4", "layers: 18446744073709551616", "architecture.layers"),
    ("vocab: 1000", f"vocab: {10 ** 25}", "architecture.vocab"),
    ("hidden: 256", f"hidden: {2 ** 60}", "architecture.hidden"),
    ("seq_len: 256", f"seq_len: {2 ** 62}", "training.seq_len"),
    ("global_batch: 16", f"global_batch: {10 ** 18}", "training.global_batch"),
    ("heads: 8", "heads: -8", "architecture.heads"),
])
@pytest.mark.parametrize("command", ["estimate", "solve"])
def test_absurd_model_numbers_fail_fast_with_the_reason(tmp_path, old, new, key_path, command):
    path = _write(tmp_path, "model.yaml", MODEL.replace(old, new))
    err = _fails_fast([command, str(path), "--cluster", "dgx-h100-1n"], str(path), key_path)
    assert "between" in err and "(" in err  # the range and why


@pytest.mark.parametrize("old, new, key_path", [
    ("nodes: 2", f"nodes: {2 ** 70}", "nodes"),
    ("nodes: 2\ngpus_per_node: 8", "nodes: 131072\ngpus_per_node: 16", "nodes x gpus_per_node"),
    ("inter_node_bw_GBps: 50", "inter_node_bw_GBps: .inf", "inter_node_bw_GBps"),
    ("inter_node_bw_GBps: 50", "inter_node_bw_GBps: .nan", "inter_node_bw_GBps"),
    ("gpu: H100-SXM-80GB", "gpu: {name: g, peak_tflops: {bf16: 1e300}, hbm_gib: 80, "
                           "hbm_bw_GBps: 3000, gemm_efficiency: [[1, 0.5]]}", "peak_tflops.bf16"),
])
def test_absurd_cluster_numbers_name_the_key(tmp_path, old, new, key_path):
    assert old in CLUSTER
    path = _write(tmp_path, "cluster.yaml", CLUSTER.replace(old, new))
    _fails_fast(["estimate", "llama-tiny", "--cluster", str(path)], str(path), key_path)


def test_absurd_nodes_option(tmp_path):
    _fails_fast(["solve", "llama-tiny", "--cluster", "dgx-h100", "--nodes", str(2 ** 70)],
                "--nodes")


@pytest.mark.parametrize("key, value", [("num_hidden_layers", 2 ** 64), ("vocab_size", 10 ** 25),
                                        ("hidden_size", "4096"), ("num_key_value_heads", 1.5),
                                        ("tie_word_embeddings", "yes")])
def test_hf_config_numbers_are_bounded(tmp_path, key, value):
    path = _write(tmp_path, "config.json", json.dumps({**HF_CONFIGS["llama"], key: value}))
    with pytest.raises(InputError) as err:
        load_model(str(path))
    assert err.value.key_path == key and str(path) in str(err.value)


def test_profile_and_plan_numbers_are_bounded(tmp_path):
    profile = json.loads(open("configs/profiles/cpu-2core.json").read())
    profile["gemm"][0]["m"] = 2 ** 64
    path = _write(tmp_path, "p.json", json.dumps(profile))
    _fails_fast(["estimate", "llama-tiny", "--cluster", "dgx-h100-1n", "--profile", str(path)],
                "gemm[0].m")
    status, code, err = run_cli(["solve", "llama-tiny", "--cluster", "dgx-h100-1n", "--out",
                                 str(tmp_path / "p")], timeout_s=60)
    assert (status, code) == ("exit", 0), err
    plan_text = (tmp_path / "p" / "plan.yaml").read_text()
    for key, value in [("tp", "1180591620717411303424"), ("zero", "7"), ("mbs", "'1'"),
                       ("vpp", "2.0"), ("dp", "-1"), ("sp", "1")]:
        bad_text, count = re.subn(rf"^  {key}: .*$", f"  {key}: {value}", plan_text, flags=re.M)
        assert count == 1, key
        with pytest.raises(InputError) as err:
            load_plan(_write(tmp_path, "plan.yaml", bad_text))
        assert err.value.key_path.startswith(f"strategy.{key}"), err.value


@pytest.mark.parametrize("name, content, fragment", [
    ("deep.yaml", "[" * 200 + "]" * 200, "nested more than 64 levels"),
    ("deeper.yaml", "[" * 5000 + "]" * 5000, "deeper.yaml"),  # libyaml's own flow-level limit
    ("deep.yaml", "a:\n" + "".join(" " * i + "- \n" for i in range(1, 200)), "nested more than"),
    ("deep.json", "[" * 5000 + "]" * 5000, "nested more than 64 levels"),
    ("deep2.json", "[" * 100 + "]" * 100, "nested more than 64 levels"),
    ("laughs.yaml", "l0: &l0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9)), "aliases are expanded"),
    ("loop.yaml", "a: &a [1, *a]\n", "recursive"),
    ("bin.yaml", b"name: m\n\0\x01\x02", "binary file"),
    ("latin1.yaml", "name: caf\xe9\n".encode("latin-1"), "not UTF-8"),
    ("digits.yaml", "layers: " + "9" * 5000 + "\n", "cannot parse"),
    ("digits.json", '{"layers": ' + "9" * 5000 + "}", "cannot parse"),
])
def test_parser_limits(tmp_path, name, content, fragment):
    path = _write(tmp_path, name, content)
    _fails_fast(["estimate", str(path)], str(path), fragment)


def test_directories_fifos_devices_and_huge_files(tmp_path):
    _fails_fast(["estimate", str(tmp_path)], "got a directory")
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    _fails_fast(["estimate", str(fifo)], "FIFO")
    _fails_fast(["estimate", "llama-tiny", "--cluster", "/dev/zero"], "/dev/zero", "device")
    _fails_fast(["estimate", "llama-tiny", "--profile", "/dev/urandom"], "device")
    big = tmp_path / "big.yaml"
    with big.open("wb") as handle:
        handle.truncate(MAX_DOCUMENT_BYTES + 1)
    _fails_fast(["estimate", str(big)], "larger than 2 MiB")


def test_aliases_within_the_limits_still_work(tmp_path):
    path = _write(tmp_path, "m.yaml", MODEL.replace("heads: 8, kv_heads: 4", "heads: &h 8, kv_heads: *h"))
    assert load_model(str(path)).arch.kv_heads == 8


def test_every_bound_has_a_reason_and_a_sane_range():
    for name, rng in BOUNDS.items():
        assert rng.why and 0 <= rng.minimum <= rng.maximum < 1e18, name
