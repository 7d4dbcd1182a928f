"""Measured training runs (the format of ../shared/data/published_runs_dev.yaml, described in
its README) mapped onto fmplan's inputs; `fmplan calibrate` and bench/fidelity.py read them.

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
* llm-foundry (flop_convention mosaic_mfu_hfu): see `_mosaic_model`; the step time is the global
  batch's tokens over the measured tokens/s; the stack is llm-foundry-2023.
* Unstated micro-batch size / recompute (the H100 table): fmplan picks the fastest setting that
  fits among mbs in {1, 2, 4} and recompute in {none, selective, full}, as a user tuning the run
  would; the choice is printed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

from cost_models.block import block_times
from cost_models.calibrate import Observation
from cost_models.estimate import estimate
from cost_models.flops import model_flops_per_step
from cost_models.hardware import from_cluster
from planner.errors import InputError
from planner.loading import load_cluster, read_mapping
from planner.specs import Architecture, ModelSpec, Training
from planner.stacks import StackSpec, load_stack
from planner.strategy import Strategy

REQUIRED = {"": ["id", "group", "model", "hardware", "parallel", "batch", "measured", "flop_convention"],
            "model": ["layers", "hidden", "heads", "vocab", "seq_len"],
            "hardware": ["gpu", "num_gpus"], "parallel": ["tp", "pp", "dp"],
            "batch": ["global_batch_seqs"]}
"""Keys every run needs (the others may be null: the README's rules fill them)."""


@dataclass
class Case:
    """One published run, mapped."""

    record: dict
    model: ModelSpec
    stack: StackSpec
    """The software stack the run used."""
    cluster_name: str
    nodes: int
    strategy: Strategy | None
    """None when micro-batch/recompute are unstated (choose_unstated fills them)."""
    measured_step_s: float | None
    measured_layer_ms: tuple[float, float] | None
    """(forward, backward) per-layer milliseconds (Korthikanti Table 4)."""
    common: dict
    """Strategy fields the source states (all but micro-batch and recompute)."""


def load_records(path: Path) -> list[dict]:
    """The runs of one file (a YAML list of records), each checked for the keys it needs."""
    data = read_mapping(path, what="runs file")
    if not isinstance(data, list) or not data:
        raise InputError("expected a non-empty YAML list of runs", source=str(path),
                         hint="see ../shared/data/README.md for the record format")
    for i, rec in enumerate(data):
        for section, keys in REQUIRED.items():
            at = f"[{i}]" + (f".{section}" if section else "")
            part = rec.get(section) if section and isinstance(rec, dict) else rec
            if not isinstance(part, dict):
                raise InputError("expected a mapping", source=str(path), key_path=at)
            for key in keys:
                if part.get(key) is None:
                    raise InputError("missing required key", source=str(path), key_path=f"{at}.{key}",
                                     hint="see ../shared/data/README.md for the record format")
    return data


def stack_of(rec: dict) -> StackSpec:
    """The stack a record ran on: llm-foundry's tables on llm-foundry-2023, the rest on Megatron."""
    return load_stack("llm-foundry-2023" if _is_mosaic(rec) else "megatron-core")


def _is_mosaic(rec: dict) -> bool:
    return rec["flop_convention"] == "mosaic_mfu_hfu"


def _mosaic_model(rec: dict) -> ModelSpec:
    """llm-foundry MPT: GELU 4h MLP, LayerNorm, no biases, no dropout, learned positions, tied
    embeddings (scripts/train/yamls/pretrain/mpt-*.yaml); MP mode PURE reduces gradients in bf16,
    DEFAULT (amp) in fp32 (Composer's FSDP mixed-precision presets)."""
    m = rec["model"]
    arch = Architecture(
        layers=m["layers"], hidden=m["hidden"], heads=m["heads"], kv_heads=m.get("kv_heads") or m["heads"],
        ffn_hidden=m.get("ffn_hidden"), vocab=m["vocab"], mlp="gelu", tied_embeddings=True,
        learned_positions=True, norm="layernorm", linear_bias=False, dropout=False)
    train = Training(seq_len=m["seq_len"], global_batch=rec["batch"]["global_batch_seqs"],
                     precision="bf16", grads_fp32="PURE" not in str(rec.get("precision")),
                     flash_attention=True)
    return ModelSpec(name=rec["id"], arch=arch, training=train)


def _model(rec: dict) -> ModelSpec:
    if _is_mosaic(rec):
        return _mosaic_model(rec)
    m = rec["model"]
    modern = rec["group"].startswith("megatron_readme")
    h = m["hidden"]
    arch = Architecture(
        layers=m["layers"], hidden=h, heads=m["heads"], kv_heads=m.get("kv_heads") or m["heads"],
        ffn_hidden=m.get("ffn_hidden") or 4 * h, vocab=m["vocab"], mlp="gelu", tied_embeddings=True,
        learned_positions=True, norm="layernorm", linear_bias=True, dropout=not modern)
    precision = "fp16" if "fp16" in str(rec.get("precision")).lower() or not modern else "bf16"
    torch_ddp = rec["group"].startswith("narayanan")
    train = Training(seq_len=m["seq_len"], global_batch=rec["batch"]["global_batch_seqs"],
                     precision=precision, grads_fp32=not torch_ddp, flash_attention=modern)
    return ModelSpec(name=rec["id"], arch=arch, training=train)


def _recompute(rec: dict) -> str | None:
    mode = (rec["parallel"].get("recompute") or {}).get("mode")
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
    if conv == "mosaic_mfu_hfu" and meas.get("tokens_per_s_per_gpu"):
        tokens = rec["batch"]["global_batch_seqs"] * model.training.seq_len
        return tokens / (meas["tokens_per_s_per_gpu"] * n)
    t = model.training
    b, s, L, h, V = t.global_batch, t.seq_len, model.arch.layers, model.arch.hidden, model.arch.vocab
    if conv == "megatron_eq3_with_recompute" and meas.get("tflops_per_gpu"):
        flops = 96 * b * s * L * h * h * (1 + s / (6 * h) + V / (16 * L * h))
        return flops / (meas["tflops_per_gpu"] * 1e12 * n)
    if conv == "megatron_core_num_floating_point_operations_r0.8" and meas.get("tflops_per_gpu"):
        return model_flops_per_step(model) / (meas["tflops_per_gpu"] * 1e12 * n)
    if conv == "korthikanti_model_and_hardware_flops" and meas.get("mfu_pct"):
        flops = 72 * b * L * s * h * h * (1 + s / (6 * h) + V / (12 * h * L))
        return flops / (meas["mfu_pct"] / 100 * hw.get("peak_tflops_used", 0) * 1e12 * n)
    return None


def _cluster_name(rec: dict) -> str:
    """The cluster preset a record ran on (MosaicML's A100 nodes use RoCE between nodes)."""
    gpu = rec["hardware"]["gpu"]
    if "A100" in gpu and _is_mosaic(rec):
        return "a100-40gb-roce" if rec["hardware"].get("gpu_mem_gb") == 40 else "a100-80gb-roce"
    return "dgx-a100" if "A100" in gpu else "dgx-h100"


def to_case(rec: dict) -> Case:
    """Map one record."""
    model = _model(rec)
    p, hw, batch = rec["parallel"], rec["hardware"], rec["batch"]
    cluster = _cluster_name(rec)
    nodes = math.ceil(hw["num_gpus"] / 8)
    modern = rec["group"].startswith("megatron_readme")
    common = dict(
        dp=p["dp"], tp=p["tp"], pp=p["pp"], cp=p.get("cp") or 1, vpp=p.get("vpp") or 1,
        sp=bool(p.get("sequence_parallel")) if p.get("sequence_parallel") is not None else p["tp"] > 1,
        zero=1 if p.get("distributed_optimizer") else (p.get("zero_stage") or 0),
        overlap_grad_reduce=modern or (rec["group"].startswith("narayanan") and p["pp"] == 1),
        tp_comm_overlap=modern)
    if p["pp"] > 1 and model.arch.layers % p["pp"] == 0:
        common["stage_layers"] = (model.arch.layers // p["pp"],) * p["pp"]
    recompute, mbs = _recompute(rec), batch.get("micro_batch")
    strategy = None if recompute is None or mbs is None else Strategy(
        mbs=mbs, recompute=recompute, **common)
    layer_ms = None
    other = rec["measured"].get("other") or {}
    if "per_layer_forward_ms" in other:
        layer_ms = (other["per_layer_forward_ms"], other["per_layer_backward_ms"])
    return Case(rec, model, stack_of(rec), cluster, nodes, strategy, _measured_step_s(rec, model),
                layer_ms, common)


def choose_unstated(case: Case, hardware=None):
    """Fastest fitting (mbs, recompute) for records that do not state them; returns (strategy, cost)."""
    cluster = load_cluster(case.cluster_name, nodes=case.nodes)
    hw = hardware or from_cluster(cluster, case.stack)
    best = None
    for mbs in (1, 2, 4):
        for recompute in ("none", "selective", "full"):
            st = Strategy(mbs=mbs, recompute=recompute, **case.common)
            try:
                cost = estimate(case.model, cluster, st, hw)
            except Exception:  # noqa: BLE001 - an invalid combination is simply skipped
                continue
            if cost.fits and (best is None or cost.step_time_s < best[1].step_time_s):
                best = (st, cost)
    return best


def device_family(case: Case) -> str:
    """The GPU die a run used (A100-40GB and A100-80GB share their rates but not memory)."""
    return load_cluster(case.cluster_name, nodes=case.nodes).device.name.split("-")[0]


def predictor(case: Case):
    """A function hardware -> predicted value in the unit of the run's measurement (step seconds,
    or per-layer forward+backward milliseconds), and that measurement."""
    cluster = load_cluster(case.cluster_name, nodes=case.nodes)
    if case.measured_layer_ms is not None:
        st = case.strategy

        def layer_ms(hw):
            bt = block_times(case.model, st, hw)
            recompute = {"full": bt.recompute_full, "selective": bt.recompute_selective}.get(st.recompute, 0.0)
            return 1e3 * (bt.fwd + bt.bwd + recompute)
        return layer_ms, sum(case.measured_layer_ms)

    def step_s(hw):
        if case.strategy is None:
            chosen = choose_unstated(case, hw)
            return chosen[1].step_time_s if chosen else float("inf")
        return estimate(case.model, cluster, case.strategy, hw).step_time_s
    return step_s, case.measured_step_s


def observations(records: list[dict]) -> list[Observation]:
    """The records with a measurement, as calibration observations on their stack's presets
    (without the stack's own calibration, which a fit replaces)."""
    out = []
    for rec in records:
        case = to_case(rec)
        predict, measured = predictor(case)
        if measured is None:
            continue
        cluster = load_cluster(case.cluster_name, nodes=case.nodes)
        out.append(Observation(rec["id"], rec["group"], predict,
                               from_cluster(cluster, replace(case.stack, calibration={})), measured))
    return out
