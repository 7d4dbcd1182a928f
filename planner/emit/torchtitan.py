"""torchtitan 0.3.x: the `torchtitan.train` command line under torchrun, and a SLURM wrapper.
torchtitan 0.3 no longer reads TOML: `--module` and `--config` pick a config function from the
model's config registry, and `--<section>.<field>` flags override it (tyro). Flag names follow
torchtitan 0.3.0 (validated in tests/test_emit_torchtitan.py with `ConfigManager` and `ParallelDims`).

The recipe, top to bottom: model (by registry name), batch, parallel degrees, the layer->stage
split (explicit module names per model chunk), FSDP resharding and offload, activation checkpointing.
Mapping: ZeRO 0 = replicate (dp_replicate), ZeRO 2 = FSDP without resharding after forward,
ZeRO 3 = FSDP resharding after forward; `training.enable_cpu_offload` offloads parameters,
gradients and optimizer states together (FSDP2 CPUOffloadPolicy); ep is
`parallelism.expert_parallel_degree`, always set for MoE models (config functions set their own).

What torchtitan cannot express (LIMITS):
- a model shape its registry does not ship (KNOWN_MODELS; the model is chosen by name);
- TP communication overlap (async TP needs torch.compile; not emitted);
- ZeRO 1; offloading only the optimizer or only the parameters; offload without ZeRO 3;
- fp16 and fp8 through flags (fp8 needs a float8 config function);
- recompute of only some blocks: selective (per-op SAC) and full AC cover every block; one mode;
- MoE models other than its DeepSeek-V3 configs; capacity-factor (token-dropping) routing (its
  MoE is dropless, so such a model matches no shipped shape);
- a separate expert tensor-parallel degree: with ep = 1 experts are tensor-parallel over tp, with
  ep > 1 whole (etp = 1);
- an ep group across data-parallel replicas: it is carved from the FSDP-sharded, cp and tp ranks
  (`ParallelismConfig.expert_parallel_degree`: dp_shard * cp * tp = efsdp * ep), so with ZeRO 0
  (pure replication) ep divides cp * tp.
- the expert-parallel all-to-all overlap (strategy.ep_comm_overlap): `torchtitan.train` has no
  switch for it. Its DualPipeV schedule emits OVERLAP_F_B actions, but torch's pipelining runtime
  runs their forward and backward one after the other unless a custom function is registered
  (`register_custom_function`), which only the experimental graph trainer does
  (`torchtitan.experiments.graph_trainer`, `--compile.ep_overlap`, chunking one micro-batch in
  two under torch.compile): another entry point, not emitted.
"""
from __future__ import annotations

from planner.emit.launch import LaunchVar, quote, slurm_script, torchrun_script
from planner.plan import Plan
from planner.specs import MLASpec, MoESpec
from planner.targets import EngineLimits, KnownModel, chunk_sizes

KNOWN_MODELS = (
    KnownModel(name="llama3:llama3_8b", layers=32, hidden=4096, heads=32, kv_heads=8,
               ffn_hidden=14336, vocab=128256, mlp="swiglu"),
    KnownModel(name="llama3:llama3_70b", layers=80, hidden=8192, heads=64, kv_heads=8,
               ffn_hidden=28672, vocab=128256, mlp="swiglu"),
    KnownModel(name="deepseek_v3:deepseek_v3_16b", layers=27, hidden=2048, heads=16, kv_heads=16,
               ffn_hidden=10944, vocab=102400, mlp="swiglu",
               moe=MoESpec(routed_experts=64, top_k=6, expert_ffn_hidden=1408,
                           shared_ffn_hidden=2816, first_dense_layers=1, expert_bias=True),
               mla=MLASpec(q_lora_rank=0, kv_lora_rank=512, qk_nope_head_dim=128,
                           qk_rope_head_dim=64, v_head_dim=128)),
    KnownModel(name="deepseek_v3:deepseek_v3_671b", layers=61, hidden=7168, heads=128,
               kv_heads=128, ffn_hidden=18432, vocab=129280, mlp="swiglu",
               moe=MoESpec(routed_experts=256, top_k=8, expert_ffn_hidden=2048,
                           shared_ffn_hidden=2048, first_dense_layers=3,
                           score_function="sigmoid", expert_bias=True, router_groups=8,
                           router_group_top_k=4, routed_scaling_factor=2.5),
               mla=MLASpec(q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128,
                           qk_rope_head_dim=64, v_head_dim=128)),
)
"""`module:config` of torchtitan 0.3.0's config registries, with the shapes they build (checked
against torchtitan's registry in the tests). `llama3_405b` and `deepseek_v3_671b_float8` are left
out: they train with float8 linears (torchao), not the bf16 the planner costs. The DeepSeek-V3
configs are dropless MoE with multi-head latent attention (kv_heads = heads) and balance experts
with the auxiliary-loss-free bias (`load_balance_coeff` 1e-3); 671B routes with sigmoid scores
over 8 groups, 4 per token, like DeepSeek-V3 itself. Qwen3-MoE
(`qwen3_30b_a3b`) is left out: its head width (128) is not hidden/heads, which the planner's
architecture cannot state."""

LIMITS = EngineLimits(
    name="torchtitan", zero_stages=(0, 2, 3), precisions=("bf16",), tp_comm_overlap=False,
    offload_optimizer_zero_stages=(3,), offload_all_or_none=True, mixed_recompute=False,
    selective_counts="all", full_counts="all", stage_split="any", known_models=KNOWN_MODELS,
    expert_tensor_parallel="tp_without_ep", expert_parallel_from_shards=True,
    ep_comm_overlap=False)

SCRIPT = "torchtitan.sh"
VARIABLES = [
    LaunchVar(name="HF_ASSETS_PATH", help="directory with the Hugging Face tokenizer files"),
    LaunchVar(name="DUMP_FOLDER", help="where torchtitan writes checkpoints and logs",
              default="./outputs"),
    LaunchVar(name="STEPS", help="optimizer steps to run", default="1000"),
]


def render(plan: Plan, values: dict[str, str]) -> dict[str, str]:
    """torchtitan.sh (torchrun, single or multi-node) and slurm.sbatch."""
    notes = ["Run from a torchtitan 0.3 environment (python -m torchtitan.train)."]
    script = torchrun_script(
        plan, engine="torchtitan", variables=VARIABLES, exports={},
        program=["-m", "torchtitan.train"], args=arguments(plan), values=values, notes=notes)
    return {SCRIPT: script, "slurm.sbatch": slurm_script(plan, script=SCRIPT)}


def arguments(plan: Plan) -> list[str]:
    """`torchtitan.train` arguments, one flag (with its value) per entry, as bash words."""
    known = LIMITS.known_model(plan.model.arch)
    module, config_fn = known.name.split(":")
    groups = [[("--module", module), ("--config", config_fn),
               ("--hf_assets_path", '"$HF_ASSETS_PATH"'), ("--dump_folder", '"$DUMP_FOLDER"')],
              _training(plan), _parallelism(plan), _split(plan), _activation_checkpoint(plan)]
    return [" ".join(flag) for group in groups for flag in group]


def _training(plan: Plan) -> list[tuple[str, ...]]:
    st, train = plan.strategy, plan.model.training
    # With pipeline parallelism one local batch is split into pipeline micro-batches of mbs;
    # without it, torchtitan accumulates gradients over global / (local * dp) steps.
    local = st.mbs * st.micro_batches(plan.model) if st.pp > 1 else st.mbs
    flags = [("--training.local_batch_size", quote(local)),
             ("--training.global_batch_size", quote(train.global_batch)),
             ("--training.seq_len", quote(train.seq_len)), ("--training.steps", '"$STEPS"'),
             ("--training.mixed_precision_param", "bfloat16")]
    if st.offload_optimizer:
        flags.append(("--training.enable_cpu_offload",))
    if st.pp > 1:
        flags.append(("--training.disable_cuda_graphs",))  # CUDA graphs do not support PP in 0.3
    return flags


def _parallelism(plan: Plan) -> list[tuple[str, ...]]:
    st = plan.strategy
    replicate, shard = (st.dp, 1) if st.zero == 0 else (1, st.dp)
    reshard = {0: "default", 2: "never", 3: "always"}[st.zero]
    flags = [("--parallelism.data_parallel_replicate_degree", quote(replicate)),
             ("--parallelism.data_parallel_shard_degree", quote(shard)),
             ("--parallelism.fsdp_reshard_after_forward", reshard),
             ("--parallelism.tensor_parallel_degree", quote(st.tp))]
    if st.tp > 1 and not st.sp:
        flags.append(("--parallelism.no-enable_sequence_parallel",))
    flags += [("--parallelism.context_parallel_degree", quote(st.cp)),
              ("--parallelism.pipeline_parallel_degree", quote(st.pp))]
    if plan.model.arch.moe is not None:  # always: config functions set their own (671b: 2)
        flags.append(("--parallelism.expert_parallel_degree", quote(st.ep)))
    return flags


def _split(plan: Plan) -> list[tuple[str, ...]]:
    """Module names of every model chunk: chunk c of stage s is part c*pp + s (looped schedule)."""
    st = plan.strategy
    if st.pp == 1:
        return []
    schedule = "Interleaved1F1B" if st.vpp > 1 else "1F1B"
    return [("--parallelism.pipeline_parallel_schedule", schedule),
            ("--parallelism.pipeline_parallel_microbatch_size", quote(st.mbs)),
            ("--parallelism.module_fqns_per_model_part",
             *[quote(",".join(part)) for part in model_parts(plan)])]


def model_parts(plan: Plan) -> list[list[str]]:
    """torchtitan module FQNs per model part, in part order (embedding first, norm+head last)."""
    st = plan.strategy
    split = [s.layers for s in st.stages(plan.model)]
    chunks = [chunk_sizes(n, st.vpp) for n in split]
    parts, first = [], 0
    sizes = [chunks[s][c] for c in range(st.vpp) for s in range(st.pp)]
    for i, size in enumerate(sizes):
        part = [f"layers.{j}" for j in range(first, first + size)]
        first += size
        if i == 0:
            part.insert(0, "tok_embeddings")
        if i == len(sizes) - 1:
            part += ["norm", "lm_head"]
        parts.append(part)
    return parts


def _activation_checkpoint(plan: Plan) -> list[tuple[str, ...]]:
    stages = plan.strategy.stages(plan.model)
    mode = ("full" if any(s.full for s in stages) else
            "selective" if any(s.selective for s in stages) else "none")
    return [(f"activation-checkpoint:{mode}",)]
