"""The published serving measurements (bench/serve_runs/published.yaml, issue 14's dev set): every
row cites where it was read and carries at least one measured number with the settings that
re-predict it."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import yaml

RUNS = Path(__file__).resolve().parents[1] / "bench" / "serve_runs" / "published.yaml"
METRICS = ("output_tok_s", "total_tok_s", "req_s", "ttft_ms_mean", "ttft_ms_p50", "ttft_ms_p99",
           "tpot_ms_mean", "tpot_ms_p50", "tpot_ms_p99", "itl_ms_mean", "itl_ms_p50", "itl_ms_p99")
MOE = ("deepseek", "mixtral", "qwen3-235b", "maverick", "gpt-oss")


def rows() -> list[dict]:
    return yaml.load(RUNS.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))["runs"]


def test_every_row_is_cited_and_measured():
    runs = rows()
    assert len({r["id"] for r in runs}) == len(runs)
    for r in runs:
        assert r["source"] and len(r["source_quote"]) <= 300, r["id"]
        assert r["engine"] in ("vllm", "sglang", "tensorrt-llm"), r["id"]
        assert isinstance(r["gpus"], int) and r["gpus"] >= 1, r["id"]
        measured = [r[k] for k in METRICS if k in r]
        assert measured and all(isinstance(v, (int, float)) and v > 0 for v in measured), r["id"]
        assert r["mode"] in ("offline", "online"), r["id"]


def test_the_set_covers_what_the_serving_bench_needs():
    """>= 30 rows of vLLM and SGLang together, >= 3 models including an MoE, >= 2 GPU types."""
    runs = [r for r in rows() if r["engine"] in ("vllm", "sglang")]
    assert len(runs) >= 30
    models = Counter(r["model"] for r in runs)
    assert len(models) >= 3 and any(m in name.lower() for name in models for m in MOE)
    assert len({r["gpu"] for r in runs}) >= 2
