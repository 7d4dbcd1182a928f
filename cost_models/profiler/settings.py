"""How much to measure: sizes, repeats and per-call time limits for `--quick` and full runs.

A profile on a CPU stays small (2-core CI machines: `--quick` must finish within a minute); on a
GPU the sizes reach those of real training (GEMMs of 10-1000 GFLOP, messages up to 256 MiB).
"""
from __future__ import annotations

from dataclasses import dataclass

MIB = 1 << 20


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Measurement sizes and discipline of one run."""

    warmup: int
    """Untimed calls per case before timing."""
    repeats: int
    """Timed calls per case (the median is kept)."""
    max_call_s: float
    """Skip a shape whose predicted single-call time exceeds this (slow dtypes on CPU)."""
    gemm_sizes: tuple[int, ...]
    """Square-ish sweep: M, K, N drawn from these (plus skinny shapes)."""
    attention_seq_lens: tuple[int, ...]
    attention_heads: int
    attention_head_dim: int
    stream_bytes: tuple[int, ...]
    """Buffer sizes of the streaming copy (bytes moved = 2x)."""
    copy_bytes: tuple[int, ...]
    """Host<->device copy sizes."""
    adam_params: tuple[int, ...]
    """Parameter counts of the CPU optimizer step."""
    comm_bytes: tuple[int, ...]
    """Message sizes of the collectives (full buffer)."""
    model_mbs: tuple[int, ...]
    """Micro-batch sizes of the model's own GEMM shapes (`--model`)."""
    model_tp: tuple[int, ...]
    model_cp: tuple[int, ...]


def settings_for(device_kind: str, quick: bool) -> Settings:
    """The measurement plan for a device kind and mode."""
    if device_kind == "cuda":
        return Settings(
            warmup=3 if quick else 5, repeats=5 if quick else 20, max_call_s=1.0,
            gemm_sizes=(512, 1024, 2048, 4096, 8192) if quick else (256, 512, 1024, 2048, 4096, 8192, 16384),
            attention_seq_lens=(1024, 4096) if quick else (512, 1024, 2048, 4096, 8192),
            attention_heads=32, attention_head_dim=128,
            stream_bytes=(16 * MIB, 256 * MIB) if quick else (MIB, 16 * MIB, 256 * MIB, 1024 * MIB),
            copy_bytes=(16 * MIB, 256 * MIB) if quick else (MIB, 16 * MIB, 256 * MIB),
            adam_params=(4 * MIB,) if quick else (4 * MIB, 32 * MIB),
            comm_bytes=(64 * 1024, 4 * MIB, 64 * MIB) if quick else tuple(1 << p for p in range(10, 29, 2)),
            model_mbs=(1,) if quick else (1, 2, 4), model_tp=(1, 2, 4, 8), model_cp=(1, 2))
    return Settings(
        warmup=1, repeats=3 if quick else 7, max_call_s=0.03 if quick else 0.3,
        gemm_sizes=(64, 256, 1024) if quick else (64, 128, 256, 512, 1024, 2048),
        attention_seq_lens=(128, 256) if quick else (128, 256, 512, 1024),
        attention_heads=4, attention_head_dim=64,
        stream_bytes=(MIB, 16 * MIB) if quick else (MIB, 4 * MIB, 16 * MIB, 64 * MIB),
        copy_bytes=(),
        adam_params=(MIB,) if quick else (MIB, 4 * MIB),
        comm_bytes=(4 * 1024, 64 * 1024, MIB) if quick else tuple(1 << p for p in range(10, 25, 2)),
        model_mbs=(1,) if quick else (1, 2), model_tp=(1, 2) if quick else (1, 2, 4), model_cp=(1,))
