"""The software stack a job runs on, as an input: what it changes in the cost.

A stack preset (`configs/stacks/NAME.yaml`, or a user's file with `base:` and overrides) names
the attention kernel, whether cross-entropy is fused, and the default gradient-reduction overlap.
Each value is cited in its file. The cost model reads the stack through `Hardware`
(`cost_models.hardware.from_cluster(cluster, stack)`), so estimate, the ILP and every bound
price a plan for the stack it will run on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from planner import presets
from planner.errors import InputError
from planner.schema import Fields

ATTENTION_KERNELS = ("unfused", "flash2", "flash3", "cudnn")
"""Attention kernels with per-device rates in `configs/devices/*.yaml` (`attention_kernels`)."""
STACK_KEYS = ["name", "base", "description", "attention_kernel", "fused_cross_entropy",
              "overlap_grad_reduce", "calibration", "sources"]
CALIBRATION_CONSTANTS: dict[str, tuple[float, float, str]] = {
    "gemm_scale": (0.6, 1.15, "GEMM efficiency curve (cuBLAS version, clocks)"),
    "attention_scale": (0.3, 1.6, "attention kernel efficiency"),
    "hbm_scale": (0.5, 1.2, "achievable HBM bandwidth of memory-bound kernels"),
    "inter_node_bw_scale": (0.25, 1.5, "inter-node link bandwidth"),
}
"""Rate constants `fmplan calibrate` fits: name -> (lower bound, upper bound, what it scales).
The bounds are physical: no GEMM above ~1.15x the preset curve, no link above 1.5x its preset."""
DEFAULT_STACK = "megatron-core"
STACK_FOR_TARGET = {"megatron": "megatron-core", "deepspeed": "deepspeed", "torchtitan": "fsdp",
                    "any": DEFAULT_STACK}
"""The stack each `--target` engine runs on, when `--stack` is not given."""


@dataclass(frozen=True, kw_only=True)
class StackSpec:
    """One software stack's cost-relevant choices."""

    name: str
    """Preset or file name, stated in every estimate and plan."""
    attention_kernel: str = "cudnn"
    """Fused attention kernel: flash2, flash3, cudnn (rates per device), or unfused (s^2 GEMMs
    and softmax through HBM)."""
    calibration: dict[str, dict[str, float]] = field(default_factory=dict, compare=False)
    """Per GPU die (A100, H100, ...): calibrated rate constants (CALIBRATION_CONSTANTS) for
    software whose kernels have no published rates, each fitted by `fmplan calibrate` on a named
    group of runs (cited in the file)."""
    fused_cross_entropy: bool = True
    """Vocab-parallel fused cross-entropy (Megatron) rather than eager fp32 upcast + log-softmax."""
    overlap_grad_reduce: bool = True
    """Default for ZeRO-0/1/2 gradient reduction overlapping the backward."""
    description: str = ""
    sources: tuple[str, ...] = field(default=(), compare=False)


def stack_for(stack: str | None, target: str = "any") -> StackSpec:
    """`--stack` if given, else the stack of `--target`."""
    return load_stack(stack or STACK_FOR_TARGET.get(target, DEFAULT_STACK))


@lru_cache(maxsize=32)
def load_stack(ref: str, _bases: tuple[str, ...] = ()) -> StackSpec:
    """A stack from a preset name or a YAML path (`base:` names a preset it overrides)."""
    if ref in _bases or len(_bases) > 8:
        raise InputError(f"stack {_bases[0]!r} has a circular or too deep `base:` chain",
                         key_path="base", hint=" -> ".join(_bases + (ref,)))
    path = Path(ref)
    if not path.is_file():
        if not presets.has("stacks", ref):
            raise InputError(f"no stack file or preset named {ref!r}",
                             hint=presets.suggest("stacks", ref))
        path = presets.path("stacks", ref)
    from planner.loading import read_mapping
    data = read_mapping(path)
    f = Fields(data, source=str(path), path="", allowed=STACK_KEYS)
    base = load_stack(f.str("base"), _bases + (ref,)) if "base" in data else StackSpec(name="")
    return StackSpec(
        name=f.str("name", path.stem),
        attention_kernel=f.choice("attention_kernel", ATTENTION_KERNELS, base.attention_kernel),
        calibration=_calibration(f, base.calibration),
        fused_cross_entropy=f.bool("fused_cross_entropy", base.fused_cross_entropy),
        overlap_grad_reduce=f.bool("overlap_grad_reduce", base.overlap_grad_reduce),
        description=f.str("description", base.description or path.stem),
        sources=tuple(f.raw("sources", [])) or base.sources)


def check_constants(constants: object, error) -> dict[str, float]:
    """Calibration constants checked against CALIBRATION_CONSTANTS; `error(key, message)` builds
    the InputError."""
    if not isinstance(constants, dict):
        raise error("", "expected a mapping constant -> value")
    out = {}
    for name, value in constants.items():
        if name not in CALIBRATION_CONSTANTS:
            raise error(str(name), f"unknown constant; choose from {', '.join(CALIBRATION_CONSTANTS)}")
        lo, hi, _ = CALIBRATION_CONSTANTS[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            raise error(str(name), f"expected a number in [{lo}, {hi}], got {value!r}")
        out[name] = float(value)
    return out


def _calibration(f: Fields, base: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    raw = f.raw("calibration", None)
    if raw is None:
        return base
    if not isinstance(raw, dict):
        raise f.error("calibration", "expected a mapping GPU die -> {constant: value}")
    return {**base, **{str(die): check_constants(
        consts, lambda key, msg, die=die: f.error(f"calibration.{die}.{key}".rstrip("."), msg))
        for die, consts in raw.items()}}
