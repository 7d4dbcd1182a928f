"""Inputs split in three (as in Calculon): the model (application), the cluster (system) and,
in `planner.strategy`, the execution strategy. All are frozen, keyword-only dataclasses.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Precision = Literal["bf16", "fp16", "fp8", "fp32"]
Mlp = Literal["gelu", "swiglu"]


@dataclass(frozen=True, kw_only=True)
class MoESpec:
    """Mixture-of-experts MLP: routed experts (top-k per token) plus optional shared experts."""

    routed_experts: int
    """Routed experts per MoE layer (E)."""
    top_k: int
    """Experts each token is routed to (k)."""
    expert_ffn_hidden: int
    """FFN width of one routed expert (f_e); experts use the model's `mlp` kind."""
    shared_ffn_hidden: int = 0
    """Total FFN width of the shared experts every token passes through (0: none)."""
    first_dense_layers: int = 0
    """The first blocks keep a dense MLP of width `ffn_hidden` (DeepSeek: 3)."""
    layer_interval: int = 1
    """After the leading dense blocks, one block in every `layer_interval` is MoE: the last of
    each group (Llama 4's `interleave_moe_layer_step`, Qwen2-MoE's `decoder_sparse_step`); the
    others keep the dense MLP. 1: every block after the leading dense ones is MoE."""
    capacity_factor: float | None = None
    """Tokens an expert accepts, relative to a perfectly even share (padding and dropping);
    None is dropless routing."""
    router_dtype: Literal["fp32", "bf16"] = "fp32"
    """Precision of the router GEMM and its probabilities (fp32 is Megatron's advice for
    stable routing; DeepSeek-V3 §3.3.1 keeps the gating in higher precision)."""
    score_function: Literal["softmax", "sigmoid"] = "softmax"
    """Router scores: softmax over experts (GShard, Mixtral) or per-expert sigmoid normalised
    over the chosen k (DeepSeek-V3 §2.1.2)."""
    expert_bias: bool = False
    """Auxiliary-loss-free load balancing: a per-expert bias added to the scores for top-k
    selection only, updated from the observed load (DeepSeek-V3 §2.1.2; Wang et al. 2024)."""
    router_groups: int = 1
    """Group-limited routing: experts form this many groups (DeepSeek-V3: 8, one per node)..."""
    router_group_top_k: int = 1
    """... and each token picks its k experts among its best `router_group_top_k` groups
    (DeepSeek-V3: 4), which bounds the nodes a token is sent to. Unused when router_groups = 1."""
    routed_scaling_factor: float = 1.0
    """Multiplier of the routed experts' combined output (DeepSeek-V3: 2.5; HF
    `routed_scaling_factor`); a recipe setting the emitters pass on, free in the cost model."""

    def is_moe_layer(self, index: int) -> bool:
        """Whether block `index` (0-based) has an MoE MLP."""
        after = index - self.first_dense_layers
        return after >= 0 and (after + 1) % self.layer_interval == 0

    @property
    def has_dense_blocks(self) -> bool:
        """Whether some blocks keep a dense MLP (leading ones, or between MoE blocks)."""
        return self.first_dense_layers > 0 or self.layer_interval > 1

    def moe_layers_before(self, index: int) -> int:
        """MoE blocks among blocks 0 .. index-1."""
        return moe_blocks_before(index, self.first_dense_layers, self.layer_interval)


def moe_blocks_before(index: int, first_dense: int, interval: int) -> int:
    """MoE blocks among blocks 0 .. index-1 when the `first_dense` leading blocks are dense and
    then the last of every `interval` blocks is MoE (`MoESpec.layer_interval`)."""
    return max(0, index - first_dense) // interval


@dataclass(frozen=True, kw_only=True)
class MLASpec:
    """Multi-head latent attention (DeepSeek-V2/V3): low-rank Q and compressed joint KV."""

    q_lora_rank: int
    """Rank of the query down-projection (0: full-rank query projection)."""
    kv_lora_rank: int
    """Rank of the compressed KV latent."""
    qk_nope_head_dim: int
    """Per-head query/key channels without rotary embedding."""
    qk_rope_head_dim: int
    """Per-head (shared-key) rotary channels."""
    v_head_dim: int
    """Per-head value channels."""


@dataclass(frozen=True, kw_only=True)
class Architecture:
    """A decoder-only transformer's shape."""

    layers: int
    """Transformer blocks (L)."""
    hidden: int
    """Model width (h)."""
    heads: int
    """Attention (query) heads (a)."""
    kv_heads: int
    """Key/value heads (g): = heads for MHA, 1 for MQA, in between for GQA."""
    ffn_hidden: int
    """MLP inner width (f)."""
    vocab: int
    """Vocabulary size (V)."""
    mlp: Mlp = "gelu"
    """gelu: h->f->h with two matrices; swiglu: gate and up (h->2f) then down (f->h)."""
    tied_embeddings: bool = False
    """Output layer shares the input embedding matrix."""
    learned_positions: bool = False
    """GPT-style learned position embeddings (s x h parameters) instead of RoPE."""
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    """Normalisation kind (layernorm has a bias vector)."""
    linear_bias: bool = False
    """Linear layers carry biases (GPT-2/3 style)."""
    dropout: bool = False
    """Dropout after attention/MLP (stores 1-byte masks; Llama-style models use none)."""
    moe: MoESpec | None = None
    """Mixture-of-experts block, or None for a dense model."""
    mla: MLASpec | None = None
    """Multi-head latent attention dimensions, or None for (GQA) multi-head attention."""

    @property
    def head_dim(self) -> int:
        """Per-head channels d = h / a."""
        return self.hidden // self.heads

    @property
    def kv_dim(self) -> int:
        """Width of K (and of V): g * d."""
        return self.kv_heads * self.head_dim


@dataclass(frozen=True, kw_only=True)
class Training:
    """The training recipe."""

    seq_len: int
    """Tokens per sequence (s)."""
    global_batch: int
    """Sequences per optimizer step (B)."""
    precision: Precision = "bf16"
    """Compute precision of GEMMs and stored activations (fp8 GEMMs keep 16-bit activations;
    fp32 is pure single precision: 4-byte weights and activations, no separate master copy)."""
    optimizer: Literal["adam", "sgd"] = "adam"
    """Optimizer: adam keeps two fp32 moments, sgd (with momentum) one."""
    master_weights_fp32: bool = True
    """Keep an fp32 master copy of the weights (mixed precision)."""
    grads_fp32: bool = True
    """Accumulate and reduce gradients in fp32 (Megatron's main_grad)."""
    flash_attention: bool = True
    """Fused (flash) attention: no s^2 tensors stored; causal blocks skipped."""

    @property
    def tokens_per_step(self) -> int:
        """B * s."""
        return self.global_batch * self.seq_len


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A model to train: its name, architecture and training recipe."""

    name: str
    """Display name."""
    arch: Architecture
    """The network's shape."""
    training: Training
    """Sequence length, batch and precision."""
    source: str = field(default="", compare=False)
    """Where it was loaded from (file or preset name); not part of equality."""


@dataclass(frozen=True, kw_only=True)
class DeviceSpec:
    """One accelerator's datasheet numbers and default efficiencies (each cited in its YAML)."""

    name: str
    """Preset name, e.g. H100-SXM-80GB."""
    peak_tflops: dict[str, float]
    """Dense peak TFLOP/s per dtype (bf16, fp16, fp8, tf32, fp32); no sparsity."""
    hbm_gib: float
    """HBM capacity in GiB."""
    hbm_bw_GBps: float
    """HBM bandwidth in GB/s (datasheet)."""
    gemm_efficiency: tuple[tuple[float, float], ...]
    """(GEMM GFLOP, achievable fraction of peak) points; log-interpolated, clamped at the ends."""
    attention_efficiency: tuple[float, float] = (0.55, 0.45)
    """Achievable fraction of peak for the default fused attention kernel at long sequences
    (forward, backward)."""
    attention_kernels: dict[str, tuple[float, float]] = field(default_factory=dict)
    """The same per named kernel (flash2, flash3, cudnn); a stack's kernel missing here uses
    `attention_efficiency`."""
    hbm_efficiency: float = 0.8
    """Achievable fraction of HBM bandwidth for streaming elementwise kernels."""
    kernel_overhead_us: float = 4.0
    """Fixed cost per kernel launch (host overhead, tail), in microseconds."""
    reserved_gib: float = 1.0
    """Memory the framework cannot use: CUDA context, NCCL and cuBLAS workspaces, in GiB."""
    sources: tuple[str, ...] = ()
    """Citations for the numbers above."""

    def peak_flops(self, precision: str) -> float:
        """Dense peak FLOP/s for `precision` (fp8 falls back to bf16 where the device lacks it)."""
        tflops = self.peak_tflops.get(precision) or self.peak_tflops.get("bf16")
        return tflops * 1e12


@dataclass(frozen=True, kw_only=True)
class ClusterSpec:
    """N nodes of G identical GPUs, with the links between them."""

    name: str
    """Preset or file name."""
    nodes: int
    """Number of nodes."""
    gpus_per_node: int
    """GPUs in one node."""
    device: DeviceSpec
    """The GPU."""
    intra_node_bw_GBps: float
    """Per-GPU unidirectional bandwidth inside a node (NVLink), GB/s."""
    intra_node_latency_us: float = 3.0
    """Per-hop latency inside a node, microseconds."""
    inter_node_bw_GBps: float
    """Per-GPU unidirectional bandwidth between nodes (its share of the NICs), GB/s."""
    inter_node_latency_us: float = 8.0
    """Per-hop latency between nodes, microseconds."""
    collective_efficiency: float = 0.8
    """Achievable fraction of link bandwidth for large NCCL collectives (bus bandwidth / link)."""
    host_mem_gib: float = 1024.0
    """Host (CPU) memory per node, GiB."""
    host_device_bw_GBps: float = 25.0
    """Host<->device copy bandwidth per GPU (PCIe, pinned), GB/s."""
    host_adam_params_per_s: float = 2.0e9
    """CPU Adam throughput per node (parameters updated per second)."""
    sources: tuple[str, ...] = field(default=())
    """Citations for the link numbers."""

    @property
    def gpus(self) -> int:
        """Total GPUs N * G."""
        return self.nodes * self.gpus_per_node
