"""Options shared by several commands: the model, the cluster and the strategy flags."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from planner.errors import InputError
from planner.limits import out_of_bounds
from planner.loading import load_cluster, load_model
from planner.specs import ClusterSpec, ModelSpec
from planner.strategy import Strategy

ModelArg = Annotated[str, typer.Argument(help="model.yaml, a HF config.json, or a preset name.")]
ClusterOpt = Annotated[Optional[str], typer.Option(
    "--cluster", "-c", help="cluster.yaml or preset (e.g. dgx-h100, dgx-h100-128n).")]
NodesOpt = Annotated[Optional[int], typer.Option("--nodes", "-n", help="Override the node count.")]
ProfileOpt = Annotated[Optional[Path], typer.Option("--profile", help="Profile file from `fmplan profile`, or a calibration from `fmplan calibrate`.")]
StackOpt = Annotated[Optional[str], typer.Option("--stack", help="Software stack: megatron-core, megatron-deepspeed, deepspeed, fsdp, llm-foundry-2023 or a stack YAML (default: from --target, else megatron-core).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def load_inputs(model: str, cluster: str | None, nodes: int | None) -> tuple[ModelSpec, ClusterSpec]:
    """Load the model and cluster named on the command line."""
    return load_model(model), load_cluster(cluster, nodes=nodes)


def check_options(**values: float | None) -> None:
    """Each given option value within the bound of its quantity (planner.limits), e.g.
    check_options(tokens=1e12, deadline_h=None); the error names the flag."""
    for quantity, value in values.items():
        problem = None if value is None else out_of_bounds(quantity, value)
        if problem:
            flag = "--" + quantity.removesuffix("_s").removesuffix("_h").replace("_", "-")
            raise InputError(f"{flag}: {problem}")


def parse_stage_layers(text: str | None) -> tuple[int, ...] | None:
    """`5,6,6,5` -> (5, 6, 6, 5)."""
    if not text:
        return None
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise InputError(f"--stage-layers expects comma-separated integers, got {text!r}",
                         hint="e.g. --stage-layers 5,6,6,5") from None
    return values


def strategy_from_options(*, dp: int | None, tp: int, pp: int, cp: int, vpp: int, mbs: int,
                          ep: int = 1, etp: int = 1,
                          zero: int, sp: bool | None, recompute: str, recompute_layers: int | None,
                          offload: str, stage_layers: str | None, overlap_grad_reduce: bool,
                          tp_comm_overlap: bool, cluster: ClusterSpec,
                          ep_comm_overlap: bool = False) -> Strategy:
    """Build a Strategy from CLI flags; dp defaults to the GPUs left after tp*pp*cp."""
    check_options(dp=dp, tp=tp, pp=pp, cp=cp, vpp=vpp, mbs=mbs, ep=ep, etp=etp, zero=zero,
                  recompute_layers=recompute_layers)
    if dp is None:
        if tp < 1 or pp < 1 or cp < 1 or cluster.gpus % (tp * pp * cp):
            raise InputError(f"tp*pp*cp = {tp}*{pp}*{cp} = {tp * pp * cp} does not divide the "
                             f"cluster's {cluster.gpus} GPUs", hint="pass --dp explicitly or change the degrees")
        dp = cluster.gpus // (tp * pp * cp)
    offload_opts = {"none": (False, False), "optimizer": (True, False), "params": (False, True),
                    "all": (True, True)}
    if offload not in offload_opts:
        raise InputError(f"--offload must be one of {', '.join(offload_opts)}, got {offload!r}")
    if recompute not in ("none", "selective", "full"):
        raise InputError(f"--recompute must be none, selective or full, got {recompute!r}")
    off_opt, off_params = offload_opts[offload]
    return Strategy(dp=dp, tp=tp, pp=pp, cp=cp, vpp=vpp, ep=ep, etp=etp, mbs=mbs, zero=zero,
                    sp=(tp > 1) if sp is None else sp, recompute=recompute,
                    recompute_layers=recompute_layers, offload_optimizer=off_opt,
                    offload_params=off_params, stage_layers=parse_stage_layers(stage_layers),
                    overlap_grad_reduce=overlap_grad_reduce, tp_comm_overlap=tp_comm_overlap,
                    ep_comm_overlap=ep_comm_overlap)
