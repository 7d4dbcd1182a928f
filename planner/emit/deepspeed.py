"""DeepSpeed: `ds_config.json` plus a torchrun launch of the user's training script (which calls
`deepspeed.initialize(args=...)` after `deepspeed.add_config_arguments(parser)`), and a SLURM
wrapper. Keys follow the DeepSpeed config schema of deepspeed 0.19.8 (validated in
tests/test_emit_deepspeed.py with `DeepSpeedConfig` and an mpu giving the data-parallel size).

The recipe, top to bottom: batch (train = micro x accumulation x dp), precision, ZeRO stage with
its offloads, optimizer, activation checkpointing, pipeline.

What DeepSpeed cannot express (LIMITS):
- tensor, sequence and context parallelism: they live in the model code (Megatron-DeepSpeed), not in
  ds_config; Ulysses sequence parallelism is not the planner's ring context parallelism.
- with pipeline parallelism (`PipelineModule`): ZeRO 0/1 only, no interleaving, and the
  `partition_method="uniform"` split, so every stage holds the same number of blocks.
- fp8; selective recompute (DeepSpeed checkpoints whole blocks, and the config cannot choose
  which: full recompute covers every block); optimizer offload needs ZeRO >= 1.
- mixture-of-experts models and expert parallelism (ep, etp): DeepSpeed-MoE is a layer
  (`deepspeed.moe.layer.MoE(ep_size=...)`) the model code builds; ds_config has no key for it,
  nor for overlapping its all-to-all with another micro-batch (strategy.ep_comm_overlap).
"""
from __future__ import annotations

import json

from planner.emit.launch import LaunchVar, slurm_script, torchrun_script
from planner.plan import Plan
from planner.targets import EngineLimits

LIMITS = EngineLimits(
    name="deepspeed", precisions=("bf16", "fp16"), tensor_parallel=False, sequence_parallel=False,
    tp_comm_overlap=False,
    pipeline_zero_stages=(0, 1), interleaved=False, context_parallel=False,
    offload_optimizer_zero_stages=(1, 2, 3), recompute_modes=("none", "full"),
    mixed_recompute=False, full_counts="all", stage_split="even", moe=False,
    expert_parallel=False, ep_comm_overlap=False)

SCRIPT = "deepspeed.sh"
CONFIG = "ds_config.json"
VARIABLES = [
    LaunchVar(name="TRAIN_SCRIPT",
              help="your training script: it calls deepspeed.initialize(args=...) and accepts "
                   "--deepspeed --deepspeed_config (deepspeed.add_config_arguments)"),
]


def render(plan: Plan, values: dict[str, str]) -> dict[str, str]:
    """ds_config.json, deepspeed.sh (torchrun, single or multi-node) and slurm.sbatch."""
    notes = ["Learning rate and optimizer hyper-parameters in ds_config.json are defaults to edit."]
    if plan.strategy.pp > 1:
        notes.append(f"Build the model as deepspeed.pipe.PipelineModule(num_stages="
                     f"{plan.strategy.pp}, partition_method='uniform') over the transformer blocks.")
    script = torchrun_script(
        plan, engine="DeepSpeed", variables=VARIABLES, exports={}, program=['"$TRAIN_SCRIPT"'],
        args=["--deepspeed", f'--deepspeed_config "$HERE/{CONFIG}"'], values=values, notes=notes)
    return {CONFIG: json.dumps(config(plan), indent=2) + "\n", SCRIPT: script,
            "slurm.sbatch": slurm_script(plan, script=SCRIPT)}


def config(plan: Plan) -> dict:
    """The ds_config mapping."""
    st, train = plan.strategy, plan.model.training
    out = {
        "train_batch_size": train.global_batch,
        "train_micro_batch_size_per_gpu": st.mbs,
        "gradient_accumulation_steps": st.micro_batches(plan.model),
        "gradient_clipping": 1.0,
        "steps_per_print": 10,
        "wall_clock_breakdown": False,
    }
    if train.precision == "fp16":
        out["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16}
    else:
        out["bf16"] = {"enabled": True}
    out["zero_optimization"] = _zero(plan)
    if train.optimizer == "adam":
        out["optimizer"] = {"type": "AdamW", "params": {
            "lr": 3e-4, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1}}
    recompute = any(s.full for s in st.stages(plan.model))
    if recompute:
        out["activation_checkpointing"] = {
            "partition_activations": False, "cpu_checkpointing": False,
            "contiguous_memory_optimization": False,
            "number_checkpoints": plan.model.arch.layers // st.pp,
            "synchronize_checkpoint_boundary": False, "profile": False}
    if st.pp > 1:
        out["pipeline"] = {"stages": st.pp, "partition": "uniform",
                           "activation_checkpoint_interval": 1 if recompute else 0}
    return out


def _zero(plan: Plan) -> dict:
    st = plan.strategy
    zero: dict = {"stage": st.zero}
    if st.zero >= 1:
        zero.update(overlap_comm=st.overlap_grad_reduce, contiguous_gradients=True,
                    reduce_scatter=True)
    if st.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if st.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    if st.zero == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return zero
