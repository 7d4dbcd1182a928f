"""`fmplan calibrate`: fit the few physically bounded rate constants of one stack and device
from measured runs, and apply them.

The constants scale the preset rates the cost model already uses (`Hardware`): GEMM efficiency,
attention kernel efficiency, HBM bandwidth of memory-bound kernels, and inter-node bandwidth.
Each has physical bounds (a scale that would put a GEMM above the datasheet peak is refused by
clamping the curve at 1). The fit minimises the mean squared log error of predicted vs measured
step time by coordinate descent (golden-section search per constant, in log space), which is
deterministic and needs no solver library.

Honesty rules: a constant is fitted only if the runs are sensitive to it (a 10 % change moves the
predictions by at least `MIN_SENSITIVITY` of that on average), and never more constants than runs;
the others keep their preset value and the reason is reported.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cost_models.hardware import Hardware
from planner.errors import InputError
from planner.stacks import CALIBRATION_CONSTANTS as CONSTANTS, check_constants

KIND = "fmplan-calibration"
VERSION = 1
MIN_SENSITIVITY = 0.05
"""d log(prediction) / d log(constant), averaged over the runs, below which a constant is not
identifiable from them."""
_GOLDEN = (math.sqrt(5) - 1) / 2


@dataclass(frozen=True)
class Observation:
    """One measured run: how to predict it on given hardware, and what was measured."""

    name: str
    group: str
    predict: Callable[[Hardware], float]
    """Predicted value (same unit as `measured`) on the given hardware."""
    hardware: Hardware
    """The run's cluster and stack presets, without the stack's own calibration."""
    measured: float


@dataclass(frozen=True)
class Fit:
    """The result of a calibration."""

    constants: dict[str, float]
    refused: dict[str, str]
    """Constants not fitted, with the reason."""
    before_mape_pct: float
    after_mape_pct: float
    runs: int


def _loss(obs: list[Observation], constants: dict[str, float]) -> float:
    return sum(math.log(o.predict(o.hardware.scaled(constants)) / o.measured) ** 2
               for o in obs) / len(obs)


def mape_pct(obs: list[Observation], constants: dict[str, float]) -> float:
    """Mean absolute percentage error of the predictions under `constants`."""
    return 100 * sum(abs(o.predict(o.hardware.scaled(constants)) / o.measured - 1)
                     for o in obs) / len(obs)


def sensitivity(obs: list[Observation], name: str) -> float:
    """Mean |d log prediction / d log constant| at the presets (10 % step)."""
    step = math.log(1.1)
    return sum(abs(math.log(o.predict(o.hardware.scaled({name: 1.1}))
                            / o.predict(o.hardware))) for o in obs) / (len(obs) * step)


def _golden(f: Callable[[float], float], lo: float, hi: float, iters: int = 14) -> float:
    a, b = math.log(lo), math.log(hi)
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = f(math.exp(c)), f(math.exp(d))
    for _ in range(iters):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = f(math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = f(math.exp(d))
    return math.exp((a + b) / 2)


def fit(obs: list[Observation], names: list[str] | None = None, sweeps: int = 2) -> Fit:
    """Fit `names` (default all CONSTANTS) to the observations, refusing what they cannot support."""
    if not obs:
        raise InputError("no runs to calibrate on", hint="give a runs file with measured step times")
    names = list(names or CONSTANTS)
    unknown = [n for n in names if n not in CONSTANTS]
    if unknown:
        raise InputError(f"unknown constant(s) {', '.join(unknown)}",
                         hint=f"choose from {', '.join(CONSTANTS)}")
    sens = {n: sensitivity(obs, n) for n in names}
    refused = {n: f"the runs barely depend on it (sensitivity {sens[n]:.3f} < {MIN_SENSITIVITY})"
               for n in names if sens[n] < MIN_SENSITIVITY}
    ranked = sorted((n for n in names if n not in refused), key=lambda n: -sens[n])
    for n in ranked[len(obs):]:
        refused[n] = f"{len(obs)} run(s) support at most {len(obs)} constant(s); fitted the more sensitive"
    chosen = ranked[:len(obs)]
    constants = {n: 1.0 for n in chosen}
    for _ in range(sweeps if len(chosen) > 1 else 1):
        for n in chosen:
            lo, hi, _ = CONSTANTS[n]
            constants[n] = _golden(lambda x, n=n: _loss(obs, {**constants, n: x}), lo, hi)
    constants = {n: round(v, 4) for n, v in constants.items()}
    return Fit(constants, refused, mape_pct(obs, {}), mape_pct(obs, constants), len(obs))


def save(fit_result: Fit, path: Path, *, stack: str, device: str) -> None:
    """Write the calibration file that `estimate`/`solve --profile` apply."""
    payload = {"kind": KIND, "version": VERSION, "stack": stack, "device": device,
               "constants": fit_result.constants, "refused": fit_result.refused,
               "runs": fit_result.runs, "before_mape_pct": round(fit_result.before_mape_pct, 2),
               "after_mape_pct": round(fit_result.after_mape_pct, 2)}
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def load_constants(data: dict, source: str) -> dict[str, float]:
    """The constants of a parsed calibration file, checked against their bounds."""
    if data.get("version") != VERSION:
        raise InputError(f"calibration version {data.get('version')!r} is not {VERSION}", source=source,
                         key_path="version", hint="re-run `fmplan calibrate`")
    return check_constants(data.get("constants"), lambda key, msg: InputError(
        msg, source=source, key_path=f"constants.{key}".rstrip(".")))
