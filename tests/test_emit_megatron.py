"""Megatron-LM emitter: the emitted megatron.sh, run in dry-run mode, gives pretrain_gpt.py an argv
that Megatron's own parse_args + validate_args (megatron-core 0.19.2) accept, with the plan's values."""
from __future__ import annotations

from dataclasses import replace

import pytest

from emit_cases import check_golden, dry_run, plan
from engine_parsers import megatron_arguments, megatron_transformer_config, megatron_validate
from planner.emit import emit
from planner.errors import InputError, InvalidStrategyError
from planner.loading import load_cluster, load_model
from planner.plan import Plan
from planner.strategy import Strategy

CASES = ["gpt-dense", "gpt-dense-fp8", "gpt-pp-fp16", "gpt-pp", "llama-gqa-selective", "pp-first-last", "pp-any-split-zero1",
         "vpp-even", "vpp-uneven-block", "cp", "zero1-offload", "moe-mixtral-ep",
         "moe-mixtral-capacity", "moe-top1", "moe-deepseek-ep-etp", "moe-llama4-interleaved",
         "moe-deepseek-ep-overlap"]
ENV = {"MEGATRON_LM_DIR": "/opt/Megatron-LM", "DATA_PATH": "/data/corpus_text_document",
       "TOKENIZER_MODEL": "meta-llama/Llama-3.1-8B"}


def _plan(case):
    if case == "pp-any-split-zero1":  # the same split with the distributed optimizer
        base = plan("pp-any-split")
        return base.__class__(model=base.model, cluster=base.cluster,
                              strategy=base.strategy.with_(zero=1))
    if case in ("moe-mixtral-capacity", "moe-top1"):  # dropping at capacity 1.25, padded; top-1
        base = plan("moe-mixtral-ep")
        change = dict(capacity_factor=1.25) if case == "moe-mixtral-capacity" else dict(top_k=1)
        arch = replace(base.model.arch, moe=replace(base.model.arch.moe, **change))
        return base.__class__(model=replace(base.model, arch=arch), cluster=base.cluster,
                              strategy=base.strategy)
    return plan(case)


def _megatron_args(tmp_path, case):
    p = _plan(case)
    files = emit(p, "megatron", tmp_path)
    argv = dry_run(tmp_path / "megatron.sh", ENV)
    script_at = argv.index("/opt/Megatron-LM/pretrain_gpt.py")
    exports = dict(line.removeprefix("export ").split("=", 1) for line in
                   (tmp_path / "megatron.sh").read_text().splitlines()
                   if line.startswith("export CUDA_DEVICE_MAX_CONNECTIONS="))
    args = megatron_validate(argv[script_at + 1:], exports, p.strategy.world)
    return p, files, argv, args


def _layers_per_stage(args, pp: int, layers: int) -> list[int]:
    """Blocks per pipeline rank as Megatron will build them, from its own layout parser."""
    if args.pipeline_model_parallel_layout is not None:
        from megatron.core.transformer.enums import LayerType
        from megatron.core.transformer.pipeline_parallel_layer_layout import (
            PipelineParallelLayerLayout)
        segments = PipelineParallelLayerLayout.parse_str_to_list(args.pipeline_model_parallel_layout)
        counts = [0] * pp
        for i, segment in enumerate(segments):
            counts[i % pp] += sum(1 for t in segment if t == LayerType.decoder)
        return counts
    first, last = args.decoder_first_pipeline_num_layers, args.decoder_last_pipeline_num_layers
    if first is None and last is None:
        return [layers // pp] * pp
    middle = (layers - first - last) // (pp - 2)
    return [first] + [middle] * (pp - 2) + [last]


@pytest.mark.parametrize("case", CASES)
def test_megatron_accepts_emitted_arguments(tmp_path, case):
    p, files, argv, args = _megatron_args(tmp_path, case)
    st, arch = p.strategy, p.model.arch
    assert argv[:2] == ["torchrun", "--nnodes"] or argv[:2] == ["torchrun", "--standalone"]
    assert (args.tensor_model_parallel_size, args.pipeline_model_parallel_size,
            args.context_parallel_size, args.data_parallel_size) == (st.tp, st.pp, st.cp, st.dp)
    assert (args.micro_batch_size, args.global_batch_size) == (st.mbs, p.model.training.global_batch)
    assert (args.num_layers, args.hidden_size, args.num_attention_heads, args.ffn_hidden_size) == (
        arch.layers, arch.hidden, arch.heads, arch.ffn_hidden)
    assert args.num_query_groups == (arch.kv_heads if arch.kv_heads != arch.heads else None) or \
        not args.group_query_attention
    assert args.swiglu == (arch.mlp == "swiglu")
    precision = p.model.training.precision
    assert (args.bf16, args.fp16, args.fp8) == (precision != "fp16", precision == "fp16",
                                                "hybrid" if precision == "fp8" else None)
    assert args.sequence_parallel == st.sp
    assert args.tp_comm_overlap == st.tp_comm_overlap
    assert args.overlap_moe_expert_parallel_comm == args.delay_wgrad_compute == st.ep_comm_overlap
    assert args.use_distributed_optimizer == (st.zero == 1)
    assert args.optimizer_cpu_offload == st.offload_optimizer
    vpp = args.virtual_pipeline_model_parallel_size or 1
    assert vpp == st.vpp
    stages = st.stages(p.model)
    assert _layers_per_stage(args, st.pp, arch.layers) == [s.layers for s in stages]
    recompute = {s.full and "full" or s.selective and "selective" for s in stages} - {0}
    assert (args.recompute_granularity or "none") == (recompute.pop() if recompute else "none")
    config = megatron_transformer_config(args)  # checks the split and recompute against the model
    assert (config.num_layers, config.recompute_granularity) == (arch.layers,
                                                                 args.recompute_granularity)
    _check_experts(p, args, config)
    check_golden(files, "megatron", case)


def _check_experts(p, args, config):
    """The MoE and MLA settings Megatron built (TransformerConfig) are the plan's."""
    st, arch = p.strategy, p.model.arch
    moe, mla = arch.moe, arch.mla
    assert config.multi_latent_attention == (mla is not None)
    # The combined 1F1B schedule's rules (vpp, ep, dispatcher, recompute, precision) are
    # checked by TransformerConfig itself.
    assert config.overlap_moe_expert_parallel_comm == config.delay_wgrad_compute == st.ep_comm_overlap
    if mla is not None:
        assert type(config).__name__ == "MLATransformerConfig"
        assert config.qk_layernorm  # the q/kv latent norms
        assert (config.q_lora_rank or 0, config.kv_lora_rank, config.qk_head_dim,
                config.qk_pos_emb_head_dim, config.v_head_dim) == (
            mla.q_lora_rank, mla.kv_lora_rank, mla.qk_nope_head_dim, mla.qk_rope_head_dim,
            mla.v_head_dim)
    if moe is None:
        assert config.num_moe_experts is None and args.expert_model_parallel_size == 1
        return
    assert (config.num_moe_experts, config.moe_router_topk, config.moe_ffn_hidden_size) == (
        moe.routed_experts, moe.top_k, moe.expert_ffn_hidden)
    assert config.moe_shared_expert_intermediate_size == (moe.shared_ffn_hidden or None)
    freq = config.moe_layer_freq
    pattern = freq if isinstance(freq, list) else [int(i % freq == 0) for i in range(arch.layers)]
    assert pattern == [int(moe.is_moe_layer(i)) for i in range(arch.layers)]
    assert (config.expert_model_parallel_size, config.expert_tensor_parallel_size) == (st.ep,
                                                                                       st.etp)
    # Megatron's expert data-parallel group: the ranks of one pipeline stage over ep * etp.
    assert st.world // (st.pp * st.ep * st.etp) == st.expert_dp()
    assert config.moe_grouped_gemm and config.moe_token_dispatcher_type == "alltoall"
    assert config.moe_expert_capacity_factor == moe.capacity_factor
    assert config.moe_pad_expert_input_to_capacity == (moe.capacity_factor is not None)
    assert config.moe_router_dtype == moe.router_dtype
    assert config.moe_router_score_function == moe.score_function
    assert config.moe_router_enable_expert_bias == moe.expert_bias
    assert (config.moe_router_topk_scaling_factor or 1.0) == moe.routed_scaling_factor
    assert (config.moe_router_num_groups or 1, config.moe_router_group_topk or 1) == (
        moe.router_groups, moe.router_group_top_k)
    balance = "seq_aux_loss" if moe.expert_bias else "aux_loss"
    assert config.moe_router_load_balancing_type == balance and config.moe_aux_loss_coeff > 0
    assert config.moe_router_pre_softmax == (moe.top_k == 1 and moe.score_function == "softmax")


def test_block_recompute_counts_per_chunk(tmp_path):
    _, _, _, args = _megatron_args(tmp_path, "vpp-uneven-block")
    # 4 blocks per stage over 2 chunks: the first 2 blocks of every chunk are recomputed.
    assert (args.recompute_method, args.recompute_num_layers) == ("block", 2)


def test_megatron_rejects_what_it_cannot_express(tmp_path):
    with pytest.raises(InputError) as err:
        emit(plan("zero3-offload"), "megatron", tmp_path)
    message = str(err.value)
    assert "ZeRO stage 3" in message and "parameter offload" in message
    assert not list(tmp_path.iterdir())


def test_megatron_rejects_overlap_without_interleaving(tmp_path):
    """Megatron's combined 1F1B schedule needs a virtual pipeline when pp > 1."""
    base = plan("moe-deepseek-ep-overlap")
    flat = Plan(model=base.model, cluster=base.cluster, strategy=base.strategy.with_(vpp=1))
    flat.strategy.validate(flat.model, flat.cluster)
    with pytest.raises(InputError, match=r"all-to-all overlap with a non-interleaved pipeline"):
        emit(flat, "megatron", tmp_path)


def test_overlap_rules_are_live(tmp_path):
    """TransformerConfig refuses the overlap with full recompute, which the planner's Strategy
    refuses too (so Megatron's rule and fmplan's agree)."""
    p, _, argv, args = _megatron_args(tmp_path, "moe-deepseek-ep-overlap")
    args.recompute_granularity, args.recompute_method, args.recompute_num_layers = "full", "uniform", 1
    with pytest.raises(AssertionError, match="disable full recomputation"):
        megatron_transformer_config(args)
    with pytest.raises(InvalidStrategyError, match="full recompute"):
        p.strategy.with_(recompute="full", stage_recompute=None).validate(p.model, p.cluster)


def test_megatron_rejects_tensor_parallel_experts_with_biases(tmp_path):
    """Qwen2-57B-A14B has linear biases: Megatron builds biased experts only with etp = 1."""
    model, cluster = load_model("qwen2-57b-a14b"), load_cluster("dgx-h100-2n")
    strategy = Strategy(dp=8, tp=2, sp=True, ep=4, etp=2, zero=1)
    strategy.validate(model, cluster)
    with pytest.raises(InputError, match=r"etp=2\) of experts with linear biases"):
        emit(Plan(model=model, cluster=cluster, strategy=strategy), "megatron", tmp_path)
    whole = Plan(model=model, cluster=cluster, strategy=strategy.with_(ep=8, etp=1))
    whole.strategy.validate(model, cluster)
    emit(whole, "megatron", tmp_path)
    argv = dry_run(tmp_path / "megatron.sh", ENV)
    args = megatron_validate(argv[argv.index("/opt/Megatron-LM/pretrain_gpt.py") + 1:],
                             {"CUDA_DEVICE_MAX_CONNECTIONS": "1"}, whole.strategy.world)
    config = megatron_transformer_config(args)
    assert config.add_bias_linear
    _check_experts(whole, args, config)


def test_transformer_config_catches_a_wrong_layout():
    """The layout check is live: a layout with 81 blocks for an 80-layer model is refused."""
    args = megatron_validate([*_SMALL, "--num-layers", "80", "--pipeline-model-parallel-size", "4",
                              "--pipeline-model-parallel-layout", "Et*18|t*20|t*22|t*21L"], {}, 8)
    with pytest.raises(AssertionError, match="must match num_layers"):
        megatron_transformer_config(args)


_SMALL = ["--hidden-size", "64", "--num-attention-heads", "4", "--seq-length", "128",
          "--max-position-embeddings", "128", "--micro-batch-size", "1", "--train-iters", "1",
          "--lr", "1e-4", "--tokenizer-type", "NullTokenizer", "--vocab-size", "128", "--mock-data"]


def test_validate_args_catches_a_broken_argv():
    """The parser is live: a world size the degrees do not divide is refused."""
    megatron_arguments()
    with pytest.raises(AssertionError, match="not divisible"):
        megatron_validate([*_SMALL, "--num-layers", "4", "--tensor-model-parallel-size", "3"], {}, 8)

