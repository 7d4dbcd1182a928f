"""Memory formulas: ZeRO model states (Rajbhandari et al. 2020) and activations (Korthikanti
et al. 2022, Table 2), plus invariants of the whole estimate."""
from __future__ import annotations

from dataclasses import replace

import pytest

from cost_models.estimate import estimate
from cost_models.memory import (block_activations, in_flight_microbatches, state_bytes_per_param)
from planner.specs import Architecture, MLASpec, ModelSpec, Training
from planner.strategy import Strategy

S, B, H, A = 2048, 4, 6144, 64   # GPT 22B shapes (Korthikanti Table 3)


def gpt22b(flash: bool = False, **train) -> ModelSpec:
    arch = Architecture(layers=48, hidden=H, heads=A, kv_heads=A, ffn_hidden=4 * H, vocab=51200,
                        mlp="gelu", tied_embeddings=True, learned_positions=True,
                        linear_bias=True, dropout=True)
    return ModelSpec(name="gpt22b", arch=arch, training=Training(
        seq_len=S, global_batch=64, flash_attention=flash, **train))


SBH = S * B * H


@pytest.mark.parametrize("tp, sp, mode, expected", [
    (1, False, "none", SBH * (34 + 5 * A * S / H)),                         # Eq. 1
    (8, False, "none", SBH * (10 + 24 / 8 + 5 * A * S / (H * 8))),          # Eq. 2
    (8, True, "none", SBH / 8 * (34 + 5 * A * S / H)),                      # Eq. 4
    (8, False, "selective", SBH * (10 + 24 / 8)),                           # TP + selective
    (8, True, "selective", SBH * 34 / 8),                                   # TP + SP + selective
    (8, False, "full", 2 * SBH),                                            # full recompute
    (1, False, "full", 2 * SBH),
])
def test_activation_bytes_reproduce_korthikanti_table2(tp, sp, mode, expected):
    acts = block_activations(gpt22b(), Strategy(tp=tp, sp=sp, mbs=B))
    assert getattr(acts, mode) == pytest.approx(expected, rel=1e-12)


def test_flash_attention_drops_the_s_squared_term():
    st = Strategy(tp=8, sp=True, mbs=B)
    flash = block_activations(gpt22b(flash=True), st)
    plain = block_activations(gpt22b(), st)
    assert flash.none == pytest.approx(plain.selective + 4 * A * S * B / 8)   # only the fp32 LSE left


def test_gqa_and_swiglu_change_the_coefficients():
    base = dict(layers=2, hidden=4096, heads=32, ffn_hidden=14336, vocab=32000)
    mha = Architecture(kv_heads=32, mlp="swiglu", **base)
    gqa = Architecture(kv_heads=8, mlp="swiglu", **base)
    train = Training(seq_len=4096, global_batch=8)
    st = Strategy(mbs=1)
    a_mha = block_activations(ModelSpec(name="m", arch=mha, training=train), st).selective
    a_gqa = block_activations(ModelSpec(name="g", arch=gqa, training=train), st).selective
    sb = 4096 * 1
    assert a_mha - a_gqa == pytest.approx(2 * 2 * sb * (4096 - 1024))     # K and V, 2 bytes each
    assert a_gqa == pytest.approx(sb * (8 * 4096 + 2 * 4096 + 4 * 1024 + 2 * 4096 + 6 * 14336))


def test_multi_latent_attention_activations_by_hand():
    """MLA as Megatron-Core's MLASelfAttention stores it, one case counted tensor by tensor
    (16-bit, 2 bytes): s=512 tokens x b=2, h=1024, a=8 heads, q/kv latents 256/128, per-head
    d_nope=64, d_rope=32, d_v=64, SwiGLU f=2048, tp=2 with sequence parallelism, flash attention."""
    mla = MLASpec(q_lora_rank=256, kv_lora_rank=128, qk_nope_head_dim=64, qk_rope_head_dim=32,
                  v_head_dim=64)
    arch = Architecture(layers=2, hidden=1024, heads=8, kv_heads=8, ffn_hidden=2048, vocab=32000,
                        mlp="swiglu", norm="rmsnorm", mla=mla)
    model = ModelSpec(name="mla", arch=arch, training=Training(seq_len=512, global_batch=8))
    acts = block_activations(model, Strategy(tp=2, sp=True, mbs=2))
    tokens, t = 512 * 2, 2
    outside = tokens * 2 * (1024 + 1024      # input-norm and pre-MLP-norm inputs
                            + 1024            # q/kv down-projections' input (the norm output)
                            + 256 + 256       # q latent: its norm's input and output
                            + 128 + 128       # kv latent: the same
                            + 1024)           # MLP input
    heads = tokens * 2 * 8 * (96 + 96 + 64 + 64)   # query, key (rope expanded), value, output
    mlp = tokens * 2 * 3 * 2048                    # SwiGLU gate, up, product
    lse = tokens * 4 * 8                           # fp32 log-sum-exp per head
    assert acts.selective == outside / t + (heads + mlp) / t
    assert acts.none == acts.selective + lse / t
    assert acts.full == tokens * 2 * 1024 / t
    # The MHA-shaped approximation it replaces (Q, K, V and output of width h) kept far less.
    mha = replace(arch, mla=None)
    approx = block_activations(replace(model, arch=mha), Strategy(tp=2, sp=True, mbs=2))
    assert acts.none - approx.none == pytest.approx(
        (tokens * 2 * (256 + 256 + 128 + 128)) / t + (heads - tokens * 2 * 4 * 1024) / t)


@pytest.mark.parametrize("grads_fp32, zero, expected", [
    (False, 0, 16.0), (False, 1, 4 + 12 / 64), (False, 2, 2 + 14 / 64), (False, 3, 16 / 64),
    (True, 0, 18.0), (True, 1, 6 + 12 / 64),   # Megatron: fp32 main grads kept whole
])
def test_model_state_bytes_follow_zero_paper(grads_fp32, zero, expected):
    model = gpt22b(grads_fp32=grads_fp32)
    sb = state_bytes_per_param(model, Strategy(dp=64, zero=zero))
    assert sb.weights + sb.grads + sb.optimizer == pytest.approx(expected)


def test_optimizer_offload_moves_states_to_host():
    model = gpt22b()
    sb = state_bytes_per_param(model, Strategy(dp=8, zero=1, offload_optimizer=True))
    assert sb.optimizer == 0
    assert sb.host == pytest.approx(12 / 8 + 4)


def test_interleaved_in_flight_matches_korthikanti_factor():
    p, v, m = 8, 3, 64
    st = Strategy(pp=p, vpp=v)
    assert in_flight_microbatches(0, st, m) == pytest.approx(p * (1 + (p - 1) / (p * v)))
    assert [in_flight_microbatches(i, Strategy(pp=4), 16) for i in range(4)] == [4, 3, 2, 1]
    assert in_flight_microbatches(0, Strategy(pp=4), 2) == 2


def test_memory_non_increasing_in_zero_stage(llama70b, dgx_h100_8n):
    peaks = [estimate(llama70b, dgx_h100_8n, Strategy(dp=8, tp=8, zero=z, sp=True,
                                                        recompute="full")).peak_memory_bytes
             for z in range(4)]
    assert all(a >= b for a, b in zip(peaks, peaks[1:]))
    assert peaks[3] < peaks[0] / 2


def test_activations_increase_with_micro_batch(llama70b, dgx_h100_8n):
    acts = [estimate(llama70b, dgx_h100_8n, Strategy(dp=2, tp=8, pp=4, mbs=mbs, zero=1, sp=True))
            .to_dict()["memory_gib"]["activations"] for mbs in (1, 2, 4)]
    assert acts[0] < acts[1] < acts[2]


def test_recompute_lowers_memory_and_raises_time(llama70b, dgx_h100_8n):
    base = Strategy(dp=2, tp=8, pp=4, zero=1, sp=True)
    none = estimate(llama70b, dgx_h100_8n, base)
    full = estimate(llama70b, dgx_h100_8n, base.with_(recompute="full"))
    assert full.peak_memory_bytes < none.peak_memory_bytes
    assert full.step_time_s > none.step_time_s
    assert full.time_s["recompute"] > 0 == none.time_s["recompute"]
