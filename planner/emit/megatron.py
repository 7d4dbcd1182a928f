"""Megatron-LM: a torchrun launch of `pretrain_gpt.py` with the plan's shape, parallel and memory
flags, plus a SLURM wrapper. Argument names follow `megatron/training/arguments.py` of megatron-core
0.19.2 (validated in tests/test_emit_megatron.py with its own `parse_args` and `validate_args`).

The recipe, top to bottom: model shape (with multi-latent attention and the mixture-of-experts
block: experts, top-k, expert and shared-expert widths, dense first layers as `--moe-layer-freq`,
grouped GEMM, all-to-all dispatch, dropless or capacity-factor routing, aux-loss load balancing),
batch, precision, parallel degrees (expert degrees for MoE models), the layer->stage split, memory
savers (distributed optimizer, recompute, offload), then data, tokenizer and checkpoints.

What Megatron-LM cannot express (LIMITS):
- ZeRO 2/3: the distributed optimizer is ZeRO-1 (Megatron-FSDP is not emitted).
- TP communication overlap (`--tp-comm-overlap`, Transformer Engine) without sequence parallelism.
- parameter offload; optimizer offload (`--optimizer-cpu-offload`) needs the distributed optimizer.
- selective recompute covers every block (`--recompute-granularity selective` has no count);
  full recompute covers the first k blocks of every model chunk (`--recompute-method block`), the
  same k everywhere; one mode for the whole model.
- expert tensor parallelism (etp > 1) of experts with linear biases (`TransformerConfig`: "Bias in
  MoE is only supported when ETP==1").
- the expert-parallel all-to-all overlap (`--overlap-moe-expert-parallel-comm`) with pp > 1 and
  no virtual pipeline (`TransformerConfig`: "virtual_pipeline_model_parallel_size must be
  specified when pipeline_model_parallel_size > 1"); its other rules (ep > 1, all-to-all
  dispatcher, no full recompute, bf16/fp16 base precision) hold for every plan it emits.
Any layer split is expressible: even splits use the plain flags, first/last-only splits use
`--decoder-first/last-pipeline-num-layers`, anything else `--pipeline-model-parallel-layout`.
"""
from __future__ import annotations

from planner.emit.launch import LaunchVar, quote, slurm_script, torchrun_script
from planner.plan import Plan
from planner.targets import EngineLimits, chunk_sizes, uniform_chunk_count

LIMITS = EngineLimits(
    name="megatron", zero_stages=(0, 1), tp_comm_overlap_needs_sp=True, offload_params=False,
    offload_optimizer_zero_stages=(1,),
    mixed_recompute=False, selective_counts="all", full_counts="uniform", stage_split="any",
    expert_tensor_parallel_bias=False, ep_comm_overlap_needs_interleaved=True)

SCRIPT = "megatron.sh"
VARIABLES = [
    LaunchVar(name="MEGATRON_LM_DIR", help="a Megatron-LM checkout (holds pretrain_gpt.py)"),
    LaunchVar(name="DATA_PATH", help="Megatron indexed dataset prefix (path without .bin/.idx)"),
    LaunchVar(name="TOKENIZER_MODEL", help="Hugging Face tokenizer name or directory"),
    LaunchVar(name="CHECKPOINT_DIR", help="where checkpoints are saved and resumed from",
              default="checkpoints"),
    LaunchVar(name="TRAIN_ITERS", help="optimizer steps to run", default="1000"),
    LaunchVar(name="LR", help="peak learning rate", default="3e-4"),
    LaunchVar(name="SAVE_INTERVAL", help="steps between checkpoints", default="1000"),
]


def render(plan: Plan, values: dict[str, str]) -> dict[str, str]:
    """megatron.sh (torchrun, single or multi-node) and slurm.sbatch."""
    st = plan.strategy
    exports = {}
    notes = [f"Vocabulary comes from TOKENIZER_MODEL; the plan assumes {plan.model.arch.vocab} "
             "tokens (Megatron pads it to a multiple of 128 * tp)."]
    if st.tp > 1 or st.cp > 1:
        # Megatron needs one CUDA stream connection on Hopper and older so that TP/CP
        # communication kernels are scheduled in issue order (asserted by validate_args).
        exports["CUDA_DEVICE_MAX_CONNECTIONS"] = "1"
        if st.ep_comm_overlap:
            notes.append("CUDA_DEVICE_MAX_CONNECTIONS=1 (for TP/CP) lets the all-to-all overlap "
                         "only partly run beside computation on Hopper and older GPUs")
    elif st.ep_comm_overlap:
        # The all-to-all runs on its own stream beside computation: more hardware queues
        # (Megatron's validate_args warning; its MoE model zoo sets 32 with the overlap).
        exports["CUDA_DEVICE_MAX_CONNECTIONS"] = "32"
    if st.ep_comm_overlap:
        notes.append("The all-to-all overlap needs torch >= 2.6 and, with --delay-wgrad-compute "
                     "and --overlap-grad-reduce, Transformer Engine >= 2.8 (Megatron's checks).")
    script = torchrun_script(
        plan, engine="Megatron-LM", variables=VARIABLES, exports=exports,
        program=['"$MEGATRON_LM_DIR/pretrain_gpt.py"'], args=arguments(plan), values=values,
        notes=notes)
    return {SCRIPT: script, "slurm.sbatch": slurm_script(plan, script=SCRIPT)}


def arguments(plan: Plan) -> list[str]:
    """pretrain_gpt.py arguments, one flag (with its value) per entry, as bash words."""
    groups = [_model(plan), _attention(plan), _experts(plan), _batch_and_precision(plan),
              _parallel(plan), _split(plan), _memory(plan), _data()]
    return [" ".join(flag) for group in groups for flag in group]


def _model(plan: Plan) -> list[tuple[str, ...]]:
    arch, train = plan.model.arch, plan.model.training
    flags = [("--num-layers", quote(arch.layers)), ("--hidden-size", quote(arch.hidden)),
             ("--num-attention-heads", quote(arch.heads)),
             ("--ffn-hidden-size", quote(arch.ffn_hidden)), ("--seq-length", quote(train.seq_len)),
             ("--max-position-embeddings", quote(train.seq_len))]
    if arch.kv_heads != arch.heads and arch.mla is None:
        flags += [("--group-query-attention",), ("--num-query-groups", quote(arch.kv_heads))]
    if arch.mlp == "swiglu":
        flags.append(("--swiglu",))
    if arch.norm == "rmsnorm":
        flags.append(("--normalization", "RMSNorm"))
    if not arch.tied_embeddings:
        flags.append(("--untie-embeddings-and-output-weights",))
    position = "learned_absolute" if arch.learned_positions else "rope"
    flags.append(("--position-embedding-type", position))
    if not arch.linear_bias:
        flags.append(("--disable-bias-linear",))
    if not arch.dropout:
        flags += [("--attention-dropout", "0"), ("--hidden-dropout", "0")]
    backend = "flash" if train.flash_attention else "unfused"
    flags.append(("--attention-backend", backend))
    return flags


def _attention(plan: Plan) -> list[tuple[str, ...]]:
    """Multi-latent attention (DeepSeek-V2/V3); a query LoRA rank of 0 is a full-rank query. The
    compressed query and KV latents are RMS-normalised before their up-projections (DeepSeek-V2
    §2.1.2; the parameters cost_models.flops counts): Megatron builds those norms with
    `--qk-layernorm` (MLA's `q_layernorm`/`kv_layernorm`)."""
    mla = plan.model.arch.mla
    if mla is None:
        return []
    flags = [("--multi-latent-attention",), ("--qk-layernorm",)]
    if mla.q_lora_rank:
        flags.append(("--q-lora-rank", quote(mla.q_lora_rank)))
    return flags + [("--kv-lora-rank", quote(mla.kv_lora_rank)),
                    ("--qk-head-dim", quote(mla.qk_nope_head_dim)),
                    ("--qk-pos-emb-head-dim", quote(mla.qk_rope_head_dim)),
                    ("--v-head-dim", quote(mla.v_head_dim))]


def _experts(plan: Plan) -> list[tuple[str, ...]]:
    """The MoE block. Dispatch is all-to-all (the planner's cost model); routing is dropless unless
    the model sets a capacity factor, then tokens are dropped and padded to capacity (what the
    memory model charges). The layer pattern is written out as Megatron's list expression. The
    router follows the model's moe block (dtype, score function, group-limited routing); load
    balancing is the GShard aux loss at 1e-2 (Megatron's recommended start), or, with
    `expert_bias`, the auxiliary-loss-free bias plus DeepSeek-V3's small sequence-wise loss
    (§2.1.2: alpha = 1e-4)."""
    arch = plan.model.arch
    moe = arch.moe
    if moe is None:
        return []
    flags = [("--num-experts", quote(moe.routed_experts)), ("--moe-router-topk", quote(moe.top_k)),
             ("--moe-ffn-hidden-size", quote(moe.expert_ffn_hidden))]
    if moe.shared_ffn_hidden:
        flags.append(("--moe-shared-expert-intermediate-size", quote(moe.shared_ffn_hidden)))
    if moe.has_dense_blocks:
        dense, step = moe.first_dense_layers, moe.layer_interval
        groups = (arch.layers - dense) // step
        group = "[1]" if step == 1 else f"([0]*{step - 1}+[1])"
        flags.append(("--moe-layer-freq", quote(f"([0]*{dense}+{group}*{groups})")))
    flags += [("--moe-grouped-gemm",), ("--moe-token-dispatcher-type", "alltoall"),
              ("--moe-router-dtype", moe.router_dtype),
              ("--moe-router-score-function", moe.score_function)]
    if moe.routed_scaling_factor != 1.0:
        flags.append(("--moe-router-topk-scaling-factor", quote(moe.routed_scaling_factor)))
    if moe.router_groups > 1:
        flags += [("--moe-router-num-groups", quote(moe.router_groups)),
                  ("--moe-router-group-topk", quote(moe.router_group_top_k))]
    if moe.expert_bias:
        flags += [("--moe-router-enable-expert-bias",),
                  ("--moe-router-load-balancing-type", "seq_aux_loss"), ("--moe-aux-loss-coeff", "1e-4")]
    else:
        flags += [("--moe-router-load-balancing-type", "aux_loss"), ("--moe-aux-loss-coeff", "1e-2")]
    if moe.top_k == 1 and moe.score_function == "softmax":  # softmax over one chosen expert is 1
        flags.append(("--moe-router-pre-softmax",))
    if moe.capacity_factor is not None:
        flags += [("--moe-expert-capacity-factor", quote(moe.capacity_factor)),
                  ("--moe-pad-expert-input-to-capacity",)]
    return flags


def _batch_and_precision(plan: Plan) -> list[tuple[str, ...]]:
    st, train = plan.strategy, plan.model.training
    flags = [("--micro-batch-size", quote(st.mbs)),
             ("--global-batch-size", quote(train.global_batch))]
    if train.precision == "fp16":
        flags.append(("--fp16",))
    else:
        flags.append(("--bf16",))
    if train.precision == "fp8":
        flags.append(("--fp8-format", "hybrid"))
    flags.append(("--optimizer", "sgd" if train.optimizer == "sgd" else "adam"))
    return flags


def _parallel(plan: Plan) -> list[tuple[str, ...]]:
    st = plan.strategy
    flags = [("--tensor-model-parallel-size", quote(st.tp)),
             ("--pipeline-model-parallel-size", quote(st.pp))]
    if st.cp > 1:
        flags.append(("--context-parallel-size", quote(st.cp)))
    if plan.model.arch.moe is not None:  # unset, Megatron's expert tensor parallel degree is tp
        flags += [("--expert-model-parallel-size", quote(st.ep)),
                  ("--expert-tensor-parallel-size", quote(st.etp))]
    if st.sp:
        flags.append(("--sequence-parallel",))
    if st.tp_comm_overlap and st.tp > 1:
        flags.append(("--tp-comm-overlap",))
    if st.overlap_grad_reduce and st.dp > 1:
        flags.append(("--overlap-grad-reduce",))
    if st.ep_comm_overlap:
        # The combined 1F1B schedule (models/common/model_chunk_schedule_plan.py) with the
        # experts' weight gradients delayed to run beside the dispatch backward (the cost model's
        # moe.paired_exchange_s); both flags as Megatron-Core's MoE README pairs them.
        flags += [("--overlap-moe-expert-parallel-comm",), ("--delay-wgrad-compute",)]
    return flags


def _split(plan: Plan) -> list[tuple[str, ...]]:
    """The layer->stage split: plain flags when even, first/last flags, else an explicit layout."""
    st = plan.strategy
    split = [s.layers for s in st.stages(plan.model)]
    if st.pp == 1:
        return []
    even = len(set(split)) == 1
    if st.vpp == 1 and even:
        return []
    if st.vpp > 1 and even and split[0] % st.vpp == 0:
        return [("--num-layers-per-virtual-pipeline-stage", quote(split[0] // st.vpp))]
    if st.vpp == 1 and len(set(split[1:-1])) <= 1 and st.pp > 2:
        return [("--decoder-first-pipeline-num-layers", quote(split[0])),
                ("--decoder-last-pipeline-num-layers", quote(split[-1]))]
    return [("--pipeline-model-parallel-layout", quote(layout(split, st.vpp)))]


def layout(split: list[int], vpp: int) -> str:
    """Megatron's `--pipeline-model-parallel-layout`: pp*vpp segments separated by `|`; segment
    c*pp + s is chunk c of stage s (`PipelineParallelLayerLayout`); E embedding, t block, L loss."""
    pp = len(split)
    chunks = [chunk_sizes(n, vpp) for n in split]
    segments = []
    for c in range(vpp):
        for s in range(pp):
            text = f"t*{chunks[s][c]}" if chunks[s][c] else ""
            if c == 0 and s == 0:
                text = "E" + text
            if c == vpp - 1 and s == pp - 1:
                text += "L"
            segments.append(text)
    return "|".join(segments)


def _memory(plan: Plan) -> list[tuple[str, ...]]:
    st = plan.strategy
    flags = []
    if st.zero == 1:
        flags.append(("--use-distributed-optimizer",))
    if st.offload_optimizer:
        # The hybrid CPU/GPU optimizer reuses the precision-aware optimizer's code path.
        flags += [("--optimizer-cpu-offload",), ("--use-precision-aware-optimizer",)]
    stages = st.stages(plan.model)
    layers = [s.layers for s in stages]
    if any(s.selective for s in stages):
        flags.append(("--recompute-granularity", "selective"))
    full = [s.full for s in stages]
    if any(full):
        flags.append(("--recompute-granularity", "full"))
        if full == layers:
            flags += [("--recompute-method", "uniform"), ("--recompute-num-layers", "1")]
        else:
            per_chunk = uniform_chunk_count(full, layers, st.vpp)
            flags += [("--recompute-method", "block"), ("--recompute-num-layers", quote(per_chunk))]
    return flags


def _data() -> list[tuple[str, ...]]:
    return [("--tokenizer-type", "HuggingFaceTokenizer"), ("--tokenizer-model", '"$TOKENIZER_MODEL"'),
            ("--data-path", '"$DATA_PATH"'), ("--split", "99,1,0"),
            ("--train-iters", '"$TRAIN_ITERS"'), ("--lr", '"$LR"'),
            ("--save", '"$CHECKPOINT_DIR"'), ("--load", '"$CHECKPOINT_DIR"'),
            ("--save-interval", '"$SAVE_INTERVAL"')]
