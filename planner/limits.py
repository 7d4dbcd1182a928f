"""Bounds on every number a user file can hold, and on the documents themselves, with the reason.

One table for every input (model.yaml, HF config.json, cluster.yaml, device presets, profile JSON,
plan.yaml): `Fields.int` / `Fields.number` (planner/schema.py) look the bound up by key name, so a
value like `layers: 18446744073709551616` fails in microseconds with its key path and the reason,
instead of overflowing a C integer or enumerating 10**18 micro-batch sizes later.

Each maximum is the largest real model or cluster we know of times generous headroom (10x-100x):
enough for anything that could be trained in the next years, small enough that the search space
(divisors, stage splits, micro-batch counts) stays enumerable and every float product stays finite.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Bound:
    """The allowed range of one quantity and why."""

    minimum: float
    maximum: float
    why: str
    """Shown when the value is out of range, e.g. 'Llama 3 405B has 126 blocks; ...'."""

    def describe(self) -> str:
        """`between 1 and 4096 (why)`."""
        return f"between {_fmt(self.minimum)} and {_fmt(self.maximum)} ({self.why})"


MAX_GPUS = 2 ** 20
"""1,048,576 GPUs: ~10x the largest clusters announced (100k-200k GPUs, 2024-2025)."""
GPUS_WHY = "at most 2^20 GPUs in all: ~10x the largest clusters built (100k-200k GPUs)"
_WIDTH_WHY = "the widest released models have hidden 16384-25600 (Llama 3 405B, Megatron 1T); 8x headroom"
_FFN_WHY = "the widest FFNs released are 53248-73728 (Llama 3 405B, PaLM); ~14x headroom"
_HEAD_DIM_WHY = "head and latent sizes are 64-1536 in released models; 40x headroom"
_FRACTION_WHY = "a fraction of the datasheet peak"
_BW_WHY = "1 PB/s: >100x the fastest HBM or NVLink (B200: 8 TB/s HBM, 1.8 TB/s NVLink 5)"
_LATENCY_WHY = "latencies are microseconds; 1 s is already a broken link"
_TIME_WHY = "one measured kernel or collective takes far less than a day"
_BYTES_WHY = "1 PiB: >1000x any device memory or message"

BOUNDS: dict[str, Bound] = {
    # model.yaml architecture (and the same quantities read from an HF config.json)
    "layers": Bound(1, 4096, "the deepest released LLMs have 126-160 blocks (Llama 3 405B: 126); "
                             "25x headroom"),
    "hidden": Bound(1, 2 ** 17, _WIDTH_WHY),
    "heads": Bound(1, 4096, "released models have 8-128 attention heads; 32x headroom"),
    "kv_heads": Bound(1, 4096, "at most heads (released: 1-128)"),
    "ffn_hidden": Bound(1, 2 ** 20, _FFN_WHY),
    "vocab": Bound(1, 2 ** 24, "the largest vocabularies are ~256k tokens (Gemma); 64x headroom"),
    "routed_experts": Bound(1, 2 ** 14, "released MoEs have 8-384 routed experts (Kimi K2: 384); "
                                        "40x headroom"),
    "top_k": Bound(1, 2 ** 14, "at most routed_experts (released: 1-8)"),
    "expert_ffn_hidden": Bound(1, 2 ** 20, _FFN_WHY),
    "shared_ffn_hidden": Bound(0, 2 ** 20, _FFN_WHY),
    "first_dense_layers": Bound(0, 4096, "at most layers"),
    "layer_interval": Bound(1, 4096, "at most layers"),
    "router_groups": Bound(1, 2 ** 14, "at most routed_experts (DeepSeek-V3: 8)"),
    "router_group_top_k": Bound(1, 2 ** 14, "at most router_groups (DeepSeek-V3: 4)"),
    "capacity_factor": Bound(0, 1024, "tokens per expert slot over the even share (used: 1-2)"),
    "routed_scaling_factor": Bound(0, 1e4, "a router output scale (DeepSeek-V3: 2.5)"),
    "q_lora_rank": Bound(0, 2 ** 16, _HEAD_DIM_WHY),
    "kv_lora_rank": Bound(1, 2 ** 16, _HEAD_DIM_WHY),
    "qk_nope_head_dim": Bound(1, 2 ** 16, _HEAD_DIM_WHY),
    "qk_rope_head_dim": Bound(1, 2 ** 16, _HEAD_DIM_WHY),
    "v_head_dim": Bound(1, 2 ** 16, _HEAD_DIM_WHY),
    # model.yaml training
    "seq_len": Bound(1, 2 ** 24, "16M tokens: 16x the longest training contexts (1M-10M)"),
    "global_batch": Bound(1, 2 ** 24, "16M sequences per step: >1000x the largest published "
                                      "batches (~16k sequences)"),
    # cluster.yaml
    "nodes": Bound(1, 2 ** 17, GPUS_WHY),
    "gpus_per_node": Bound(1, 1024, "a node is at most one NVLink domain (NVL72/NVL576); 2x headroom"),
    "intra_node_bw_GBps": Bound(1e-3, 1e6, _BW_WHY),
    "inter_node_bw_GBps": Bound(1e-3, 1e6, _BW_WHY),
    "host_device_bw_GBps": Bound(1e-3, 1e6, _BW_WHY),
    "intra_node_latency_us": Bound(0, 1e6, _LATENCY_WHY),
    "inter_node_latency_us": Bound(0, 1e6, _LATENCY_WHY),
    "collective_efficiency": Bound(0, 1, _FRACTION_WHY),
    "host_mem_gib": Bound(1e-3, 1e6, "1 PiB of host memory per node: >100x the largest servers"),
    "host_adam_params_per_s": Bound(1, 1e14, "CPU Adam runs ~1e9-1e10 parameters/s; 1e4x headroom"),
    # device (preset or inline gpu mapping)
    "peak_tflops": Bound(1e-6, 1e7, "10 EFLOP/s per device: >100x a B200's sparse FP4 peak"),
    "hbm_gib": Bound(1e-3, 1e5, "100 TiB per device: >300x the largest HBM stacks (288 GB)"),
    "hbm_bw_GBps": Bound(1e-3, 1e6, _BW_WHY),
    "hbm_efficiency": Bound(0, 1, _FRACTION_WHY),
    "gemm_gflop": Bound(0, 1e12, "GEMM sizes of the efficiency curve, in GFLOP"),
    "efficiency": Bound(0, 1, _FRACTION_WHY),
    "kernel_overhead_us": Bound(0, 1e6, _LATENCY_WHY),
    "reserved_gib": Bound(0, 1e5, "at most the device memory"),
    # plan.yaml strategy
    "schema_version": Bound(1, 1000, "file format versions are small integers"),
    "dp": Bound(1, MAX_GPUS, GPUS_WHY),
    "tp": Bound(1, MAX_GPUS, GPUS_WHY),
    "pp": Bound(1, MAX_GPUS, GPUS_WHY),
    "cp": Bound(1, MAX_GPUS, GPUS_WHY),
    "vpp": Bound(1, 4096, "at most one chunk per block"),
    "ep": Bound(1, MAX_GPUS, GPUS_WHY),
    "etp": Bound(1, MAX_GPUS, GPUS_WHY),
    "mbs": Bound(1, 2 ** 24, "at most global_batch"),
    "zero": Bound(0, 3, "ZeRO stages are 0, 1, 2 and 3"),
    "recompute_layers": Bound(0, 4096, "at most layers"),
    "stage_layers": Bound(0, 4096, "at most layers"),
    "stage_recompute": Bound(0, 4096, "at most layers"),
    # command-line options
    "tokens": Bound(0, 1e17, "1e17 training tokens: ~3000x the largest runs (~36T tokens)"),
    "deadline_h": Bound(0, 1e6, "a deadline of ~100 years"),
    "time_limit_s": Bound(0.1, 1e6, "a search budget of ~11 days"),
    "top": Bound(0, 1000, "runners-up shown"),
    # profile JSON samples
    "memory_bytes": Bound(1, 2 ** 50, _BYTES_WHY),
    "count": Bound(1, MAX_GPUS, GPUS_WHY),
    "threads": Bound(1, 2 ** 16, "CPU threads of one host (the largest have ~1k)"),
    "m": Bound(1, 2 ** 30, "a GEMM dimension (tokens x micro-batch at most ~2^28)"),
    "k": Bound(1, 2 ** 30, "a GEMM dimension"),
    "n": Bound(1, 2 ** 30, "a GEMM dimension"),
    "batch": Bound(1, 2 ** 24, "at most global_batch"),
    "head_dim": Bound(1, 2 ** 16, _HEAD_DIM_WHY),
    "bytes": Bound(0, 2 ** 50, _BYTES_WHY),
    "params": Bound(1, 2 ** 50, "parameters in one optimizer sample"),
    "group_size": Bound(2, MAX_GPUS, "a collective needs 2 ranks or more; " + GPUS_WHY),
    "time_s": Bound(0, 86400, _TIME_WHY),
    "fwd_time_s": Bound(0, 86400, _TIME_WHY),
    "bwd_time_s": Bound(0, 86400, _TIME_WHY),
    "kernel_overhead_time_s": Bound(0, 86400, _TIME_WHY),
}
"""Quantity (the key name where it is written) -> its allowed range and the reason."""

MAX_DOCUMENT_BYTES = 2 * 2 ** 20
"""2 MiB per input file: the largest real inputs are profiles (the shipped one: 27 KB; a GPU
profile with model shapes ~10x that) and HF configs (< 100 KB); plan.yaml is ~10 KB."""
MAX_DEPTH = 64
"""Nesting levels of one document: fmplan's own files nest at most 5 deep."""
MAX_NODES = 100_000
"""Values in a document after expanding YAML aliases (stops "billion laughs" documents): the
shipped profile holds 1,169, plan.yaml ~250. Reached in ~2 s of YAML composing at worst."""
MAX_STRING_CHARS = 4096
"""Characters in one string value (names, paths, source citations)."""
MAX_ITEMS = 100_000
"""Items in one list (efficiency-curve points, profile samples)."""


def bound(quantity: str) -> Bound:
    """The bound of `quantity`; a key without one is a programming error, caught by the tests."""
    try:
        return BOUNDS[quantity]
    except KeyError:
        raise KeyError(f"no bound for {quantity!r}: add it, with its reason, to "
                       "planner.limits.BOUNDS") from None


def out_of_bounds(quantity: str, value: float) -> str | None:
    """Why `value` is not allowed for `quantity` (non-finite or outside the bound), or None."""
    rng = bound(quantity)
    if isinstance(value, float) and not math.isfinite(value):
        return f"expected a finite number {rng.describe()}, got {value}"
    if not rng.minimum <= value <= rng.maximum:
        shown = f"{value:.6g}" if isinstance(value, float) else value if abs(value) < 10 ** 24 \
            else f"about 2^{abs(value).bit_length() - 1}"
        return f"expected a value {rng.describe()}, got {shown}"
    return None


def _fmt(value: float) -> str:
    if float(value).is_integer() and abs(value) >= 2 ** 10 and (int(value) & (int(value) - 1)) == 0:
        return f"2^{int(value).bit_length() - 1}"
    return f"{value:g}"
