"""Seeded fuzzing of every input kind through the CLI (bench/fuzz.py has the mutators): 1,000
mutated model.yaml, cluster.yaml, HF config.json, profile JSON and plan.yaml files must each end
in exit 0 (a domain result such as `fits: false`), 1, 2 or 3, with no traceback and no hang."""
from __future__ import annotations

from bench.fuzz import fuzz, table

COUNT = 1000


def test_fuzzed_inputs_never_crash_or_hang():
    tallies = fuzz(COUNT, seed=15, timeout_s=10.0)
    report = table(tallies)
    assert sum(t.tried for t in tallies.values()) == COUNT
    for name, tally in tallies.items():
        assert not tally.tracebacks, f"{name}:\n{tally.tracebacks[0]}\n{report}"
        assert not tally.hangs, f"{name}: {tally.hangs[0]}\n{report}"
    assert all(t.tried >= COUNT // 6 for n, t in tallies.items() if "solve" not in n), report
    rejected = sum(t.codes[1] for t in tallies.values())
    accepted = sum(t.codes[0] for t in tallies.values())
    assert rejected > COUNT // 2 and accepted > 0, report  # the mutations bite, and some pass
