"""`fmplan presets`: list the shipped devices, clusters and models."""
from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from cli.options import JsonOpt
from planner import presets
from planner.loading import load_cluster, load_device, load_model


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("presets")(presets_command)


def presets_command(as_json: JsonOpt = False) -> None:
    """List shipped presets (clusters take `-<N>n` for N nodes, e.g. dgx-h100-128n)."""
    from cost_models.flops import total_params  # the cost model loads only when this runs
    devices = [load_device(n) for n in presets.names("devices")]
    clusters = [load_cluster(n) for n in presets.names("clusters")]
    models = [load_model(n) for n in presets.names("models")]
    if as_json:
        typer.echo(json.dumps({
            "devices": [{"name": d.name, "bf16_tflops": d.peak_tflops["bf16"], "hbm_gib": d.hbm_gib,
                         "hbm_bw_GBps": d.hbm_bw_GBps} for d in devices],
            "clusters": [{"name": c.name, "gpu": c.device.name, "gpus_per_node": c.gpus_per_node,
                          "intra_node_bw_GBps": c.intra_node_bw_GBps,
                          "inter_node_bw_GBps": c.inter_node_bw_GBps} for c in clusters],
            "models": [{"name": m.name, "params_b": total_params(m) / 1e9, "layers": m.arch.layers,
                        "hidden": m.arch.hidden, "seq_len": m.training.seq_len} for m in models],
        }, indent=2))
        return
    console = Console()
    table = Table(title="devices")
    for col in ("name", "bf16 TFLOP/s", "HBM GiB", "HBM GB/s"):
        table.add_column(col)
    for d in devices:
        table.add_row(d.name, f"{d.peak_tflops['bf16']:g}", f"{d.hbm_gib:g}", f"{d.hbm_bw_GBps:g}")
    console.print(table)
    table = Table(title="clusters (per node; add -<N>n for N nodes)")
    for col in ("name", "gpu", "GPUs/node", "intra GB/s", "inter GB/s per GPU"):
        table.add_column(col)
    for c in clusters:
        table.add_row(c.name, c.device.name, str(c.gpus_per_node), f"{c.intra_node_bw_GBps:g}",
                      f"{c.inter_node_bw_GBps:g}")
    console.print(table)
    table = Table(title="models")
    for col in ("name", "params (B)", "layers", "hidden", "heads/kv", "seq", "batch"):
        table.add_column(col)
    for m in models:
        table.add_row(m.name, f"{total_params(m) / 1e9:.2f}", str(m.arch.layers), str(m.arch.hidden),
                      f"{m.arch.heads}/{m.arch.kv_heads}", str(m.training.seq_len),
                      str(m.training.global_batch))
    console.print(table)
