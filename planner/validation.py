"""`fmplan validate` without torch: what the runtime trains, the prediction for it, and the
measured-vs-predicted comparison. The torch side lives in `planner.runtime`.

The runtime trains in pure fp32 (weights, gradients, Adam moments and activations all 4 bytes; no
separate master copy; no dropout; fused attention), on CPU and CUDA alike: it is the one layout
that DDP, FSDP2 (which keeps its sharded parameters in the dtype it was given), DTensor TP and
pipelining all hold the same way. `runtime_model` sets the prediction's Training flags to say so.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from dataclasses import dataclass, replace
from typing import Any

from cost_models.breakdown import CostBreakdown, StageCost
from cost_models.flops import padded_vocab
from cost_models.memory import stage_params, state_bytes_per_param
from cost_models.hardware import Hardware
from planner.errors import EnvironmentProblem, InputError
from planner.plan import Plan
from planner.specs import ClusterSpec, ModelSpec
from planner.strategy import Strategy

STATE_KEYS = ("weights", "grads", "optimizer")
SCALED_HEAD_DIM = 16
SCALED_SEQ_LEN = 128
SCALED_VOCAB = 1024
HOST_MEMORY_FRACTION = 0.8
"""Share of physical memory a CPU run may plan to use (the rest: OS, Python, torch itself)."""


def runtime_model(model: ModelSpec) -> ModelSpec:
    """`model` as the validation runtime trains it (module docstring)."""
    train = replace(model.training, precision="fp32", master_weights_fp32=False, grads_fp32=True,
                    flash_attention=True)
    return replace(model, arch=replace(model.arch, dropout=False), training=train)


def scale_down(model: ModelSpec, st: Strategy) -> tuple[ModelSpec, Strategy, list[str]]:
    """A smaller model with the plan's shape: same layers (so the exact stage split and
    per-stage recompute counts stay), heads, KV heads and block kinds, and the same degrees
    (dp, tp, pp, cp, vpp, mbs, ZeRO, sp, offload). Shrunk: head_dim to 16 (hidden = heads * 16),
    ffn_hidden in proportion (a multiple of 8 * tp; MoE expert widths likewise, multiples of
    8 * etp for routed and 8 * tp for shared experts), vocab to <= 1024 (a multiple of 128 * tp),
    seq_len to <= 128 (a multiple of tp and 2 * cp), and micro-batches per step to
    <= 2 * pp * vpp (a multiple of pp when interleaved), which keeps every pipeline warm-up full.
    """
    a, train = model.arch, model.training
    hidden = a.heads * min(a.head_dim, SCALED_HEAD_DIM)
    step_f = 8 * st.tp
    ffn = max(step_f, round(a.ffn_hidden * hidden / a.hidden / step_f) * step_f)
    vocab = min(padded_vocab(a.vocab, st.tp), max(SCALED_VOCAB, 128 * st.tp))
    seq_step = math.lcm(st.tp, 2 * st.cp if st.cp > 1 else 1)
    seq = max(seq_step, min(train.seq_len, SCALED_SEQ_LEN) // seq_step * seq_step)
    m = st.micro_batches(model)
    m_small = min(m, 2 * st.pp * st.vpp) if st.pp > 1 else min(m, 2)
    if st.vpp > 1:
        m_small = max(st.pp, m_small // st.pp * st.pp)
    arch = replace(a, hidden=hidden, ffn_hidden=ffn, vocab=vocab)
    notes = []
    if a.moe is not None:
        moe = a.moe
        arch = replace(arch, moe=replace(
            moe, expert_ffn_hidden=_scaled_width(moe.expert_ffn_hidden, hidden / a.hidden, 8 * st.etp),
            shared_ffn_hidden=_scaled_width(moe.shared_ffn_hidden, hidden / a.hidden, step_f)))
        notes.append(f"scaled down: expert_ffn_hidden {moe.expert_ffn_hidden}->"
                     f"{arch.moe.expert_ffn_hidden}, shared_ffn_hidden {moe.shared_ffn_hidden}->"
                     f"{arch.moe.shared_ffn_hidden}; experts, top_k and dense layers kept")
    small = replace(model, name=f"{model.name} (scaled down)", arch=arch,
                    training=replace(train, seq_len=seq, global_batch=m_small * st.dp * st.mbs))
    notes.insert(0, f"scaled down: hidden {a.hidden}->{hidden}, ffn_hidden {a.ffn_hidden}->{ffn}, "
                    f"vocab {a.vocab}->{vocab}, seq_len {train.seq_len}->{seq}, micro-batches {m}->"
                    f"{m_small} (global_batch {train.global_batch}->{small.training.global_batch}); "
                    f"layers, heads, kv_heads and every degree kept")
    return small, st, notes


def _scaled_width(width: int, ratio: float, step: int) -> int:
    """An FFN width shrunk by `ratio`, a positive multiple of `step` (0 stays 0: no such MLP)."""
    if width == 0:
        return 0
    return max(step, round(width * ratio / step) * step)


def host_memory_bytes() -> float:
    """Physical memory of this machine (bytes)."""
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


@dataclass(frozen=True)
class StatePrediction:
    """Persistent model-state bytes one GPU of a stage holds, on the device plus on the host."""

    weights: float
    """Weight bytes (sharded under ZeRO-3)."""
    grads: float
    """Gradient bytes (sharded under ZeRO-2/3)."""
    optimizer: float
    """Optimizer-state bytes (sharded under ZeRO-1/2/3)."""


def predicted_states(model: ModelSpec, st: Strategy, stage: int, layers: int) -> StatePrediction:
    """Per-category persistent state bytes of one GPU of `stage`, device + host.

    The analytic model reports offloaded states as one host figure; it is split back here:
    offloaded weights are the (sharded) weights, offloaded optimizer states are K/n, and the
    rest of the host figure is the fp32 gradient copy (ZeRO-Offload)."""
    params = stage_params(model, st, stage, layers)
    dev = state_bytes_per_param(model, st)
    base = state_bytes_per_param(model, replace(st, offload_optimizer=False, offload_params=False))
    host_weights = base.weights if st.offload_params else 0.0
    host_optimizer = base.optimizer if st.offload_optimizer else 0.0
    host_grads = dev.host - host_weights - host_optimizer
    return StatePrediction(weights=params * (dev.weights + host_weights),
                           grads=params * (dev.grads + host_grads),
                           optimizer=params * (dev.optimizer + host_optimizer))


def compare(model: ModelSpec, st: Strategy, predicted: CostBreakdown,
            ranks: list[dict[str, Any]], *, time_comparable: bool) -> list[dict[str, Any]]:
    """One row per rank and quantity: predicted, measured and the error in percent.

    Quantities: persistent weights, grads and optimizer states (device + host: on a CPU run
    they are one pool); `transient` (everything else alive at the peak: activations, temporaries,
    unsharded ZeRO-3 parameters, pipeline buffers) against the predicted activations plus ZeRO-3
    gather buffers; `peak` (all tensors at the peak) against the predicted total without the
    allocator allowance, since both sides count tensor bytes; and the median step time.
    """
    rows = []
    for rank in ranks:
        stage = predicted.stages[rank["stage"]]
        pred = _predicted_state_bytes(model, st, stage)
        meas = {key: float(sum(rank["states_bytes"][key].values())) for key in STATE_KEYS}
        mem = stage.memory_bytes
        pred_peak = sum(v for k, v in mem.items() if k != "other") + stage.host_bytes
        pred["transient"] = pred_peak - sum(pred[k] for k in STATE_KEYS)
        meas_peak = _measured_peak(rank)
        meas["transient"] = meas_peak - sum(meas[k] for k in STATE_KEYS)
        pred["peak"], meas["peak"] = pred_peak, meas_peak
        for key in (*STATE_KEYS, "transient", "peak"):
            rows.append(_row(rank, key, "bytes", pred[key], meas[key]))
        step_pred = predicted.step_time_s if time_comparable else None
        rows.append(_row(rank, "step_time", "s", step_pred, rank.get("median_step_s")))
    return rows


def _predicted_state_bytes(model: ModelSpec, st: Strategy, stage: StageCost) -> dict[str, float]:
    """Predicted weights, grads and optimizer bytes of one GPU of `stage`. MoE models take them
    from the estimate's stage memory, which splits dense and routed-expert parameters (the
    runtime runs MoE without offload, so there is no host part to add back)."""
    if model.arch.moe is not None:
        return {key: float(stage.memory_bytes[key]) for key in STATE_KEYS}
    states = predicted_states(model, st, stage.stage, stage.layers)
    return {key: getattr(states, key) for key in STATE_KEYS}


def _measured_peak(rank: dict[str, Any]) -> float:
    """Peak tensor bytes: the CUDA allocator's peak (plus host states) on GPU, else MemTracker."""
    if rank.get("cuda_peak_bytes") is not None:
        host = sum(rank["states_bytes"][k].get("cpu", 0) for k in STATE_KEYS)
        return float(rank["cuda_peak_bytes"] + host)
    return float(rank["tracker_peak_bytes"]["total"])


def _row(rank: dict[str, Any], quantity: str, unit: str, pred: float | None,
         meas: float | None) -> dict[str, Any]:
    error = None
    if pred and meas is not None:
        error = 100.0 * (meas - pred) / pred
    return {"rank": rank["rank"], "stage": rank["stage"], "quantity": quantity, "unit": unit,
            "predicted": pred, "measured": meas, "error_pct": error}


def validate_plan(plan: Plan, *, device: str, steps: int, warmup: int, scale: bool,
                  profile: Path | None = None) -> dict[str, Any]:
    """Run `plan` on torch.distributed (see `planner.runtime`) and compare with `estimate()`.

    Returns a JSON-ready report: the runtime model and strategy, notes, per-step losses and the
    rows of `compare`. Raises InputError when the run would not fit this machine (without
    --scale-down) and EnvironmentProblem when torch, the GPUs or the launch fail.
    """
    from cost_models.estimate import estimate
    from cost_models.hardware import from_cluster
    from planner.runtime.launch import RunRequest, launch

    if steps < 1 or warmup < 3:
        raise InputError(f"need --steps >= 1 and --warmup >= 3, got {steps} and {warmup}",
                         hint="two warm-up steps allocate states and buckets, the third tracks the peak")
    check_runnable(plan.strategy, plan.model)
    model, st, notes = runtime_model(plan.model), plan.strategy, []
    if scale:
        model, st, scale_notes = scale_down(model, st)
        notes += scale_notes
    hardware, time_comparable = from_cluster(plan.cluster), device == "cuda"
    if profile is not None:
        hardware, time_comparable = _with_profile(hardware, profile, plan.cluster, notes)
    elif device == "cpu":
        notes.append("CPU run without --profile: only memory is comparable (step times are "
                     "CPU times; the prediction is for the plan's GPUs)")
    predicted = estimate(model, plan.cluster, st, hardware)
    _check_machine(device, st, predicted, scale)
    results = launch([RunRequest(run_id="plan", model=model, strategy=st)], device=device,
                     steps=steps, warmup=warmup)["plan"]
    return {
        "model": model.name, "strategy": st.describe(), "device": device, "world": st.world,
        "runtime": "fp32 weights, grads, Adam moments and activations; no dropout",
        "notes": notes, "losses": results[0]["losses"],
        "rows": compare(model, st, predicted, results, time_comparable=time_comparable),
        "ranks": [{"rank": r["rank"], "coords": r["coords"], "tracker_peak_bytes": r["tracker_peak_bytes"],
                   "cuda_peak_bytes": r["cuda_peak_bytes"], "states_bytes": r["states_bytes"],
                   "step_times_s": r["step_times_s"]} for r in results],
    }


def check_runnable(st: Strategy, model: ModelSpec | None = None) -> None:
    """Refuse the parts of the model and strategy space the runtime does not run, before launching."""
    if model is not None and model.arch.mla is not None:
        raise InputError(f"the validation runtime builds GQA attention; {model.name} uses "
                         "multi-head latent attention", key_path="model.architecture.mla")
    if model is not None and model.arch.moe is not None:
        _check_moe_runnable(model, st)
    if st.cp > 1:
        raise InputError(f"the validation runtime does not run context parallelism (cp={st.cp})",
                         key_path="strategy.cp", hint="validate the plan with cp folded into dp")
    if (st.offload_optimizer or st.offload_params) and st.zero < 2:
        raise InputError("the validation runtime offloads through FSDP2's CPUOffloadPolicy, "
                         f"which needs zero >= 2, got zero={st.zero}", key_path="strategy.zero")


def _check_moe_runnable(model: ModelSpec, st: Strategy) -> None:
    """Routed experts stay outside DDP and FSDP2 (their gradients are reduced over the expert
    data-parallel group by hand), so their states are sharded by the ZeRO-1 optimizer at most;
    routing is dropless."""
    capacity = model.arch.moe.capacity_factor
    if capacity is not None:
        raise InputError(f"the validation runtime routes dropless; {model.name} sets "
                         f"capacity_factor={capacity}, whose padded expert buffers it does not build",
                         key_path="model.architecture.moe.capacity_factor",
                         hint="validate the plan with capacity_factor unset (dropless)")
    if st.zero > 1:
        raise InputError(f"the validation runtime runs MoE models with zero <= 1, got zero={st.zero}",
                         key_path="strategy.zero",
                         hint="zero=1 shards the dense states over dp and the expert states over "
                              "the expert data-parallel group; the layout is otherwise the same")


def _with_profile(hardware: Hardware, profile: Path, cluster: ClusterSpec,
                  notes: list[str]) -> tuple[Hardware, bool]:
    """The hardware with the profile applied and True, or unchanged and False (with a note)
    when this build lacks profile support."""
    try:
        from cost_models.profile_format import apply_profile
    except ModuleNotFoundError as exc:
        if exc.name != "cost_models.profile_format":
            raise  # present but broken: show it, do not hide it behind the fallback
        notes.append("--profile ignored: this build has no profile support "
                     "(cost_models.profile_format); only memory is comparable")
        return hardware, False
    return apply_profile(hardware, profile, cluster), True


def _check_machine(device: str, st: Strategy, predicted: CostBreakdown, scale: bool) -> None:
    """Refuse runs this machine cannot hold or host, naming the resource."""
    if device == "cuda":
        import torch
        if not torch.cuda.is_available() or torch.cuda.device_count() < st.world:
            found = torch.cuda.device_count() if torch.cuda.is_available() else 0
            raise EnvironmentProblem(f"--device cuda needs {st.world} GPUs on this machine, "
                                     f"found {found}")
        return
    need = st.world * (predicted.peak_memory_bytes + predicted.host_bytes_per_gpu)
    have = HOST_MEMORY_FRACTION * host_memory_bytes()
    if need > have:
        hint = "add --scale-down" if not scale else "the scaled-down plan is still too large"
        raise InputError(f"the run needs ~{need / 2**30:.1f} GiB of host memory for "
                         f"{st.world} processes; {have / 2**30:.1f} GiB usable here", hint=hint)
