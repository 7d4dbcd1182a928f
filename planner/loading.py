"""Loading model.yaml, Hugging Face config.json and cluster.yaml into specs, with validation.

Every problem becomes an InputError naming the file, the key path, what was expected and a hint.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from planner import presets
from planner.documents import read_mapping
from planner.errors import InputError
from planner.hf_config import architecture_from_hf, check_moe, model_from_hf
from planner.limits import GPUS_WHY, MAX_GPUS, out_of_bounds
from planner.schema import Fields
from planner.specs import (Architecture, ClusterSpec, DeviceSpec, MLASpec, ModelSpec, MoESpec,
                           Training)

ARCH_KEYS = ["layers", "hidden", "heads", "kv_heads", "ffn_hidden", "vocab", "mlp",
             "tied_embeddings", "learned_positions", "norm", "linear_bias", "dropout", "moe",
             "mla", "hf_config"]
MOE_KEYS = ["routed_experts", "top_k", "expert_ffn_hidden", "shared_ffn_hidden",
            "first_dense_layers", "layer_interval", "capacity_factor", "router_dtype",
            "score_function", "expert_bias", "router_groups", "router_group_top_k",
            "routed_scaling_factor"]
MLA_KEYS = ["q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"]
TRAINING_KEYS = ["seq_len", "global_batch", "precision", "optimizer", "master_weights_fp32",
                 "grads_fp32", "flash_attention"]
CLUSTER_KEYS = ["name", "nodes", "gpus_per_node", "gpu", "intra_node_bw_GBps",
                "intra_node_latency_us", "inter_node_bw_GBps", "inter_node_latency_us",
                "collective_efficiency", "host_mem_gib", "host_device_bw_GBps",
                "host_adam_params_per_s", "sources"]
DEVICE_KEYS = ["name", "peak_tflops", "hbm_gib", "hbm_bw_GBps", "gemm_efficiency",
               "attention_efficiency", "attention_kernels", "hbm_efficiency", "kernel_overhead_us", "reserved_gib",
               "sources", "links"]


def load_model(ref: str | Path) -> ModelSpec:
    """A model from a YAML path, a preset name, or a Hugging Face config.json path."""
    path = Path(ref)
    if not path.exists() and presets.has("models", str(ref)):
        path = presets.path("models", str(ref))
    data = read_mapping(path)
    if path.suffix == ".json":
        return model_from_hf(data, source=str(path))
    return model_from_mapping(data, source=str(path), base_dir=path.parent)


def model_from_mapping(data: Any, *, source: str, base_dir: Path | None = None) -> ModelSpec:
    """Build a ModelSpec from an already-parsed model.yaml mapping."""
    top = Fields(data, source=source, path="", allowed=["name", "architecture", "training"])
    arch_fields = top.sub("architecture", ARCH_KEYS)
    if "hf_config" in arch_fields.data:
        hf_path = Path(arch_fields.str("hf_config"))
        if not hf_path.is_absolute() and base_dir is not None:
            hf_path = base_dir / hf_path
        arch = architecture_from_hf(read_mapping(hf_path), source=str(hf_path))
    else:
        arch = _architecture(arch_fields)
    training = _training(top.sub("training", TRAINING_KEYS))
    spec = ModelSpec(name=top.str("name"), arch=arch, training=training, source=source)
    _check_model(spec, top)
    return spec


def _architecture(f: Fields) -> Architecture:
    heads = f.int("heads")
    moe = mla = None
    if "moe" in f.data:
        mf = f.sub("moe", MOE_KEYS)
        moe = MoESpec(routed_experts=mf.int("routed_experts"), top_k=mf.int("top_k"),
                      expert_ffn_hidden=mf.int("expert_ffn_hidden"),
                      shared_ffn_hidden=mf.int("shared_ffn_hidden", 0),
                      first_dense_layers=mf.int("first_dense_layers", 0),
                      layer_interval=mf.int("layer_interval", 1),
                      capacity_factor=mf.number("capacity_factor", None) if mf.raw(
                          "capacity_factor", None) is not None else None,
                      router_dtype=mf.choice("router_dtype", ("fp32", "bf16"), "fp32"),
                      score_function=mf.choice("score_function", ("softmax", "sigmoid"), "softmax"),
                      expert_bias=mf.bool("expert_bias", False),
                      router_groups=mf.int("router_groups", 1),
                      router_group_top_k=mf.int("router_group_top_k", 1),
                      routed_scaling_factor=mf.number("routed_scaling_factor", 1.0))
        check_moe(moe, f.int("layers"), mf.error)
    if "mla" in f.data:
        lf = f.sub("mla", MLA_KEYS)
        mla = MLASpec(q_lora_rank=lf.int("q_lora_rank", 0), kv_lora_rank=lf.int("kv_lora_rank"),
                      qk_nope_head_dim=lf.int("qk_nope_head_dim"),
                      qk_rope_head_dim=lf.int("qk_rope_head_dim"), v_head_dim=lf.int("v_head_dim"))
    return Architecture(
        layers=f.int("layers"), hidden=f.int("hidden"), heads=heads,
        kv_heads=f.int("kv_heads", heads), ffn_hidden=f.int("ffn_hidden"), vocab=f.int("vocab"),
        mlp=f.choice("mlp", ("gelu", "swiglu"), "gelu"),
        tied_embeddings=f.bool("tied_embeddings", False),
        learned_positions=f.bool("learned_positions", False),
        norm=f.choice("norm", ("layernorm", "rmsnorm"), "layernorm"),
        linear_bias=f.bool("linear_bias", False), dropout=f.bool("dropout", False), moe=moe,
        mla=mla)


def _training(f: Fields) -> Training:
    return Training(
        seq_len=f.int("seq_len"), global_batch=f.int("global_batch"),
        precision=f.choice("precision", ("bf16", "fp16", "fp8", "fp32"), "bf16"),
        optimizer=f.choice("optimizer", ("adam", "sgd"), "adam"),
        master_weights_fp32=f.bool("master_weights_fp32", True),
        grads_fp32=f.bool("grads_fp32", True),
        flash_attention=f.bool("flash_attention", True))


def _check_model(spec: ModelSpec, top: Fields) -> None:
    a = spec.arch
    arch = top.sub("architecture", ARCH_KEYS)
    if a.hidden % a.heads:
        raise arch.error("hidden", f"hidden={a.hidden} is not divisible by heads={a.heads}")
    if a.kv_heads > a.heads or a.heads % a.kv_heads:
        raise arch.error("kv_heads", f"kv_heads={a.kv_heads} must divide heads={a.heads}",
                         "MHA: kv_heads = heads; GQA: a divisor of heads; MQA: 1")


def load_device(ref: str | dict, *, source: str = "") -> DeviceSpec:
    """A device from a preset name or an inline mapping."""
    if isinstance(ref, str):
        if not presets.has("devices", ref):
            raise InputError(f"unknown device preset {ref!r}", source=source or None,
                             hint=presets.suggest("devices", ref))
        source = str(presets.path("devices", ref))
        ref = read_mapping(presets.path("devices", ref))
    f = Fields(ref, source=source, path="gpu" if source and "devices" not in source else "",
               allowed=DEVICE_KEYS)
    attn = f.list("attention_efficiency", [0.55, 0.45])
    if len(attn) != 2:
        raise f.error("attention_efficiency", "expected [forward, backward] fractions of peak")
    kernels = f.raw("attention_kernels", {})
    if not isinstance(kernels, dict) or not all(
            isinstance(v, list) and len(v) == 2 for v in kernels.values()):
        raise f.error("attention_kernels", "expected a mapping kernel -> [forward, backward] fractions of peak")
    return DeviceSpec(
        name=f.str("name"), peak_tflops=_peak_tflops(f),
        hbm_gib=f.number("hbm_gib"), hbm_bw_GBps=f.number("hbm_bw_GBps"),
        gemm_efficiency=_gemm_curve(f),
        attention_efficiency=tuple(f.check_number(f"attention_efficiency[{i}]", v,
                                                  quantity="efficiency") for i, v in enumerate(attn)),
        hbm_efficiency=f.number("hbm_efficiency", 0.8),
        attention_kernels={str(k): tuple(f.check_number(f"attention_kernels.{k}[{i}]", x, quantity="efficiency")
                                         for i, x in enumerate(v)) for k, v in kernels.items()},
        kernel_overhead_us=f.number("kernel_overhead_us", 4.0, strictly_positive=False),
        reserved_gib=f.number("reserved_gib", 1.0, strictly_positive=False),
        sources=f.strings("sources", []))


def _peak_tflops(f: Fields) -> dict[str, float]:
    """dtype -> dense peak TFLOP/s, bf16 required."""
    peak = f.raw("peak_tflops")
    if not isinstance(peak, dict) or "bf16" not in peak:
        raise f.error("peak_tflops", "expected a mapping dtype -> TFLOP/s including bf16")
    return {str(k)[:60]: f.check_number(f"peak_tflops.{str(k)[:60]}", v, quantity="peak_tflops")
            for k, v in peak.items()}


def _gemm_curve(f: Fields) -> tuple[tuple[float, float], ...]:
    """The [GFLOP, fraction of peak] points of the GEMM efficiency curve, sorted."""
    curve = f.list("gemm_efficiency")
    if not curve or not all(isinstance(p, list) and len(p) == 2 for p in curve):
        raise f.error("gemm_efficiency", "expected a list of [GFLOP, fraction of peak] pairs")
    return tuple(sorted(
        (f.check_number(f"gemm_efficiency[{i}][0]", g, quantity="gemm_gflop",
                        strictly_positive=False),
         f.check_number(f"gemm_efficiency[{i}][1]", e, quantity="efficiency"))
        for i, (g, e) in enumerate(curve)))


def load_cluster(ref: str | Path | None, *, nodes: int | None = None) -> ClusterSpec:
    """A cluster from a YAML path or preset name; `nodes` overrides the node count."""
    ref = ref or presets.DEFAULT_CLUSTER
    path = Path(ref)
    sized = presets.sized_cluster(str(ref))
    if not path.exists() and sized is not None:
        path, nodes = presets.path("clusters", sized[0]), nodes or sized[1]
    elif not path.exists() and presets.has("clusters", str(ref)):
        path = presets.path("clusters", str(ref))
    elif not path.exists():
        raise InputError(f"no cluster file or preset named {str(ref)!r}",
                         hint=presets.suggest("clusters", str(ref)))
    data = read_mapping(path)
    if nodes is not None:
        problem = out_of_bounds("nodes", nodes)
        if problem:
            raise InputError(f"--nodes: {problem}")
        data = {**data, "nodes": nodes}
    return cluster_from_mapping(data, source=str(path))


def cluster_from_mapping(data: Any, *, source: str) -> ClusterSpec:
    """Build a ClusterSpec from a parsed cluster.yaml mapping."""
    f = Fields(data, source=source, path="", allowed=CLUSTER_KEYS)
    gpu = f.raw("gpu")
    if not isinstance(gpu, (str, dict)):
        raise f.error("gpu", "expected a device preset name or an inline device mapping")
    device = load_device(gpu, source=source)
    nodes, gpus_per_node = f.int("nodes"), f.int("gpus_per_node")
    if nodes * gpus_per_node > MAX_GPUS:
        raise f.error("nodes", f"nodes x gpus_per_node = {nodes} x {gpus_per_node} = "
                               f"{nodes * gpus_per_node} GPUs; at most {MAX_GPUS} ({GPUS_WHY})")
    return ClusterSpec(
        name=f.str("name", Path(source).stem[:200] or "cluster"), nodes=nodes,
        gpus_per_node=gpus_per_node, device=device,
        intra_node_bw_GBps=f.number("intra_node_bw_GBps"),
        intra_node_latency_us=f.number("intra_node_latency_us", 3.0),
        inter_node_bw_GBps=f.number("inter_node_bw_GBps"),
        inter_node_latency_us=f.number("inter_node_latency_us", 8.0),
        collective_efficiency=f.number("collective_efficiency", 0.8),
        host_mem_gib=f.number("host_mem_gib", 1024.0),
        host_device_bw_GBps=f.number("host_device_bw_GBps", 25.0),
        host_adam_params_per_s=f.number("host_adam_params_per_s", 2.0e9),
        sources=f.strings("sources", []))
