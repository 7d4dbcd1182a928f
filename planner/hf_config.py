"""Reading a local Hugging Face `config.json` into an Architecture (dense and MoE families).

HF configs carry many keys fmplan does not use, so unknown keys are allowed here; every number
fmplan reads is checked against the same bounds as model.yaml (planner/limits.py), with the HF key
as the key path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from planner.errors import InputError
from planner.schema import Fields
from planner.specs import Architecture, MLASpec, ModelSpec, MoESpec, Training

_HF_MOE = ("mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3")
_HF_DENSE = ("llama", "mistral", "qwen2", "qwen3", "gemma", "phi3", "olmo", "olmo2", "")



class _Config(Fields):
    """A config.json mapping: any key allowed, numbers read under fmplan's quantity names."""

    def __init__(self, data: Any, *, source: str):
        if not isinstance(data, dict):
            raise InputError("expected a JSON object", source=source)
        super().__init__(data, source=source, path="", allowed=list(data))
        self.kind = str(data.get("model_type", ""))[:60]

    def need(self, *keys: str, quantity: str) -> int:
        """The first of `keys` present, as an integer within the bound of `quantity`."""
        for key in keys:
            if self.data.get(key) is not None:
                return self.int(key, quantity=quantity)
        raise self.error(keys[0], f"missing integer `{keys[0]}` for model_type {self.kind!r}")

    def optional(self, key: str, default: int, *, quantity: str) -> int:
        """An optional integer (absent, null or 0 means `default`)."""
        if not self.data.get(key):
            return default
        return self.int(key, quantity=quantity)

    def flag(self, key: str) -> bool:
        """An optional boolean (absent or null is false)."""
        return self.bool(key, False)


def check_moe(moe: MoESpec, layers: int, error: Callable[..., InputError]) -> None:
    """Cross-field rules of an MoE block, from model.yaml or config.json; `error(key, message,
    hint)` builds the InputError at the right key path."""
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


def model_from_hf(data: Any, *, source: str) -> ModelSpec:
    """A bare HF config.json as a model: the training block takes documented defaults
    (seq_len = the model's context, at most 8192; global batch 1024 sequences)."""
    arch = architecture_from_hf(data, source=source)
    config = _Config(data, source=source)
    seq = config.optional("max_position_embeddings", 0, quantity="seq_len") or config.optional(
        "n_positions", 4096, quantity="seq_len")
    training = Training(seq_len=min(seq, 8192), global_batch=1024)
    name = data.get("_name_or_path") or data.get("model_type") or Path(source).parent.name
    return ModelSpec(name=str(name)[:200], arch=arch, training=training, source=source)


def architecture_from_hf(data: Any, *, source: str) -> Architecture:
    """Read a local Hugging Face config.json (Llama, Mistral, Qwen2, GPT-2, GPT-NeoX, MoE)."""
    c = _Config(data, source=source)
    if c.kind == "gpt2":
        hidden = c.need("n_embd", quantity="hidden")
        heads = c.need("n_head", quantity="heads")
        return Architecture(layers=c.need("n_layer", quantity="layers"), hidden=hidden, heads=heads,
                            kv_heads=heads,
                            ffn_hidden=c.optional("n_inner", 4 * hidden, quantity="ffn_hidden"),
                            vocab=c.need("vocab_size", quantity="vocab"), mlp="gelu",
                            tied_embeddings=True, learned_positions=True, linear_bias=True,
                            dropout=True)
    if c.kind == "gpt_neox":
        heads = c.need("num_attention_heads", quantity="heads")
        return Architecture(layers=c.need("num_hidden_layers", quantity="layers"),
                            hidden=c.need("hidden_size", quantity="hidden"), heads=heads,
                            kv_heads=heads,
                            ffn_hidden=c.need("intermediate_size", quantity="ffn_hidden"),
                            vocab=c.need("vocab_size", quantity="vocab"), mlp="gelu",
                            tied_embeddings=c.flag("tie_word_embeddings"), linear_bias=True)
    if c.kind in _HF_MOE:
        return _hf_moe(c)
    if c.kind in _HF_DENSE:
        heads = c.need("num_attention_heads", quantity="heads")
        return Architecture(
            layers=c.need("num_hidden_layers", quantity="layers"),
            hidden=c.need("hidden_size", quantity="hidden"), heads=heads,
            kv_heads=c.optional("num_key_value_heads", heads, quantity="kv_heads"),
            ffn_hidden=c.need("intermediate_size", quantity="ffn_hidden"),
            vocab=c.need("vocab_size", quantity="vocab"), mlp="swiglu", norm="rmsnorm",
            tied_embeddings=c.flag("tie_word_embeddings"), linear_bias=c.kind == "qwen2")
    raise InputError(f"unsupported model_type {c.kind!r}", source=source, key_path="model_type",
                     hint="supported: llama, mistral, qwen2, qwen3, gpt2, gpt_neox, mixtral, "
                          "qwen2_moe, qwen3_moe, deepseek_v2, deepseek_v3; "
                          "or write the architecture block in model.yaml")


def _hf_moe(c: _Config) -> Architecture:
    """Mixtral, Qwen2/3-MoE and DeepSeek-V2/V3 config.json files."""
    heads = c.need("num_attention_heads", quantity="heads")
    experts = c.need("num_local_experts", "num_experts", "n_routed_experts",
                     quantity="routed_experts")
    expert_ffn = c.need("moe_intermediate_size", "intermediate_size", quantity="expert_ffn_hidden")
    deepseek = c.kind.startswith("deepseek")
    shared, routing = 0, {}
    if c.kind == "qwen2_moe":
        shared = c.optional("shared_expert_intermediate_size", 0, quantity="shared_ffn_hidden")
    elif deepseek:
        shared = c.optional("n_shared_experts", 0, quantity="routed_experts") * expert_ffn
        c.check_int("n_shared_experts", shared, quantity="shared_ffn_hidden")
        routing = dict(
            expert_bias=c.kind == "deepseek_v3" and c.data.get("topk_method") == "noaux_tc",
            router_groups=c.optional("n_group", 1, quantity="router_groups"),
            router_group_top_k=c.optional("topk_group", 1, quantity="router_group_top_k"),
            routed_scaling_factor=c.number("routed_scaling_factor", 1.0) if c.data.get(
                "routed_scaling_factor") else 1.0)
    layers = c.need("num_hidden_layers", quantity="layers")
    first_dense, interval = _hf_moe_layers(c, layers)
    moe = MoESpec(routed_experts=experts, top_k=c.need("num_experts_per_tok", quantity="top_k"),
                  expert_ffn_hidden=expert_ffn, shared_ffn_hidden=shared,
                  first_dense_layers=first_dense, layer_interval=interval,
                  score_function="sigmoid" if c.data.get("scoring_func") == "sigmoid" else "softmax",
                  **routing)
    check_moe(moe, layers, lambda key, message, hint=None: c.error(key, message, hint))
    mla = None
    if deepseek:
        mla = MLASpec(q_lora_rank=c.optional("q_lora_rank", 0, quantity="q_lora_rank"),
                      kv_lora_rank=c.need("kv_lora_rank", quantity="kv_lora_rank"),
                      qk_nope_head_dim=c.need("qk_nope_head_dim", quantity="qk_nope_head_dim"),
                      qk_rope_head_dim=c.need("qk_rope_head_dim", quantity="qk_rope_head_dim"),
                      v_head_dim=c.need("v_head_dim", quantity="v_head_dim"))
    return Architecture(
        layers=layers, hidden=c.need("hidden_size", quantity="hidden"), heads=heads,
        kv_heads=c.optional("num_key_value_heads", heads, quantity="kv_heads"),
        ffn_hidden=c.need("intermediate_size", quantity="ffn_hidden"),
        vocab=c.need("vocab_size", quantity="vocab"), mlp="swiglu", norm="rmsnorm",
        tied_embeddings=c.flag("tie_word_embeddings"), linear_bias=c.kind == "qwen2_moe",
        moe=moe, mla=mla)


def _hf_moe_layers(c: _Config, layers: int) -> tuple[int, int]:
    """(first_dense_layers, layer_interval) of an HF MoE config: DeepSeek's
    `first_k_dense_replace` + `moe_layer_freq`, Qwen-MoE's `decoder_sparse_step` (MoE where
    (i + 1) % step == 0) and `mlp_only_layers` (only a leading run of dense blocks is supported)."""
    unsupported = "write the moe block in model.yaml (first_dense_layers, layer_interval)"
    if c.kind.startswith("deepseek"):
        if c.optional("moe_layer_freq", 1, quantity="layer_interval") != 1:
            raise c.error("moe_layer_freq", f"moe_layer_freq={c.data['moe_layer_freq']} is not "
                                            "supported", unsupported)
        return c.optional("first_k_dense_replace", 0, quantity="first_dense_layers"), 1
    interval = c.optional("decoder_sparse_step", 1, quantity="layer_interval")
    listed = c.list("mlp_only_layers", [])
    dense_only = sorted(c.check_int(f"mlp_only_layers[{i}]", v, quantity="first_dense_layers")
                        for i, v in enumerate(listed))
    if dense_only and (interval != 1 or dense_only != list(range(len(dense_only)))):
        raise c.error("mlp_only_layers", f"mlp_only_layers={dense_only[:8]} with "
                                         f"decoder_sparse_step={interval}: only a leading run of "
                                         "dense blocks is supported", unsupported)
    return len(dense_only), interval
