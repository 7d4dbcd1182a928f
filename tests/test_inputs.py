"""Loading and validating inputs: models, HF configs, clusters, strategies."""
from __future__ import annotations

import json

import pytest

from planner import presets
from planner.errors import InputError, InvalidStrategyError
from planner.loading import load_cluster, load_model
from planner.strategy import Strategy, balanced_split, default_split


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD = """\
name: m
architecture: {layers: 4, hidden: 256, heads: 8, kv_heads: 4, ffn_hidden: 688, vocab: 1000, mlp: swiglu}
training: {seq_len: 256, global_batch: 16}
"""


def test_every_preset_loads():
    for name in presets.names("models"):
        load_model(name)
    for name in presets.names("clusters"):
        assert load_cluster(name).gpus_per_node == 8
    assert set(presets.names("devices")) >= {"A100-40GB", "A100-80GB", "H100-SXM-80GB", "H100-PCIe",
                                             "H200-141GB", "B200", "MI300X"}


def test_sized_cluster_name_sets_nodes():
    assert load_cluster("dgx-a100-128n").gpus == 1024
    assert load_cluster("dgx-h100", nodes=3).gpus == 24


@pytest.mark.parametrize("bad, key_path, hint", [
    (GOOD.replace("kv_heads", "kv_head"), "architecture.kv_head", "did you mean `kv_heads`?"),
    (GOOD.replace("layers: 4", "layers: four"), "architecture.layers", None),
    (GOOD.replace("layers: 4", "layers: 0"), "architecture.layers", None),
    (GOOD.replace("mlp: swiglu", "mlp: relu"), "architecture.mlp", None),
    (GOOD.replace("seq_len: 256, ", ""), "training.seq_len", None),
    (GOOD.replace("kv_heads: 4", "kv_heads: 3"), "architecture.kv_heads", None),
])
def test_bad_model_names_file_and_key_path(tmp_path, bad, key_path, hint):
    path = write(tmp_path, "model.yaml", bad)
    with pytest.raises(InputError) as err:
        load_model(str(path))
    assert err.value.key_path == key_path
    assert str(path) in str(err.value)
    if hint:
        assert hint in str(err.value)


def test_yaml_syntax_error_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot parse"):
        load_model(str(write(tmp_path, "m.yaml", "name: [unclosed")))


@pytest.mark.parametrize("config, kv, mlp", [
    ({"model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32,
      "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256}, 8, "swiglu"),
    ({"model_type": "mistral", "num_hidden_layers": 32, "hidden_size": 4096,
      "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
      "vocab_size": 32000}, 8, "swiglu"),
    ({"model_type": "qwen2", "num_hidden_layers": 28, "hidden_size": 3584, "num_attention_heads": 28,
      "num_key_value_heads": 4, "intermediate_size": 18944, "vocab_size": 152064}, 4, "swiglu"),
    ({"model_type": "gpt2", "n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257}, 12, "gelu"),
    ({"model_type": "gpt_neox", "num_hidden_layers": 44, "hidden_size": 6144,
      "num_attention_heads": 64, "intermediate_size": 24576, "vocab_size": 50432}, 64, "gelu"),
])
def test_hf_config_families(tmp_path, config, kv, mlp):
    path = write(tmp_path, "config.json", json.dumps(config))
    model = load_model(str(path))
    assert model.arch.kv_heads == kv and model.arch.mlp == mlp
    yaml_path = write(tmp_path, "m.yaml", "name: x\narchitecture: {hf_config: config.json}\n"
                                          "training: {seq_len: 1024, global_batch: 8}\n")
    assert load_model(str(yaml_path)).arch == model.arch


def test_unknown_hf_family_is_explained(tmp_path):
    path = write(tmp_path, "config.json", json.dumps({"model_type": "mamba"}))
    with pytest.raises(InputError, match="unsupported model_type"):
        load_model(str(path))


def test_cluster_inline_gpu_and_errors(tmp_path):
    text = ("nodes: 2\ngpus_per_node: 4\nintra_node_bw_GBps: 300\ninter_node_bw_GBps: 25\n"
            "gpu: A100-80GB\n")
    assert load_cluster(str(write(tmp_path, "c.yaml", text))).gpus == 8
    with pytest.raises(InputError, match="unknown device preset") as err:
        load_cluster(str(write(tmp_path, "c2.yaml", text.replace("A100-80GB", "A100-80G"))))
    assert "A100-80GB" in str(err.value)
    with pytest.raises(InputError, match="did you mean `inter_node_bw_GBps`"):
        load_cluster(str(write(tmp_path, "c3.yaml", text.replace("inter_node_bw_GBps", "inter_bw"))))


def test_balanced_split_counts_embedding_and_head():
    assert balanced_split(70, 12) == (5,) + (6,) * 10 + (5,)
    assert sum(balanced_split(126, 16)) == 126
    assert balanced_split(80, 1) == (80,)
    assert min(balanced_split(4, 4)) == 1


@pytest.mark.parametrize("st, fragment", [
    (Strategy(dp=2, tp=8, pp=2), "dp*tp*pp*cp = dp=2 tp=8 pp=2 cp=1 = 32 GPUs"),
    (Strategy(dp=16, tp=4, pp=1, cp=1, mbs=1).with_(tp=3, dp=1), "not divisible by tp=3"),
    (Strategy(dp=64, sp=True), "needs tp > 1"),
    (Strategy(dp=16, pp=4, vpp=2, mbs=16), "multiple of pp=4"),
    (Strategy(dp=64, mbs=3), "global_batch=512 is not divisible by dp*mbs"),
    (Strategy(dp=32, pp=2, stage_layers=(40, 41)), "sum to 81"),
    (Strategy(dp=64, offload_params=True), "needs zero=3"),
])
def test_invalid_strategies_show_every_factor(llama70b, dgx_h100_8n, st, fragment):
    with pytest.raises(InvalidStrategyError) as err:
        st.validate(llama70b, dgx_h100_8n if st.world > 3 else None)
    assert fragment in str(err.value)


def test_interleaved_default_split_is_uniform_when_layers_divide():
    assert default_split(96, 8, 12) == (12,) * 8
    assert default_split(96, 16, 6) == (6,) * 16
    assert default_split(70, 12, 1) == balanced_split(70, 12)
    from cost_models.estimate import estimate
    from planner.loading import load_cluster, load_model
    cost = estimate(load_model("gpt3-175b"), load_cluster("dgx-a100-128n"),
                    Strategy(dp=16, tp=8, pp=8, vpp=12, zero=1, sp=True, recompute="full"))
    assert [s.layers for s in cost.stages] == [12] * 8
