"""Typed records of a profile file: who measured, with what, and one dataclass per kind of raw
sample. Every key carries its unit (`time_s`, `bytes`, ...); `key()` identifies what a sample
measured, so a re-run can skip it (`cost_models.profile_format.merge`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, kw_only=True)
class DeviceIdentity:
    """What was measured: one process's device and how many the run used."""

    name: str
    """torch's device name (`torch.cuda.get_device_name`, or the CPU model)."""
    kind: Literal["cuda", "cpu"]
    """Accelerator kind."""
    memory_bytes: int
    """Device memory (HBM; host RAM for a CPU device)."""
    count: int
    """Processes (devices) that took part in the communication measurements."""
    threads: int
    """Intra-op threads of a measuring process (torch.get_num_threads())."""


@dataclass(frozen=True, kw_only=True)
class Software:
    """Versions the numbers were measured with (null where not applicable)."""

    torch: str
    python: str
    cuda: str | None = None
    driver: str | None = None
    comm_backend: str | None = None


@dataclass(frozen=True, kw_only=True)
class GemmSample:
    """Median time of (M x K) @ (K x N) in one dtype."""

    dtype: str
    m: int
    k: int
    n: int
    time_s: float
    source: str
    """`sweep`, or the model op it stands for (e.g. `llama3-8b qkv tp=2 mbs=1 cp=1`)."""

    def key(self) -> tuple:
        return (self.dtype, self.m, self.k, self.n)


@dataclass(frozen=True, kw_only=True)
class AttentionSample:
    """Median forward and forward+backward-only time of one causal SDPA call."""

    dtype: str
    batch: int
    heads: int
    kv_heads: int
    seq_len: int
    head_dim: int
    fwd_time_s: float
    bwd_time_s: float
    source: str

    def key(self) -> tuple:
        return (self.dtype, self.batch, self.heads, self.kv_heads, self.seq_len, self.head_dim)


@dataclass(frozen=True, kw_only=True)
class StreamSample:
    """A memory-bound kernel (`copy`: read + write) moving `bytes` in total."""

    op: str
    bytes: int
    time_s: float

    def key(self) -> tuple:
        return (self.op, self.bytes)


@dataclass(frozen=True, kw_only=True)
class CopySample:
    """A host<->device copy of `bytes`."""

    direction: Literal["h2d", "d2h"]
    pinned: bool
    bytes: int
    time_s: float

    def key(self) -> tuple:
        return (self.direction, self.pinned, self.bytes)


@dataclass(frozen=True, kw_only=True)
class OptimizerSample:
    """One CPU optimizer step over `params` fp32 parameters (offload's host side)."""

    optimizer: str
    params: int
    threads: int
    time_s: float

    def key(self) -> tuple:
        return (self.optimizer, self.params, self.threads)


@dataclass(frozen=True, kw_only=True)
class CommSample:
    """Median time of one collective; `bytes` is the full (unsharded) buffer, as in
    `cost_models.comm.collective_time_s`."""

    collective: Literal["all_reduce", "all_gather", "reduce_scatter", "all_to_all", "p2p"]
    group_size: int
    tier: Literal["intra", "inter"]
    """`intra` when every rank of the group is on one node."""
    bytes: int
    time_s: float

    def key(self) -> tuple:
        return (self.collective, self.group_size, self.tier, self.bytes)


SECTIONS: dict[str, type] = {
    "gemm": GemmSample, "attention": AttentionSample, "stream": StreamSample,
    "host_copy": CopySample, "host_optimizer": OptimizerSample, "comm": CommSample,
}
"""Sample lists of a profile, by JSON key."""
