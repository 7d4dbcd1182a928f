"""`fmplan estimate`: the cost of one strategy, as a rich breakdown or one JSON object."""
from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from cli.cmd_report import PngOpt, ReportOpt, write_report
from cli.options import (ClusterOpt, JsonOpt, ModelArg, NodesOpt, ProfileOpt, StackOpt, load_inputs,
                         strategy_from_options)


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("estimate")(estimate_command)


def estimate_command(
    model: ModelArg,
    cluster: ClusterOpt = None,
    nodes: NodesOpt = None,
    profile: ProfileOpt = None,
    stack: StackOpt = None,
    tp: Annotated[int, typer.Option("--tp", help="Tensor-parallel degree.")] = 1,
    pp: Annotated[int, typer.Option("--pp", help="Pipeline stages.")] = 1,
    dp: Annotated[Optional[int], typer.Option("--dp", help="Data-parallel degree (default: the rest).")] = None,
    cp: Annotated[int, typer.Option("--cp", help="Context-parallel degree.")] = 1,
    vpp: Annotated[int, typer.Option("--vpp", help="Virtual pipeline chunks per stage.")] = 1,
    ep: Annotated[int, typer.Option("--ep", help="Expert-parallel degree (MoE).")] = 1,
    etp: Annotated[int, typer.Option("--etp", help="Expert tensor-parallel degree (MoE).")] = 1,
    mbs: Annotated[int, typer.Option("--mbs", help="Micro-batch size (sequences).")] = 1,
    zero: Annotated[int, typer.Option("--zero", help="ZeRO stage 0-3.")] = 0,
    sp: Annotated[Optional[bool], typer.Option("--sp/--no-sp", help="Sequence parallelism (default: on when tp > 1).")] = None,
    recompute: Annotated[str, typer.Option("--recompute", help="none, selective or full.")] = "none",
    recompute_layers: Annotated[Optional[int], typer.Option("--recompute-layers", help="Blocks per stage recomputed (default all).")] = None,
    offload: Annotated[str, typer.Option("--offload", help="none, optimizer, params or all.")] = "none",
    stage_layers: Annotated[Optional[str], typer.Option("--stage-layers", help="Blocks per stage, e.g. 5,6,6,5.")] = None,
    overlap_grad_reduce: Annotated[Optional[bool], typer.Option("--overlap-grad-reduce/--no-overlap-grad-reduce", help="Overlap DP reduction with backward (default: the stack's).")] = None,
    tp_comm_overlap: Annotated[bool, typer.Option("--tp-comm-overlap/--no-tp-comm-overlap", help="Overlap TP collectives with GEMMs.")] = False,
    ep_comm_overlap: Annotated[bool, typer.Option("--ep-comm-overlap/--no-ep-comm-overlap", help="Overlap the MoE all-to-all with another micro-batch's compute.")] = False,
    report: ReportOpt = None,
    png: PngOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Predict step time, per-GPU memory and MFU of one strategy."""
    from cli.render import render_estimate  # the cost model loads only when the command runs
    from cost_models.estimate import estimate
    from cost_models.hardware import from_cluster
    from planner.stacks import stack_for
    model_spec, cluster_spec = load_inputs(model, cluster, nodes)
    stack_spec = stack_for(stack)
    if overlap_grad_reduce is None:
        overlap_grad_reduce = stack_spec.overlap_grad_reduce
    strategy = strategy_from_options(
        dp=dp, tp=tp, pp=pp, cp=cp, vpp=vpp, ep=ep, etp=etp, mbs=mbs, zero=zero, sp=sp, recompute=recompute,
        recompute_layers=recompute_layers, offload=offload, stage_layers=stage_layers,
        overlap_grad_reduce=overlap_grad_reduce, tp_comm_overlap=tp_comm_overlap,
        ep_comm_overlap=ep_comm_overlap, cluster=cluster_spec)
    hardware = from_cluster(cluster_spec, stack_spec)
    if profile is not None:
        from cost_models.profile_format import apply_profile
        hardware = apply_profile(hardware, profile, cluster_spec)
    result = estimate(model_spec, cluster_spec, strategy, hardware)
    if report is not None or png is not None:
        from planner.report.sources import report_from_estimate
        for path in write_report(report_from_estimate(model_spec, cluster_spec, strategy, hardware),
                                 report, png):
            typer.echo(f"wrote {path}", err=True)
    if as_json:
        payload = {"model": model_spec.name, "cluster": cluster_spec.name,
                   "stack": stack_spec.name, "strategy": strategy.describe(), **result.to_dict()}
        typer.echo(json.dumps(payload, indent=2, sort_keys=True))
    else:
        render_estimate(model_spec, cluster_spec, strategy, result, stack=stack_spec.name)
