"""Fuzzing fmplan's inputs: mutated model.yaml, cluster.yaml, HF config.json, profile JSON and
plan.yaml files through the CLI, in-process; every run must end in an exit code (0 ok or a domain
result, 1 bad input, 2 usage, 3 infeasible) with no traceback and within a time limit.

Each input starts from a shipped file (or one written by `fmplan solve`) and gets 1-3 mutations,
seeded: structured ones on the parsed document (a value replaced by an absurd one: 2**64, 10**25,
NaN, -1, a string, a list, a 10,000-character string ...; a key deleted, renamed or added; a value
wrapped) and textual ones on the bytes (truncation, random bytes, invalid UTF-8, NUL, 5,000 levels
of brackets, a "billion laughs" alias bomb, a 5,000-digit integer). The command runs in this
process (no interpreter start-up per input) under a SIGALRM timer that counts a hang.

Run: `PYTHONPATH=. python bench/fuzz.py [--count 20000] [--seed 0] [--timeout 10]`; it prints a
summary table per input kind. tests/test_fuzz.py runs the same with --count 1000.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = "dgx-h100-1n"
HF_CONFIGS = {
    "llama": {"model_type": "llama", "num_hidden_layers": 4, "hidden_size": 256,
              "num_attention_heads": 8, "num_key_value_heads": 4, "intermediate_size": 688,
              "vocab_size": 1024, "max_position_embeddings": 512, "tie_word_embeddings": False},
    "deepseek_v3": {"model_type": "deepseek_v3", "num_hidden_layers": 4, "hidden_size": 256,
                    "num_attention_heads": 8, "intermediate_size": 688, "moe_intermediate_size": 64,
                    "n_routed_experts": 8, "num_experts_per_tok": 2, "n_shared_experts": 1,
                    "first_k_dense_replace": 1, "n_group": 2, "topk_group": 1,
                    "routed_scaling_factor": 2.5, "topk_method": "noaux_tc",
                    "kv_lora_rank": 64, "q_lora_rank": 96, "qk_nope_head_dim": 32,
                    "qk_rope_head_dim": 16, "v_head_dim": 32, "vocab_size": 1024,
                    "max_position_embeddings": 512},
}
EVIL: list[Any] = [0, -1, 1, 3, 2 ** 31, 2 ** 62, 2 ** 63, 2 ** 64, 2 ** 70, 10 ** 18, 10 ** 25,
                   10 ** 400, 1e308, -1e308, float("inf"), float("-inf"), float("nan"), 0.5, -0.0,
                   1e-300, "", "x", "1e25", "$(touch pwned)", True, False, None, [], {}, [1, 2],
                   {"a": 1}, "A" * 10_000, [[[[[]]]]]]
EVIL_TEXT = ["9" * 5000, "1e99999", ".nan", "-.inf", "0x10", "1_000", "!!binary AAAA",
             "!!python/object:os.system", "&a [*a]", "*undefined", "'", "\"", "{", "[", "- - -"]


@dataclass
class Kind:
    """One input kind: its seed documents and the command that reads a mutated copy."""

    name: str
    suffix: str
    seeds: list[Any]
    argv: Callable[[Path, Path], list[str]]
    """(input path, scratch dir) -> CLI arguments."""


@dataclass
class Tally:
    """Outcomes of one input kind."""

    tried: int = 0
    codes: Counter = field(default_factory=Counter)
    tracebacks: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    slowest_s: float = 0.0

    @property
    def clean(self) -> int:
        """Runs that ended in an allowed exit code with no traceback and no hang."""
        return self.tried - len(self.tracebacks) - len(self.hangs)


class _Hang(BaseException):
    """Raised by the timer when one run takes longer than the timeout."""


def _alarm(signum, frame):
    raise _Hang()


def run_cli(argv: list[str], timeout_s: float) -> tuple[str, int | None, str]:
    """Run `fmplan argv` in this process: ("exit", code, stderr), ("traceback", None, text) or
    ("hang", None, "")."""
    from cli.main import main
    out, err = io.StringIO(), io.StringIO()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main(argv)
        return "exit", 0, err.getvalue()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        return "exit", code, err.getvalue()
    except _Hang:
        return "hang", None, ""
    except BaseException:  # noqa: BLE001 -- counting every escape is the point
        return "traceback", None, traceback.format_exc()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def build_kinds(work: Path) -> list[Kind]:
    """The five input kinds with their seeds (a plan.yaml is solved for once here)."""
    models = [yaml.safe_load((ROOT / "configs/models" / f"{m}.yaml").read_text())
              for m in ("llama-tiny", "moe-tiny")]
    cluster = yaml.safe_load((ROOT / "configs/clusters/dgx-h100.yaml").read_text())
    profile = json.loads((ROOT / "configs/profiles/cpu-2core.json").read_text())
    plan_dir = work / "seed-plan"
    status, code, err = run_cli(["solve", "llama-tiny", "--cluster", CLUSTER, "--target",
                                 "megatron", "--out", str(plan_dir), "--time-limit", "20"], 60)
    if (status, code) != ("exit", 0):
        raise RuntimeError(f"cannot solve the seed plan: {status} {code} {err}")
    plan = yaml.safe_load((plan_dir / "plan.yaml").read_text())

    def estimate(*extra: str) -> Callable[[Path, Path], list[str]]:
        return lambda path, scratch: ["estimate", *[str(path) if a == "@" else a for a in extra],
                                      "--json"]

    return [
        Kind("model.yaml", ".yaml", models, estimate("@", "--cluster", CLUSTER)),
        Kind("cluster.yaml", ".yaml", [cluster], estimate("llama-tiny", "--cluster", "@")),
        Kind("config.json", ".json", list(HF_CONFIGS.values()), estimate("@", "--cluster", CLUSTER)),
        Kind("profile.json", ".json", [profile],
             estimate("llama-tiny", "--cluster", CLUSTER, "--profile", "@")),
        Kind("plan.yaml", ".yaml", [plan], lambda path, scratch: [
            "emit", str(path), "--target", "megatron", "--out", str(scratch / "launch")]),
    ]


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path in a parsed document (the root is ())."""
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _paths(value, prefix + (key,))
    elif isinstance(doc, list):
        for i, value in enumerate(doc[:20]):
            out += _paths(value, prefix + (i,))
    return out


def _set(doc: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = value
    return doc


def _get(doc: Any, path: tuple) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def mutate_structure(rng: random.Random, doc: Any) -> Any:
    """One structured mutation of a parsed document (a deep copy is changed)."""
    doc = json.loads(json.dumps(doc))
    paths = _paths(doc)
    numbers = [p for p in paths if isinstance(_get(doc, p), (int, float))
               and not isinstance(_get(doc, p), bool)]
    action = rng.random()
    if action < 0.35 and numbers:
        # A plausible-looking change: a number scaled or nudged (often still a valid input).
        path = rng.choice(numbers)
        value = _get(doc, path)
        changed = rng.choice([value * rng.choice([0, 2, 3, 8, 1000, 2 ** 20]), value + 1,
                              value - 1, -value, value // 3 if isinstance(value, int) else value / 3])
        return _set(doc, path, int(changed) if isinstance(value, int) and rng.random() < 0.8
                    else changed)
    path = rng.choice(paths)
    if action < 0.7:
        return _set(doc, path, rng.choice(EVIL))
    target = _get(doc, path[:-1]) if path else None
    if action < 0.75 and isinstance(target, dict):
        del target[path[-1]]
        return doc
    if action < 0.85 and isinstance(target, dict):
        target[str(path[-1]) + rng.choice(["_", "s", "x"])] = target.pop(path[-1])
        return doc
    if action < 0.93:
        return _set(doc, path, [_get(doc, path)] if rng.random() < 0.5 else {"v": _get(doc, path)})
    if isinstance(_get(doc, path), dict):
        _get(doc, path)["unknown_key"] = 1
    return doc


def mutate_text(rng: random.Random, text: str) -> bytes:
    """One textual mutation of a serialised document."""
    data = text.encode()
    at = rng.randrange(len(data) + 1)
    action = rng.randrange(9)
    if action == 0:
        return data[:at]
    if action == 1:
        return data[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))) + data[at:]
    if action == 2:
        return data[:at] + b"\xff\xfe\xc3" + data[at:]
    if action == 3:
        return data[:at] + b"\0" + data[at:]
    if action == 4:
        return data[:at] + (b"[" * 5000) + (b"]" * 5000 if rng.random() < 0.5 else b"") + data[at:]
    if action == 5:
        bomb = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9))
        return ("l0: &l0 [x, x, x, x, x, x, x, x, x]\n" + bomb).encode() + data
    if action == 6:
        digits = [i for i, c in enumerate(text) if c.isdigit()]
        if digits:
            i = rng.choice(digits)
            return (text[:i] + rng.choice(EVIL_TEXT) + text[i + 1:]).encode()
    if action == 7:
        return data[:at] + rng.choice(EVIL_TEXT).encode() + data[at:]
    return data[:at] + data[at:] * 2


def _dump(doc: Any, suffix: str) -> str:
    if suffix == ".json":
        return json.dumps(doc, indent=1)
    return yaml.safe_dump(doc, sort_keys=False, width=100)


def fuzz(count: int, seed: int = 0, timeout_s: float = 10.0, solve_every: int = 50,
         progress: bool = False) -> dict[str, Tally]:
    """Run `count` mutated inputs spread over the five kinds; every `solve_every`-th model
    mutation also runs `fmplan solve` (with a 2 s search budget). Returns the tallies by kind."""
    rng = random.Random(seed)
    tallies: dict[str, Tally] = {}
    with tempfile.TemporaryDirectory(prefix="fmplan-fuzz-") as tmp:
        work = Path(tmp)
        kinds = build_kinds(work)
        for i in range(count):
            kind = kinds[i % len(kinds)]
            doc = rng.choice(kind.seeds)
            for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
                doc = mutate_structure(rng, doc)
            text = _dump(doc, kind.suffix)
            data = mutate_text(rng, text) if rng.random() < 0.3 else text.encode()
            scratch = work / f"run{i}"
            scratch.mkdir()
            path = scratch / f"input{kind.suffix}"
            path.write_bytes(data)
            argv = kind.argv(path, scratch)
            name = kind.name
            if kind.name == "model.yaml" and i // len(kinds) % solve_every == 0:
                argv = ["solve", str(path), "--cluster", CLUSTER, "--time-limit", "2", "--json"]
                name = "model.yaml (solve)"
            tally = tallies.setdefault(name, Tally())
            start = time.perf_counter()
            status, code, err = run_cli(argv, timeout_s)
            tally.slowest_s = max(tally.slowest_s, time.perf_counter() - start)
            tally.tried += 1
            if status == "exit" and code in (0, 1, 2, 3) and "Traceback" not in err:
                tally.codes[code] += 1
            elif status == "hang":
                tally.hangs.append(f"{argv}")
            else:
                tally.tracebacks.append(f"{argv} -> {status} {code}\n{err}")
            if progress and (i + 1) % 1000 == 0:
                print(f"{i + 1} inputs", file=sys.stderr)
    return tallies


def table(tallies: dict[str, Tally]) -> str:
    """The summary as a markdown table."""
    rows = ["| input | tried | clean | exit 0 | exit 1 | exit 2 | exit 3 | tracebacks | hangs | "
            "slowest (s) |", "|---|---|---|---|---|---|---|---|---|---|"]
    total = Tally()
    for name, t in sorted(tallies.items()):
        rows.append(f"| {name} | {t.tried} | {t.clean} | {t.codes[0]} | {t.codes[1]} | "
                    f"{t.codes[2]} | {t.codes[3]} | {len(t.tracebacks)} | {len(t.hangs)} | "
                    f"{t.slowest_s:.2f} |")
        total.tried += t.tried
        total.codes.update(t.codes)
        total.tracebacks += t.tracebacks
        total.hangs += t.hangs
        total.slowest_s = max(total.slowest_s, t.slowest_s)
    rows.append(f"| **all** | {total.tried} | {total.clean} | {total.codes[0]} | "
                f"{total.codes[1]} | {total.codes[2]} | {total.codes[3]} | "
                f"{len(total.tracebacks)} | {len(total.hangs)} | {total.slowest_s:.2f} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per input")
    args = parser.parse_args()
    start = time.perf_counter()
    tallies = fuzz(args.count, args.seed, args.timeout, progress=True)
    print(table(tallies))
    print(f"\n{args.count} inputs, seed {args.seed}, {time.perf_counter() - start:.0f} s")
    for t in tallies.values():
        for report in (t.tracebacks + t.hangs)[:5]:
            print("\n" + report)


if __name__ == "__main__":
    main()
