"""Apply a Strategy to one model (or pipeline chunk) with torch's native parallelism.

The recipe reads as torchtitan's `parallelize_llama`: tensor (+ sequence) parallelism first, since
it replaces parameters with DTensor shards; then activation checkpointing, which wraps blocks
whose parameters are already sharded; then data parallelism (FSDP2 or DDP) last, because it must
see the final parameters and module structure to shard or bucket them.

ZeRO mapping:
* zero 0: DDP (gradient buckets are the grads: gradient_as_bucket_view). With pipeline or
  tensor parallelism DDP does not work here (its bucket rebuild asserts under the pipeline
  schedule's split backward; it cannot bucket DTensor shards), and FSDP2 as pure replication
  (a shard group of one) would copy every parameter into a second, unsharded buffer for the
  forward and backward, which no ZeRO-0 engine holds; so there the modules stay unwrapped and
  `reduce_dense_grads` all-reduces their gradients over dp after the last micro-batch (DDP's
  arithmetic without its overlap).
* zero 1: the same data parallelism as zero 0, with `zero.ShardedAdam`: optimizer states
  sharded in exact 1/dp parts (Megatron-Core's distributed optimizer layout).
* zero 2: FSDP2 `fully_shard(reshard_after_forward=False)`: parameters, grads and optimizer
  states sharded at rest, parameters kept unsharded from the forward until the backward ends.
* zero 3: FSDP2 `fully_shard` resharding after the forward (per block; the root group holding
  the embedding, final norm and output stays unsharded, as they are used right away again).
Offload maps to FSDP2's `CPUOffloadPolicy`, which keeps sharded parameters, gradients and
optimizer states on the host (and runs the optimizer there); it needs zero >= 2.

Routed experts (MoE models) stay outside DDP and FSDP2 (they differ between the ranks of an
expert-parallel group): `moe.reduce_expert_grads` reduces their gradients over the expert
data-parallel group, and under ZeRO-1 their states shard over that group.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.distributed.tensor.parallel import (ColwiseParallel, PrepareModuleInput,
                                               RowwiseParallel, SequenceParallel,
                                               parallelize_module)
from torch.nn.parallel import DistributedDataParallel

from planner.runtime.model import Decoder
from planner.runtime.moe import MoEFeedForward, expert_parameters
from planner.runtime.zero import ShardGroup, ShardedAdam
from planner.strategy import Strategy

LEARNING_RATE = 1e-3
"""Adam learning rate of the validation runs (large enough that steps change the loss)."""


def apply_tensor_parallel(model: Decoder, tp_mesh: DeviceMesh, sp: bool) -> None:
    """Megatron-style TP on every block, the embedding and the output layer (torchtitan's plan).

    Column-parallel QKV / w1 / w3, row-parallel wo / w2; with sequence parallelism the norms and
    residual stream are split along the sequence (Shard(1)) and gathered before each TP region.
    The output layer keeps its logits vocab-sharded (Shard(-1)) for a vocab-parallel loss.
    MoE blocks take `_moe_plan` for their MLP.
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
        }
        if isinstance(block.feed_forward, MoEFeedForward):
            plan.update(_moe_plan(block.feed_forward))
        else:
            plan.update(_mlp_plan("feed_forward", block.feed_forward, stream))
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


def _mlp_plan(prefix: str, mlp: nn.Module, stream) -> dict:
    """Megatron's MLP: gather the input, column-parallel w1 (and w3), row-parallel w2."""
    plan = {prefix: PrepareModuleInput(input_layouts=(stream,), desired_input_layouts=(Replicate(),)),
            f"{prefix}.w1": ColwiseParallel(), f"{prefix}.w2": RowwiseParallel(output_layouts=stream)}
    if mlp.w3 is not None:
        plan[f"{prefix}.w3"] = ColwiseParallel()
    return plan


def _moe_plan(moe: MoEFeedForward) -> dict:
    """An MoE MLP under TP + SP (Megatron-Core): each TP rank routes its own sequence shard
    (the layer gets its local tensor), the router is replicated like a norm (SequenceParallel
    style: its gradient is summed over tp), the shared expert is a tensor-parallel MLP, and the
    routed experts are left to expert (tensor) parallelism."""
    plan = {"feed_forward": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Shard(1),),
                                               use_local_output=True),
            "feed_forward.router": SequenceParallel(use_local_output=True)}
    if moe.shared is not None:
        plan.update(_mlp_plan("feed_forward.shared", moe.shared, Shard(1)))
    return plan


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


def apply_data_parallel(model: nn.Module, st: Strategy, dp_mesh: DeviceMesh | None) -> nn.Module:
    """Wrap `model` for the dp group by the plan's ZeRO stage (module docstring); dp = 1, or
    ZeRO-0/1 under PP or TP: as is. Routed experts are left out (module docstring)."""
    if dp_mesh is None or dense_grads_by_hand(st):
        return model
    experts = expert_parameters(model)
    if st.zero >= 2:
        offload = st.offload_optimizer or st.offload_params
        policy = CPUOffloadPolicy(pin_memory=torch.cuda.is_available()) if offload else OffloadPolicy()
        ignored = {p for _, p in experts}
        for block in model.layers.values():
            fully_shard(block, mesh=dp_mesh, reshard_after_forward=st.zero == 3,
                        offload_policy=policy, ignored_params=ignored)
        fully_shard(model, mesh=dp_mesh, reshard_after_forward=False, offload_policy=policy,
                    ignored_params=ignored)
        return model
    if experts:
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            model, [name for name, _ in experts])
    return DistributedDataParallel(model, process_group=dp_mesh.get_group(),
                                   gradient_as_bucket_view=True, broadcast_buffers=False)


def dense_grads_by_hand(st: Strategy) -> bool:
    """Whether data parallelism runs without a wrapper (`reduce_dense_grads`): ZeRO-0/1 with
    dp > 1 under PP or TP (module docstring)."""
    return st.dp > 1 and st.zero <= 1 and (st.pp > 1 or st.tp > 1)


@torch.no_grad()
def reduce_dense_grads(modules: list[nn.Module], dp_group: dist.ProcessGroup, dp: int) -> None:
    """Average the gradients of every parameter but the routed experts over the dp ranks, for
    modules `apply_data_parallel` left unwrapped (ZeRO-0/1 under PP or TP); a DTensor's local
    shard is averaged with the same shard on the other dp ranks."""
    for module in modules:
        for name, p in module.named_parameters():
            if p.grad is None or ".experts." in name:
                continue
            grad = p.grad.to_local() if isinstance(p.grad, DTensor) else p.grad
            dist.all_reduce(grad, group=dp_group)
            grad.div_(dp)


def build_optimizer(modules: list[nn.Module], st: Strategy, dp_mesh: DeviceMesh | None,
                    expert_dp_group: dist.ProcessGroup | None = None) -> torch.optim.Optimizer:
    """Adam over the parameters of `modules`; under ZeRO-1 `zero.ShardedAdam`, which shards the
    dense parameters' states over dp and the routed experts' over `expert_dp_group`.

    Adam updates one parameter at a time (fused kernels on CUDA, as Megatron's and DeepSpeed's
    fused Adam; the per-parameter loop on CPU) rather than torch's default multi-tensor path,
    whose temporaries (e.g. the sqrt of every second moment at once) add a whole fp32 copy of
    the parameters at the optimizer step, which no training framework's peak contains."""
    params = [p for m in modules for p in m.parameters()]
    on_cuda = params[0].device.type == "cuda"
    options = {"lr": LEARNING_RATE, "fused": True} if on_cuda else {"lr": LEARNING_RATE, "foreach": False}
    if st.zero != 1:
        return torch.optim.Adam(params, **options)
    experts = {id(p) for m in modules for _, p in expert_parameters(m)}
    dense_group = dp_mesh.get_group() if dp_mesh is not None else None
    return ShardedAdam([ShardGroup([p for p in params if id(p) not in experts], dense_group),
                        ShardGroup([p for p in params if id(p) in experts], expert_dp_group)],
                       **options)


def optimizer_states(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Tensors the optimizer holds on this rank (its own shard under ZeRO-1)."""
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
