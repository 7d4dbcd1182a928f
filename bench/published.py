"""Map published training runs (../shared/data/published_runs_dev.yaml) onto fmplan's inputs.

Each record becomes a ModelSpec, a ClusterSpec and a Strategy, and its measured number becomes a
step time using the record's own FLOP convention (README of the data set). Rules for what a
source leaves unstated are written here once and applied to every record alike:

* ffn_hidden missing -> 4h; kv_heads missing -> heads (the sources are GPT-style MHA models).
* GPT-style blocks: GELU MLP, LayerNorm, biases, learned positions, tied embeddings; dropout on
  (Megatron's default) for the 2021/2022 papers. Those papers predate fused attention, so
  flash_attention is off for them; the 2024 Megatron-Core H100 table used TE fused attention.
* Narayanan et al. ran `--DDP-impl torch` (PyTorch DDP: bucketed all-reduce overlapped with the
  last micro-batch's backward, 16-bit gradients) but Megatron's 2021 pipeline schedules reduce
  gradients after the pipeline flush, so only their pp = 1 runs overlap; Korthikanti et al. state
  there is no overlap of the gradient all-reduce; the Megatron-Core H100 table lists
  --overlap-grad-reduce, --overlap-param-gather and --tp-comm-overlap.
* Unstated micro-batch size / recompute (the H100 table): fmplan picks the fastest setting that
  fits among mbs in {1, 2, 4} and recompute in {none, selective, full}, as a user tuning the run
  would; the choice is printed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from cost_models.estimate import estimate
from cost_models.flops import model_flops_per_step
from planner.loading import load_cluster
from planner.specs import Architecture, ModelSpec, Training
from planner.strategy import Strategy

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "published_runs_dev.yaml"


@dataclass
class Case:
    """One published run, mapped."""

    record: dict
    model: ModelSpec
    cluster_name: str
    nodes: int
    strategy: Strategy | None
    """None when micro-batch/recompute are unstated (choose_unstated fills them)."""
    measured_step_s: float | None
    measured_layer_ms: tuple[float, float] | None
    """(forward, backward) per-layer milliseconds (Korthikanti Table 4)."""
    common: dict
    """Strategy fields the source states (all but micro-batch and recompute)."""


def load_records(path: Path = DATA) -> list[dict]:
    """All records of the data set."""
    return yaml.safe_load(path.read_text())


def _model(rec: dict) -> ModelSpec:
    m = rec["model"]
    modern = rec["group"].startswith("megatron_readme")
    h = m["hidden"]
    arch = Architecture(
        layers=m["layers"], hidden=h, heads=m["heads"], kv_heads=m["kv_heads"] or m["heads"],
        ffn_hidden=m["ffn_hidden"] or 4 * h, vocab=m["vocab"], mlp="gelu", tied_embeddings=True,
        learned_positions=True, norm="layernorm", linear_bias=True, dropout=not modern)
    precision = "fp16" if "fp16" in str(rec["precision"]).lower() or not modern else "bf16"
    torch_ddp = rec["group"].startswith("narayanan")
    train = Training(seq_len=m["seq_len"], global_batch=rec["batch"]["global_batch_seqs"],
                     precision=precision, grads_fp32=not torch_ddp, flash_attention=modern)
    return ModelSpec(name=rec["id"], arch=arch, training=train)


def _recompute(rec: dict) -> str | None:
    mode = (rec["parallel"]["recompute"] or {}).get("mode")
    if mode is None:
        return None
    mode = str(mode)
    if mode.startswith("selective"):
        return "selective"
    return "full" if mode.startswith("full") else "none"


def _measured_step_s(rec: dict, model: ModelSpec) -> float | None:
    meas, hw = rec["measured"], rec["hardware"]
    n, conv = hw["num_gpus"], rec["flop_convention"]
    if meas.get("step_time_s"):
        return float(meas["step_time_s"])
    t = model.training
    b, s, L, h, V = t.global_batch, t.seq_len, model.arch.layers, model.arch.hidden, model.arch.vocab
    if conv == "megatron_eq3_with_recompute" and meas.get("tflops_per_gpu"):
        flops = 96 * b * s * L * h * h * (1 + s / (6 * h) + V / (16 * L * h))
        return flops / (meas["tflops_per_gpu"] * 1e12 * n)
    if conv == "megatron_core_num_floating_point_operations_r0.8" and meas.get("tflops_per_gpu"):
        return model_flops_per_step(model) / (meas["tflops_per_gpu"] * 1e12 * n)
    if conv == "korthikanti_model_and_hardware_flops" and meas.get("mfu_pct"):
        flops = 72 * b * L * s * h * h * (1 + s / (6 * h) + V / (12 * h * L))
        return flops / (meas["mfu_pct"] / 100 * hw["peak_tflops_used"] * 1e12 * n)
    return None


def to_case(rec: dict) -> Case:
    """Map one record."""
    model = _model(rec)
    p, hw, batch = rec["parallel"], rec["hardware"], rec["batch"]
    cluster = "dgx-a100" if "A100" in hw["gpu"] else "dgx-h100"
    nodes = math.ceil(hw["num_gpus"] / 8)
    modern = rec["group"].startswith("megatron_readme")
    common = dict(
        dp=p["dp"], tp=p["tp"], pp=p["pp"], cp=p["cp"] or 1, vpp=p["vpp"] or 1,
        sp=bool(p["sequence_parallel"]) if p["sequence_parallel"] is not None else p["tp"] > 1,
        zero=1 if p["distributed_optimizer"] else (p["zero_stage"] or 0),
        overlap_grad_reduce=modern or (rec["group"].startswith("narayanan") and p["pp"] == 1),
        tp_comm_overlap=modern)
    if p["pp"] > 1 and model.arch.layers % p["pp"] == 0:
        common["stage_layers"] = (model.arch.layers // p["pp"],) * p["pp"]
    recompute, mbs = _recompute(rec), batch["micro_batch"]
    strategy = None if recompute is None or mbs is None else Strategy(
        mbs=mbs, recompute=recompute, **common)
    layer_ms = None
    other = rec["measured"].get("other") or {}
    if "per_layer_forward_ms" in other:
        layer_ms = (other["per_layer_forward_ms"], other["per_layer_backward_ms"])
    return Case(rec, model, cluster, nodes, strategy, _measured_step_s(rec, model), layer_ms, common)


def choose_unstated(case: Case):
    """Fastest fitting (mbs, recompute) for records that do not state them; returns (strategy, cost)."""
    cluster = load_cluster(case.cluster_name, nodes=case.nodes)
    best = None
    for mbs in (1, 2, 4):
        for recompute in ("none", "selective", "full"):
            st = Strategy(mbs=mbs, recompute=recompute, **case.common)
            try:
                cost = estimate(case.model, cluster, st)
            except Exception:  # noqa: BLE001 - an invalid combination is simply skipped
                continue
            if cost.fits and (best is None or cost.step_time_s < best[1].step_time_s):
                best = (st, cost)
    return best
