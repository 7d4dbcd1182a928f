"""Loading model.yaml, Hugging Face config.json and cluster.yaml into specs, with validation.

Every problem becomes an InputError naming the file, the key path, what was expected and a hint.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from planner import presets
from planner.errors import InputError
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
               "attention_efficiency", "hbm_efficiency", "kernel_overhead_us", "reserved_gib",
               "sources", "links"]


def read_mapping(path: Path, *, what: str = "file",
                 missing_hint: str = "give a path to a YAML file or a preset name (`fmplan presets`)"
                 ) -> Any:
    """Parse a YAML or JSON file, turning I/O and syntax problems into InputError."""
    source = str(path)
    if not path.is_file():
        raise InputError(f"{what} not found", source=source, hint=missing_hint)
    try:
        text = path.read_text()
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot parse: {str(exc).splitlines()[0]}", source=source) from None


def load_model(ref: str | Path) -> ModelSpec:
    """A model from a YAML path, a preset name, or a Hugging Face config.json path."""
    path = Path(ref)
    if not path.exists() and presets.has("models", str(ref)):
        path = presets.path("models", str(ref))
    data = read_mapping(path)
    if path.suffix == ".json":
        return _model_from_hf(data, source=str(path))
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
                      shared_ffn_hidden=mf.int("shared_ffn_hidden", 0, minimum=0),
                      first_dense_layers=mf.int("first_dense_layers", 0, minimum=0),
                      layer_interval=mf.int("layer_interval", 1),
                      capacity_factor=mf.number("capacity_factor", None) if mf.raw(
                          "capacity_factor", None) is not None else None,
                      router_dtype=mf.choice("router_dtype", ("fp32", "bf16"), "fp32"),
                      score_function=mf.choice("score_function", ("softmax", "sigmoid"), "softmax"),
                      expert_bias=mf.bool("expert_bias", False),
                      router_groups=mf.int("router_groups", 1),
                      router_group_top_k=mf.int("router_group_top_k", 1),
                      routed_scaling_factor=mf.number("routed_scaling_factor", 1.0))
        _check_moe(moe, f.int("layers"), mf.error)
    if "mla" in f.data:
        lf = f.sub("mla", MLA_KEYS)
        mla = MLASpec(q_lora_rank=lf.int("q_lora_rank", 0, minimum=0), kv_lora_rank=lf.int("kv_lora_rank"),
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


def _check_moe(moe: MoESpec, layers: int, error) -> None:
    """Cross-field rules of an MoE block; `error(key, message, hint)` builds the InputError."""
    if moe.top_k > moe.routed_experts:
        raise error("top_k", f"top_k={moe.top_k} exceeds routed_experts={moe.routed_experts}")
    sparse = layers - moe.first_dense_layers
    if sparse <= 0:
        raise error("first_dense_layers", f"first_dense_layers={moe.first_dense_layers} leaves no "
                    f"MoE block among layers={layers}")
    if sparse % moe.layer_interval:
        raise error("layer_interval", f"the {sparse} blocks after the leading dense ones do not form "
                    f"whole groups of layer_interval={moe.layer_interval}",
                    "pick an interval dividing layers - first_dense_layers")
    if moe.routed_experts % moe.router_groups or moe.router_group_top_k > moe.router_groups:
        raise error("router_groups", f"router_groups={moe.router_groups} must divide routed_experts="
                    f"{moe.routed_experts} and be >= router_group_top_k={moe.router_group_top_k}")


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


def _model_from_hf(data: Any, *, source: str) -> ModelSpec:
    """A bare HF config.json as a model: the training block takes documented defaults."""
    arch = architecture_from_hf(data, source=source)
    seq = int(data.get("max_position_embeddings") or data.get("n_positions") or 4096)
    training = Training(seq_len=min(seq, 8192), global_batch=1024)
    name = str(data.get("_name_or_path") or data.get("model_type") or Path(source).parent.name)
    return ModelSpec(name=name, arch=arch, training=training, source=source)


def architecture_from_hf(data: Any, *, source: str) -> Architecture:
    """Read a local Hugging Face config.json (Llama, Mistral, Qwen2, GPT-2, GPT-NeoX families)."""
    if not isinstance(data, dict):
        raise InputError("expected a JSON object", source=source)
    kind = str(data.get("model_type", ""))

    def need(*keys: str) -> int:
        for key in keys:
            if isinstance(data.get(key), int):
                return data[key]
        raise InputError(f"missing integer `{keys[0]}` for model_type {kind!r}", source=source,
                         key_path=keys[0])

    if kind == "gpt2":
        hidden = need("n_embd")
        return Architecture(layers=need("n_layer"), hidden=hidden, heads=need("n_head"),
                            kv_heads=need("n_head"), ffn_hidden=data.get("n_inner") or 4 * hidden,
                            vocab=need("vocab_size"), mlp="gelu", tied_embeddings=True,
                            learned_positions=True, linear_bias=True, dropout=True)
    if kind == "gpt_neox":
        hidden = need("hidden_size")
        return Architecture(layers=need("num_hidden_layers"), hidden=hidden,
                            heads=need("num_attention_heads"), kv_heads=need("num_attention_heads"),
                            ffn_hidden=need("intermediate_size"), vocab=need("vocab_size"),
                            mlp="gelu", tied_embeddings=bool(data.get("tie_word_embeddings", False)),
                            linear_bias=True)
    if kind in _HF_MOE:
        return _hf_moe(data, kind, need, source)
    if kind in ("llama", "mistral", "qwen2", "qwen3", "gemma", "phi3", "olmo", "olmo2", ""):
        heads = need("num_attention_heads")
        return Architecture(
            layers=need("num_hidden_layers"), hidden=need("hidden_size"), heads=heads,
            kv_heads=data.get("num_key_value_heads") or heads, ffn_hidden=need("intermediate_size"),
            vocab=need("vocab_size"), mlp="swiglu", norm="rmsnorm",
            tied_embeddings=bool(data.get("tie_word_embeddings", False)),
            linear_bias=kind == "qwen2")
    raise InputError(f"unsupported model_type {kind!r}", source=source, key_path="model_type",
                     hint="supported: llama, mistral, qwen2, qwen3, gpt2, gpt_neox, mixtral, "
                          "qwen2_moe, qwen3_moe, deepseek_v2, deepseek_v3; "
                          "or write the architecture block in model.yaml")


_HF_MOE = ("mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3")


def _hf_moe(data: dict, kind: str, need, source: str) -> Architecture:
    """Mixtral, Qwen2/3-MoE and DeepSeek-V2/V3 config.json files."""
    heads = need("num_attention_heads")
    experts = need("num_local_experts", "num_experts", "n_routed_experts")
    expert_ffn = need("moe_intermediate_size", "intermediate_size")
    deepseek = kind.startswith("deepseek")
    shared, routing = 0, {}
    if kind == "qwen2_moe":
        shared = int(data.get("shared_expert_intermediate_size") or 0)
    elif deepseek:
        shared = int(data.get("n_shared_experts") or 0) * expert_ffn
        routing = dict(expert_bias=kind == "deepseek_v3" and data.get("topk_method") == "noaux_tc",
                       router_groups=int(data.get("n_group") or 1),
                       router_group_top_k=int(data.get("topk_group") or 1),
                       routed_scaling_factor=float(data.get("routed_scaling_factor") or 1.0))
    layers = need("num_hidden_layers")
    first_dense, interval = _hf_moe_layers(data, kind, layers, source)
    moe = MoESpec(routed_experts=experts, top_k=need("num_experts_per_tok"),
                  expert_ffn_hidden=expert_ffn, shared_ffn_hidden=shared,
                  first_dense_layers=first_dense, layer_interval=interval,
                  score_function="sigmoid" if data.get("scoring_func") == "sigmoid" else "softmax",
                  **routing)
    _check_moe(moe, layers, lambda key, message, hint=None: InputError(
        message, source=source, key_path=key, hint=hint))
    mla = None
    if deepseek:
        mla = MLASpec(q_lora_rank=int(data.get("q_lora_rank") or 0), kv_lora_rank=need("kv_lora_rank"),
                      qk_nope_head_dim=need("qk_nope_head_dim"),
                      qk_rope_head_dim=need("qk_rope_head_dim"), v_head_dim=need("v_head_dim"))
    return Architecture(
        layers=layers, hidden=need("hidden_size"), heads=heads,
        kv_heads=data.get("num_key_value_heads") or heads,
        ffn_hidden=need("intermediate_size"), vocab=need("vocab_size"), mlp="swiglu",
        norm="rmsnorm", tied_embeddings=bool(data.get("tie_word_embeddings", False)),
        linear_bias=kind == "qwen2_moe", moe=moe, mla=mla)


def _hf_moe_layers(data: dict, kind: str, layers: int, source: str) -> tuple[int, int]:
    """(first_dense_layers, layer_interval) of an HF MoE config: DeepSeek's
    `first_k_dense_replace` + `moe_layer_freq`, Qwen-MoE's `decoder_sparse_step` (MoE where
    (i + 1) % step == 0) and `mlp_only_layers` (only a leading run of dense blocks is supported)."""
    if kind.startswith("deepseek"):
        if int(data.get("moe_layer_freq") or 1) != 1:
            raise InputError(f"moe_layer_freq={data['moe_layer_freq']} is not supported",
                             source=source, key_path="moe_layer_freq",
                             hint="write the moe block in model.yaml (first_dense_layers, layer_interval)")
        return int(data.get("first_k_dense_replace") or 0), 1
    interval = int(data.get("decoder_sparse_step") or 1)
    dense_only = sorted(int(i) for i in data.get("mlp_only_layers") or [])
    if dense_only and (interval != 1 or dense_only != list(range(len(dense_only)))):
        raise InputError(f"mlp_only_layers={dense_only} with decoder_sparse_step={interval}: only "
                         "a leading run of dense blocks is supported", source=source,
                         key_path="mlp_only_layers",
                         hint="write the moe block in model.yaml (first_dense_layers, layer_interval)")
    return len(dense_only), interval


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
    peak = f.raw("peak_tflops")
    if not isinstance(peak, dict) or not peak or "bf16" not in peak:
        raise f.error("peak_tflops", "expected a mapping dtype -> TFLOP/s including bf16")
    curve = f.raw("gemm_efficiency")
    if not isinstance(curve, list) or not all(
            isinstance(p, list) and len(p) == 2 and 0 < p[1] <= 1 for p in curve):
        raise f.error("gemm_efficiency", "expected a list of [GFLOP, fraction of peak] pairs")
    attn = f.raw("attention_efficiency", [0.55, 0.45])
    return DeviceSpec(
        name=f.str("name"), peak_tflops={k: float(v) for k, v in peak.items()},
        hbm_gib=f.number("hbm_gib"), hbm_bw_GBps=f.number("hbm_bw_GBps"),
        gemm_efficiency=tuple(sorted((float(g), float(e)) for g, e in curve)),
        attention_efficiency=(float(attn[0]), float(attn[1])),
        hbm_efficiency=f.number("hbm_efficiency", 0.8, maximum=1.0),
        kernel_overhead_us=f.number("kernel_overhead_us", 4.0, strictly_positive=False),
        reserved_gib=f.number("reserved_gib", 1.0, strictly_positive=False),
        sources=tuple(f.raw("sources", [])))


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
        if nodes < 1:
            raise InputError(f"--nodes must be >= 1, got {nodes}")
        data = {**data, "nodes": nodes}
    return cluster_from_mapping(data, source=str(path))


def cluster_from_mapping(data: Any, *, source: str) -> ClusterSpec:
    """Build a ClusterSpec from a parsed cluster.yaml mapping."""
    f = Fields(data, source=source, path="", allowed=CLUSTER_KEYS)
    gpu = f.raw("gpu")
    if not isinstance(gpu, (str, dict)):
        raise f.error("gpu", "expected a device preset name or an inline device mapping")
    device = load_device(gpu, source=source)
    return ClusterSpec(
        name=f.str("name", Path(source).stem), nodes=f.int("nodes"),
        gpus_per_node=f.int("gpus_per_node"), device=device,
        intra_node_bw_GBps=f.number("intra_node_bw_GBps"),
        intra_node_latency_us=f.number("intra_node_latency_us", 3.0),
        inter_node_bw_GBps=f.number("inter_node_bw_GBps"),
        inter_node_latency_us=f.number("inter_node_latency_us", 8.0),
        collective_efficiency=f.number("collective_efficiency", 0.8, maximum=1.0),
        host_mem_gib=f.number("host_mem_gib", 1024.0),
        host_device_bw_GBps=f.number("host_device_bw_GBps", 25.0),
        host_adam_params_per_s=f.number("host_adam_params_per_s", 2.0e9),
        sources=tuple(f.raw("sources", [])))
