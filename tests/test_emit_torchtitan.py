"""torchtitan emitter: the `torchtitan.train` command line in torchtitan.sh is parsed by
torchtitan 0.3.0's own ConfigManager, and ParallelDims accepts its degrees for the plan's world."""
from __future__ import annotations

from dataclasses import replace

import pytest

from emit_cases import check_golden, dry_run, plan
from engine_parsers import torchtitan_config
from planner.emit import check, emit
from planner.emit.torchtitan import KNOWN_MODELS, model_parts
from planner.errors import InputError
from planner.plan import Plan
from planner.specs import MLASpec, MoESpec

CASES = ["llama-gqa-fsdp", "pp-any-split", "vpp-even-fsdp", "cp-fsdp", "zero3-offload",
         "moe-deepseek-fsdp-ep-bf16"]


def _plan(case):
    if case == "vpp-even-fsdp":
        base = plan("vpp-even")
        return base.__class__(model=base.model, cluster=base.cluster,
                              strategy=base.strategy.with_(zero=3, recompute="full"))
    return plan(case)


def _run(tmp_path, p):
    files = emit(p, "torchtitan", tmp_path)
    argv = dry_run(tmp_path / "torchtitan.sh", {"HF_ASSETS_PATH": str(tmp_path)})
    config, dims = torchtitan_config(argv[argv.index("torchtitan.train") + 1:],
                                     world_size=p.strategy.world)
    return files, config, dims


@pytest.mark.parametrize("case", CASES)
def test_torchtitan_accepts_emitted_command_line(tmp_path, case):
    from torchtitan.distributed.activation_checkpoint import FullAC, SelectiveAC
    p = _plan(case)
    st, train = p.strategy, p.model.training
    files, config, dims = _run(tmp_path, p)
    assert (dims.dp_replicate * dims.dp_shard, dims.tp, dims.pp, dims.cp) == (st.dp, st.tp, st.pp,
                                                                             st.cp)
    assert dims.dp_shard == (st.dp if st.zero else 1)
    assert dims.ep == st.ep and (dims.dp_shard * dims.cp * dims.tp) % dims.ep == 0  # efsdp whole
    if p.model.arch.moe is not None:
        assert config.parallelism.expert_parallel_degree == st.ep
    par = config.parallelism
    assert par.enable_sequence_parallel == (st.sp or st.tp == 1)
    assert par.fsdp_reshard_after_forward == {0: "default", 2: "never", 3: "always"}[st.zero]
    assert config.training.global_batch_size == train.global_batch
    assert config.training.seq_len == train.seq_len
    assert config.training.enable_cpu_offload == st.offload_optimizer
    data_parallel_steps = train.global_batch // (config.training.local_batch_size * st.dp)
    pipeline_micro = config.training.local_batch_size // par.pipeline_parallel_microbatch_size
    assert data_parallel_steps * (pipeline_micro if st.pp > 1 else 1) == st.micro_batches(p.model)
    stages = st.stages(p.model)
    ac = {FullAC.Config: "full", SelectiveAC.Config: "selective", type(None): "none"}[
        type(config.activation_checkpoint)]
    assert ac == ("full" if stages[0].full else "selective" if stages[0].selective else "none")
    if st.pp > 1:
        parts = par.module_fqns_per_model_part
        assert len(parts) == st.pp * st.vpp
        per_rank = [sum(sum(1 for m in parts[i] if m.startswith("layers."))
                        for i in range(s, len(parts), st.pp)) for s in range(st.pp)]
        assert per_rank == [s.layers for s in stages]
        assert par.pipeline_parallel_schedule == ("Interleaved1F1B" if st.vpp > 1 else "1F1B")
    check_golden(files, "torchtitan", case)


def test_model_parts_cover_every_module_once():
    parts = model_parts(_plan("vpp-even-fsdp"))
    names = [m for part in parts for m in part]
    assert names == ["tok_embeddings", *[f"layers.{i}" for i in range(80)], "norm", "lm_head"]


def test_known_models_match_torchtitan_registry():
    """KNOWN_MODELS states the shapes torchtitan 0.3.0's config functions really build: dense
    width from the first block, experts from the MoE blocks, MLA dimensions from the attention."""
    import importlib
    for known in KNOWN_MODELS:
        module, config_fn = known.name.split(":")
        registry = importlib.import_module(f"torchtitan.models.{module}.config_registry")
        model = getattr(registry, config_fn)().model_spec.model
        layer, attention = model.layers[0], model.layers[0].attention
        kv_heads = getattr(attention, "n_kv_heads", None) or attention.n_heads
        shape = (len(model.layers), model.dim, attention.n_heads, kv_heads,
                 layer.feed_forward.w1.out_features, model.vocab_size)
        assert shape == (known.layers, known.hidden, known.heads, known.kv_heads,
                         known.ffn_hidden, known.vocab), known.name
        assert _moe(model) == known.moe and _mla(attention) == known.mla, known.name


def _moe(model) -> MoESpec | None:
    moe_layers = [i for i, layer in enumerate(model.layers) if getattr(layer, "moe", None)]
    if not moe_layers:
        return None
    assert moe_layers == list(range(moe_layers[0], len(model.layers)))  # dense first, then MoE
    moe = model.layers[moe_layers[0]].moe
    shared = moe.shared_experts.w1.out_features if moe.shared_experts else 0
    router = moe.router
    return MoESpec(routed_experts=moe.num_experts, top_k=router.top_k,
                   expert_ffn_hidden=moe.routed_experts.inner_experts.hidden_dim,
                   shared_ffn_hidden=shared, first_dense_layers=moe_layers[0],
                   score_function=router.score_func, expert_bias=moe.load_balance_coeff is not None,
                   router_groups=router.num_expert_groups or 1,
                   router_group_top_k=router.num_limited_groups or 1,
                   routed_scaling_factor=router.route_scale)


def _mla(attention) -> MLASpec | None:
    if not hasattr(attention, "kv_lora_rank"):
        return None
    return MLASpec(q_lora_rank=attention.q_lora_rank, kv_lora_rank=attention.kv_lora_rank,
                   qk_nope_head_dim=attention.qk_nope_head_dim,
                   qk_rope_head_dim=attention.qk_rope_head_dim, v_head_dim=attention.v_head_dim)


def test_parallel_dims_catch_a_wrong_world_size():
    """The validator is live: degrees that do not multiply to the world size are refused."""
    from torchtitan.distributed.parallel_dims import ParallelDims
    with pytest.raises(AssertionError, match="Invalid parallel dims"):
        ParallelDims(dp_replicate=1, dp_shard=3, cp=1, tp=2, pp=1, ep=1, world_size=8)


def test_torchtitan_rejects_what_it_cannot_express(tmp_path):
    with pytest.raises(InputError) as err:
        emit(plan("gpt-dense"), "torchtitan", tmp_path)
    assert "no model configuration with this shape" in str(err.value)
    with pytest.raises(InputError) as err:
        emit(plan("zero1-offload"), "torchtitan", tmp_path)
    message = str(err.value)
    for what in ("ZeRO stage 1", "every block", "one switch"):
        assert what in message, message


def test_tensor_parallel_without_sequence_parallel(tmp_path):
    base = plan("llama-gqa-fsdp")
    p = base.__class__(model=base.model, cluster=base.cluster, strategy=base.strategy.with_(sp=False))
    _, config, dims = _run(tmp_path, p)
    assert dims.tp == 2 and config.parallelism.enable_sequence_parallel is False


def _deepseek(**strategy) -> Plan:
    base = plan("moe-deepseek-fsdp-ep-bf16")
    st = base.strategy.with_(**strategy)
    st.validate(base.model, base.cluster)
    return Plan(model=base.model, cluster=base.cluster, strategy=st)


def test_torchtitan_rejects_what_it_cannot_express_for_moe(tmp_path):
    """No separate expert tensor-parallel degree; ep never spans data-parallel replicas; only
    the MoE shapes its registry ships (Mixtral is not one); dropless routing only."""
    cases = {
        "etp must be 1": dict(dp=16, tp=2, sp=True, ep=16, etp=2),
        "etp must be 2": dict(dp=16, tp=2, sp=True, ep=1, etp=1),
        "outside the sharded ranks": dict(zero=0, ep=8),
    }
    for message, strategy in cases.items():
        with pytest.raises(InputError, match=message):
            emit(_deepseek(**strategy), "torchtitan", tmp_path)
    check(_deepseek(dp=16, tp=2, sp=True, ep=16, etp=1), "torchtitan")
    check(_deepseek(dp=16, tp=2, sp=True, ep=1, etp=2), "torchtitan")
    with pytest.raises(InputError, match="no model configuration with this shape"):
        emit(plan("moe-mixtral-ep"), "torchtitan", tmp_path)
    base = plan("moe-deepseek-fsdp-ep-bf16")
    arch = replace(base.model.arch, moe=replace(base.model.arch.moe, capacity_factor=1.25))
    with pytest.raises(InputError, match="no model configuration with this shape"):
        check(Plan(model=replace(base.model, arch=arch), cluster=base.cluster,
                   strategy=base.strategy), "torchtitan")
    assert not list(tmp_path.iterdir())
