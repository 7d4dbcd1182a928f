"""KV-cache capacity of one serving GPU, in vLLM's paged blocks.

vLLM (v1, vllm/v1/worker/gpu_worker.py, Worker.determine_available_memory) sizes the cache as
    available_bytes = total_gpu_bytes * gpu_memory_utilization - non_kv_cache_bytes
where non_kv_cache_bytes = model weights + the activation peak of one profile_run at
max_num_batched_tokens + non-torch (NCCL/CUDA-graph) memory; the cache is then cut into blocks of
`block_size` tokens (default 16, vllm/config CacheConfig), one page per layer holding K and V:
    page_bytes = 2 * block_size * kv_heads_per_gpu * head_dim * kv_dtype_bytes
    num_blocks = available_bytes // (page_bytes * layers_per_gpu)
NOTE: written from the vLLM source as summarised above; not re-read against a pinned commit here.
"""
from __future__ import annotations

from dataclasses import dataclass

from planner.errors import InfeasibleError, InputError

KV_DTYPE_BYTES = {"bf16": 2, "fp8": 1}
DEFAULT_BLOCK_TOKENS = 16


@dataclass(frozen=True)
class KvCapacity:
    """What one GPU's cache holds."""

    available_bytes: int
    page_bytes: int
    num_blocks: int
    block_tokens: int

    @property
    def tokens(self) -> int:
        """Tokens the cache holds (num_blocks * block_size)."""
        return self.num_blocks * self.block_tokens


def kv_capacity(*, total_gpu_bytes: int, gpu_memory_utilization: float, weight_bytes: int,
                activation_peak_bytes: int, non_torch_bytes: int, layers_per_gpu: int,
                kv_heads_per_gpu: int, head_dim: int, kv_dtype: str,
                block_tokens: int = DEFAULT_BLOCK_TOKENS) -> KvCapacity:
    """Paged KV-cache capacity after weights, activation workspace and the utilisation cap."""
    if not 0.0 < gpu_memory_utilization <= 1.0:
        raise InputError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}",
                         key_path="gpu_memory_utilization", hint="vLLM's default is 0.9")
    if kv_dtype not in KV_DTYPE_BYTES:
        raise InputError(f"unknown KV dtype {kv_dtype!r}", key_path="kv_dtype",
                         hint="one of " + ", ".join(KV_DTYPE_BYTES))
    for name, value in (("layers_per_gpu", layers_per_gpu), ("kv_heads_per_gpu", kv_heads_per_gpu),
                        ("head_dim", head_dim), ("block_tokens", block_tokens)):
        if value <= 0:
            raise InputError(f"{name} must be positive, got {value}", key_path=name)
    non_kv_bytes = weight_bytes + activation_peak_bytes + non_torch_bytes
    available_bytes = int(total_gpu_bytes * gpu_memory_utilization) - non_kv_bytes
    page_bytes = 2 * block_tokens * kv_heads_per_gpu * head_dim * KV_DTYPE_BYTES[kv_dtype]
    if available_bytes < page_bytes * layers_per_gpu:
        raise InfeasibleError(
            f"memory: weights + workspace ({non_kv_bytes / 2**30:.1f} GiB) leave no room for one KV "
            f"block within {gpu_memory_utilization:.2f} x {total_gpu_bytes / 2**30:.1f} GiB")
    num_blocks = available_bytes // (page_bytes * layers_per_gpu)
    return KvCapacity(available_bytes, page_bytes, num_blocks, block_tokens)
