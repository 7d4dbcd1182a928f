"""One rank of a validation run: `python -m torch.distributed.run ... -m planner.runtime.worker JOB`.

JOB is a JSON file written by `planner.runtime.launch`: the runs (each a model mapping and a
resolved strategy, already adapted to the runtime), device, steps, output folder and, optionally,
a folder for the final parameters (`states_dir`). All runs share one process group (one torchrun
launch); each builds its own device meshes. Every rank writes `<out>/<run id>/rank<r>.json` with
its losses, step times and memory.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleInterleaved1F1B
from torch.distributed.tensor import DTensor
from torch.distributed.tensor.parallel import loss_parallel

from planner.loading import model_from_mapping
from planner.plan import strategy_from_mapping
from planner.runtime.measure import StepMeter, state_bytes
from planner.runtime.model import build_decoder, localize_experts, loss_fn, synthetic_batch
from planner.runtime.moe import reduce_expert_grads
from planner.runtime.parallelize import (apply_data_parallel, apply_recompute,
                                         apply_tensor_parallel, build_optimizer, dense_grads_by_hand,
                                         optimizer_states, reduce_dense_grads)
from planner.runtime.pipeline import chunk_model, stage_recompute_sets, virtual_stage_layers
from planner.runtime.states import save_states
from planner.specs import ModelSpec
from planner.strategy import Strategy

WARMUP_MIN = 3
"""Untracked steps first: the first allocates optimizer states and pipeline buffers (the
pipeline's shape inference runs autograd.grad, which MemTracker's module hooks do not support),
the second lets DDP rebuild its gradient buckets (a one-off second copy of all gradients). The
third runs under MemTracker with every persistent tensor in place: the steady-state peak."""


@dataclass
class Trainer:
    """The parallelised model of one rank and the step that trains it."""

    model: ModelSpec
    """The runtime model (fp32) being trained."""
    st: Strategy
    """The resolved strategy."""
    device: torch.device
    """Where this rank computes."""
    modules: list[nn.Module]
    """This rank's model chunks (one, or vpp under interleaved PP), as `apply_data_parallel`
    returned them (wrapped, or as is where gradients are reduced by `reducers`)."""
    optimizer: torch.optim.Optimizer
    """Adam over this rank's parameters (`zero.ShardedAdam` under ZeRO-1)."""
    schedule: Schedule1F1B | ScheduleInterleaved1F1B | None
    """The pipeline schedule, None without PP."""
    stages: list[PipelineStage]
    """This rank's pipeline stages (empty without PP)."""
    coords: dict[str, int]
    """This rank's index in the pp, dp and tp groups."""
    seed: int
    """Seed of the initial weights and of the synthetic data."""
    step_index: int = 0
    """Steps taken so far (selects the synthetic batch)."""
    reducers: list[Callable[[], None]] = field(default_factory=list)
    """Gradient reductions no DDP/FSDP2 wrapper does, run after the last micro-batch's backward:
    routed experts over the expert data-parallel group; all other parameters over dp when the
    modules are unwrapped (ZeRO-0/1 under PP or TP)."""

    def step(self) -> float:
        """One optimizer step on this rank's slice of the global batch; returns the global loss."""
        train, st = self.model.training, self.st
        inputs, labels = synthetic_batch(self.model.arch.vocab, train.global_batch, train.seq_len,
                                         self.step_index, self.seed)
        self.step_index += 1
        self.optimizer.zero_grad(set_to_none=False)  # the last step's gradients stay readable
        per_dp = train.global_batch // st.dp
        rows = slice(self.coords["dp"] * per_dp, (self.coords["dp"] + 1) * per_dp)
        inputs, labels = inputs[rows].to(self.device), labels[rows].to(self.device)
        with loss_parallel() if st.tp > 1 else contextlib.nullcontext():
            local = self._pipeline(inputs, labels) if st.pp > 1 else self._accumulate(inputs, labels)
        for reduce in self.reducers:
            reduce()
        self.optimizer.step()
        loss = torch.tensor([local], dtype=torch.float64, device=self.device)  # NCCL: on the GPU
        dist.all_reduce(loss)  # only last-stage ranks contribute; each tp rank holds the same loss
        return float(loss.item()) / (st.dp * st.tp)

    def _accumulate(self, inputs: torch.Tensor, labels: torch.Tensor) -> float:
        (model,) = self.modules
        m = self.st.micro_batches(self.model)
        total = 0.0
        for j in range(m):
            rows = slice(j * self.st.mbs, (j + 1) * self.st.mbs)
            sync = j == m - 1 or not hasattr(model, "no_sync")
            with contextlib.nullcontext() if sync else model.no_sync():
                loss = loss_fn(model(inputs[rows]), labels[rows]) / m
                loss.backward()
            total += _value(loss)
        return total

    def _pipeline(self, inputs: torch.Tensor, labels: torch.Tensor) -> float:
        first, last = self.coords["pp"] == 0, self.coords["pp"] == self.st.pp - 1
        losses: list[torch.Tensor] = []
        if first:
            self.schedule.step(inputs, target=labels, losses=losses)
        elif last:
            self.schedule.step(target=labels, losses=losses)
        else:
            self.schedule.step()
        return sum(_value(x) for x in losses) / len(losses) if last else 0.0


def _value(loss: torch.Tensor) -> float:
    if isinstance(loss, DTensor):
        loss = loss.full_tensor()
    return float(loss.detach().item())


def build_trainer(model: ModelSpec, st: Strategy, device: torch.device, seed: int) -> Trainer:
    """Build this rank's part of the model and apply the strategy (see `parallelize`)."""
    if st.cp > 1:
        raise NotImplementedError("the validation runtime does not run context parallelism")
    mesh = init_device_mesh(device.type, (st.pp, st.dp, st.tp), mesh_dim_names=("pp", "dp", "tp"))
    coords = {name: mesh[name].get_local_rank() for name in ("pp", "dp", "tp")}
    stages = st.stages(model)
    virtual = virtual_stage_layers(stages, st.vpp)
    full, selective = stage_recompute_sets(stages, virtual, coords["pp"], st.vpp)
    groups = _expert_groups(model, st, device)
    whole = build_decoder(model.arch, model.training.seq_len, tp=st.tp, pp=st.pp, seed=seed)
    n_virtual = st.pp * st.vpp
    ids = [c * st.pp + coords["pp"] for c in range(st.vpp)]
    if st.pp == 1:
        chunks = [whole]
    else:
        chunks = [chunk_model(whole, virtual[v], first=v == 0, last=v == n_virtual - 1) for v in ids]
    dp_mesh = mesh["dp"] if st.dp > 1 else None
    modules = []
    for chunk in chunks:
        localize_experts(chunk, groups["ep"], groups["etp"])
        chunk.to(device)
        if st.tp > 1:
            apply_tensor_parallel(chunk, mesh["tp"], st.sp)
        apply_recompute(chunk, full, selective)
        modules.append(apply_data_parallel(chunk, st, dp_mesh))
    optimizer = build_optimizer(modules, st, dp_mesh, groups["edp"])
    stages = [PipelineStage(m, v, n_virtual, device, group=mesh["pp"].get_group())
              for m, v in zip(modules, ids)] if st.pp > 1 else []
    schedule = _schedule(model, st, stages) if st.pp > 1 else None
    reducers = []
    if dense_grads_by_hand(st):
        reducers.append(partial(reduce_dense_grads, modules, dp_mesh.get_group(), st.dp))
    if model.arch.moe is not None:
        reducers.append(partial(reduce_expert_grads, modules, groups["edp"], st.dp))
    return Trainer(model=model, st=st, device=device, modules=modules, optimizer=optimizer,
                   schedule=schedule, stages=stages, coords=coords, seed=seed, reducers=reducers)


def _expert_groups(model: ModelSpec, st: Strategy, device: torch.device) -> dict[str, Any]:
    """This rank's expert-parallel ("ep"), expert tensor-parallel ("etp") and expert
    data-parallel ("edp") process groups, each None when of size one.

    Megatron-Core's layout: the tp*dp ranks of a pipeline stage (tp fastest, as in the dense
    mesh) are regrouped as (edp, ep, etp) with etp fastest, so etp = tp puts an expert's slices
    on the ranks of a tensor-parallel group, and ranks with the same (ep, etp) position hold the
    same expert slices (the expert data-parallel replicas)."""
    sizes = {"edp": st.expert_dp(), "ep": st.ep, "etp": st.etp}
    if model.arch.moe is None or st.tp * st.dp == 1:
        return {name: None for name in sizes}
    mesh = init_device_mesh(device.type, (st.pp, *sizes.values()), mesh_dim_names=("pp", *sizes))
    return {name: mesh[name].get_group() if size > 1 else None for name, size in sizes.items()}


def _schedule(model: ModelSpec, st: Strategy, stages: list[PipelineStage]):
    """1F1B for vpp = 1, interleaved 1F1B otherwise; micro-batch losses are averaged by the
    schedule's gradient scaling (scale_grads), as in gradient accumulation."""
    m = st.micro_batches(model)
    if st.vpp == 1:
        return Schedule1F1B(stages[0], n_microbatches=m, loss_fn=loss_fn)
    return ScheduleInterleaved1F1B(stages, n_microbatches=m, loss_fn=loss_fn)


def run(model: ModelSpec, st: Strategy, device: torch.device, *, steps: int, warmup: int,
        seed: int, states_path: Path | None = None) -> dict:
    """Train for warm-up + timed steps and return this rank's measurements; with `states_path`,
    also save its final parameters there (`states.save_states`)."""
    trainer = build_trainer(model, st, device, seed)
    meter = StepMeter(device)
    losses = [trainer.step() for _ in range(WARMUP_MIN - 1)]
    externals = [*trainer.modules, trainer.optimizer, *pipeline_buffers(trainer.stages)]
    losses += meter.tracked(trainer.step, 1, externals)
    losses += [trainer.step() for _ in range(warmup - WARMUP_MIN)]
    losses += meter.timed(trainer.step, steps)
    states = state_bytes(trainer.modules, optimizer_states(trainer.optimizer))
    if states_path is not None:
        save_states(trainer.modules, states_path)
    return {
        "rank": dist.get_rank(), "coords": trainer.coords, "stage": trainer.coords["pp"],
        "losses": losses, "step_times_s": meter.step_times_s, "median_step_s": meter.median_step_s,
        "states_bytes": states, "tracker_peak_bytes": meter.tracker_peak,
        "cuda_peak_bytes": meter.cuda_peak_bytes,
    }


def pipeline_buffers(stages: list[PipelineStage]) -> list[torch.Tensor]:
    """The receive buffers a pipeline stage allocated for every micro-batch (activations from the
    previous stage, gradients from the next), which persist across steps."""
    infos = [info for stage in stages
             for table in (stage.args_recv_info, stage.grad_recv_info)
             for chunk in table.values() for info in chunk]
    return [info.buffer for info in infos if getattr(info, "buffer", None) is not None]


def main(job_path: str) -> None:
    """Run every job entry on this rank and write its result file."""
    job = json.loads(Path(job_path).read_text())
    device_type = job["device"]
    if device_type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    try:
        _run_all(job, device)
    except Exception:
        folder = Path(job["out_dir"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"error_rank{dist.get_rank()}.txt").write_text(traceback.format_exc())
        raise
    finally:
        dist.destroy_process_group()


def _run_all(job: dict, device: torch.device) -> None:
    for entry in job["runs"]:
        model = model_from_mapping(entry["model"], source=f"job:{entry['id']}")
        st = strategy_from_mapping(entry["strategy"], source=f"job:{entry['id']}")
        states_path = None
        if job.get("states_dir"):
            states_path = Path(job["states_dir"]) / entry["id"] / f"rank{dist.get_rank()}.pt"
        result = run(model, st, device, steps=job["steps"], warmup=job["warmup"], seed=job["seed"],
                     states_path=states_path)
        out = Path(job["out_dir"]) / entry["id"]
        out.mkdir(parents=True, exist_ok=True)
        (out / f"rank{result['rank']}.json").write_text(json.dumps(result, indent=1))
        dist.barrier()


if __name__ == "__main__":
    main(sys.argv[1])
