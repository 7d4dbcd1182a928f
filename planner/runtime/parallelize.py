"""Apply a Strategy to one model (or pipeline chunk) with torch's native parallelism.

The recipe reads as torchtitan's `parallelize_llama`: tensor (+ sequence) parallelism first, since
it replaces parameters with DTensor shards; then activation checkpointing, which wraps blocks
whose parameters are already sharded; then data parallelism (FSDP2 or DDP) last, because it must
see the final parameters and module structure to shard or bucket them.

ZeRO mapping:
* zero 0: DDP (gradient buckets are the grads: gradient_as_bucket_view). With pipeline or
  tensor parallelism DDP does not work here (its bucket rebuild asserts under the pipeline
  schedule's split backward; it cannot bucket DTensor shards), so there FSDP2 runs as pure
  replication: HSDP over a (dp, 1) mesh, whose shard group of one leaves full parameters,
  gradients and optimizer states on every rank and all-reduces the gradients across dp.
* zero 1: DDP + ZeroRedundancyOptimizer (optimizer states partitioned by whole parameters over
  the dp ranks; see `build_optimizer`).
* zero 2: FSDP2 `fully_shard(reshard_after_forward=False)`: parameters, grads and optimizer
  states sharded at rest, parameters kept unsharded from the forward until the backward ends.
* zero 3: FSDP2 `fully_shard` resharding after the forward (per block; the root group holding
  the embedding, final norm and output stays unsharded, as they are used right away again).
Offload maps to FSDP2's `CPUOffloadPolicy`, which keeps sharded parameters, gradients and
optimizer states on the host (and runs the optimizer there); it needs zero >= 2.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.distributed.tensor.parallel import (ColwiseParallel, PrepareModuleInput,
                                               RowwiseParallel, SequenceParallel,
                                               parallelize_module)
from torch.nn.parallel import DistributedDataParallel

from planner.runtime.model import Decoder
from planner.runtime.moe import expert_parameters
from planner.strategy import Strategy

LEARNING_RATE = 1e-3
"""Adam learning rate of the validation runs (large enough that steps change the loss)."""


def apply_tensor_parallel(model: Decoder, tp_mesh: DeviceMesh, sp: bool) -> None:
    """Megatron-style TP on every block, the embedding and the output layer (torchtitan's plan).

    Column-parallel QKV / w1 / w3, row-parallel wo / w2; with sequence parallelism the norms and
    residual stream are split along the sequence (Shard(1)) and gathered before each TP region.
    The output layer keeps its logits vocab-sharded (Shard(-1)) for a vocab-parallel loss.
    """
    stream = Shard(1) if sp else Replicate()
    norm_plan = SequenceParallel() if sp else None
    if model.tok_embeddings is not None:
        parallelize_module(model.tok_embeddings, tp_mesh,
                           RowwiseParallel(input_layouts=Replicate(), output_layouts=stream))
    if model.pos_embeddings is not None:
        parallelize_module(model.pos_embeddings, tp_mesh,
                           RowwiseParallel(input_layouts=Replicate(), output_layouts=stream))
    for block in model.layers.values():
        plan = {
            "attention": PrepareModuleInput(input_layouts=(stream,), desired_input_layouts=(Replicate(),)),
            "attention.wq": ColwiseParallel(), "attention.wk": ColwiseParallel(),
            "attention.wv": ColwiseParallel(),
            "attention.wo": RowwiseParallel(output_layouts=stream),
            "feed_forward": PrepareModuleInput(input_layouts=(stream,), desired_input_layouts=(Replicate(),)),
            "feed_forward.w1": ColwiseParallel(),
            "feed_forward.w2": RowwiseParallel(output_layouts=stream),
        }
        if block.feed_forward.w3 is not None:
            plan["feed_forward.w3"] = ColwiseParallel()
        if norm_plan is not None:
            plan["attention_norm"] = norm_plan
            plan["ffn_norm"] = norm_plan
        parallelize_module(block, tp_mesh, plan)
    if model.norm is not None and norm_plan is not None:
        parallelize_module(model.norm, tp_mesh, norm_plan)
    if model.output is not None:
        parallelize_module(model.output, tp_mesh, ColwiseParallel(
            input_layouts=stream, output_layouts=Shard(-1), use_local_output=False))
    _keep_grads_sharded_like_params(model)


def _keep_grads_sharded_like_params(model: nn.Module) -> None:
    """DTensor's embedding backward yields a Replicate gradient for a Shard(0) (vocab-parallel)
    weight, so every TP rank would keep the full V x h gradient. Redistribute each gradient to
    its parameter's placements as it is produced: ranks then hold 1/tp of it, as Megatron does."""
    for param in model.parameters():
        if isinstance(param, DTensor):
            placements = param.placements
            param.register_hook(lambda grad, placements=placements: (
                grad.redistribute(placements=placements)
                if isinstance(grad, DTensor) and grad.placements != placements else grad))


def apply_recompute(model: Decoder, full_layers: set[str], selective_layers: set[str]) -> None:
    """Full recompute: checkpoint the whole block (only its input is kept). Selective: recompute
    only the attention core (Korthikanti et al. 2022 §5)."""
    for name in list(model.layers.keys()):
        if name in full_layers:
            model.layers[name] = checkpoint_wrapper(model.layers[name], preserve_rng_state=False)
        elif name in selective_layers:
            model.layers[name].attention.recompute_core = True


def apply_data_parallel(model: nn.Module, st: Strategy, dp_mesh: DeviceMesh | None,
                        replicate_mesh: DeviceMesh | None) -> nn.Module:
    """Wrap `model` for the dp group by the plan's ZeRO stage (module docstring); dp = 1: as is.
    `replicate_mesh` is the 2-D (dp, 1) mesh used for ZeRO-0 under PP or TP."""
    if dp_mesh is None:
        return model
    if st.zero == 1 and (st.pp > 1 or st.tp > 1):
        raise NotImplementedError("the validation runtime maps ZeRO-1 to ZeroRedundancyOptimizer, "
                                  "which it runs only without pipeline and tensor parallelism")
    if st.zero >= 2 or (st.zero == 0 and (st.pp > 1 or st.tp > 1)):
        mesh = dp_mesh if st.zero >= 2 else replicate_mesh
        offload = st.offload_optimizer or st.offload_params
        policy = CPUOffloadPolicy(pin_memory=torch.cuda.is_available()) if offload else OffloadPolicy()
        for block in model.layers.values():
            fully_shard(block, mesh=mesh, reshard_after_forward=st.zero == 3,
                        offload_policy=policy)
        fully_shard(model, mesh=mesh, reshard_after_forward=False, offload_policy=policy)
        return model
    # Routed experts differ between the ranks of an expert-parallel group: DDP must not average
    # them over dp (`moe.reduce_expert_grads` reduces them over the expert data-parallel group).
    experts = [name for name, _ in expert_parameters(model)]
    if experts:
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, experts)
    return DistributedDataParallel(model, process_group=dp_mesh.get_group(),
                                   gradient_as_bucket_view=True, broadcast_buffers=False)


def build_optimizer(params: list[nn.Parameter], st: Strategy,
                    dp_mesh: DeviceMesh | None) -> torch.optim.Optimizer:
    """Adam; under ZeRO-1 torch's ZeroRedundancyOptimizer, which assigns whole parameters to
    ranks (greedy by size), so a rank's share is only roughly 1/dp of the states.

    Adam updates one parameter at a time (fused kernels on CUDA, as Megatron's and DeepSpeed's
    fused Adam; the per-parameter loop on CPU) rather than torch's default multi-tensor path,
    whose temporaries (e.g. the sqrt of every second moment at once) add a whole fp32 copy of
    the parameters at the optimizer step, which no training framework's peak contains."""
    on_cuda = params[0].device.type == "cuda"
    options = {"lr": LEARNING_RATE, "fused": True} if on_cuda else {"lr": LEARNING_RATE, "foreach": False}
    if st.zero == 1 and dp_mesh is not None:
        return ZeroRedundancyOptimizer(params, optimizer_class=torch.optim.Adam,
                                       process_group=dp_mesh.get_group(), **options)
    return torch.optim.Adam(params, **options)


def optimizer_states(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Tensors the optimizer holds on this rank (the local partition under ZeRO-1)."""
    inner = optimizer.optim if isinstance(optimizer, ZeroRedundancyOptimizer) else optimizer
    return [v for state in inner.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
