"""The profile file written by `fmplan profile`: typed, versioned JSON with units in every key.

A profile holds the device's identity, the software it was measured with, and *raw samples*
(one per shape, message size, ...). Fitted values (GEMM efficiency curves, alpha-beta fits, link
tiers) are derived from the samples by `cost_models.profile_fit` whenever a profile is loaded or
saved; the file carries them under `fitted` for people and other tools, but the samples are the
source of truth. That makes merging simple: re-running `fmplan profile` keeps every sample already
in the file and adds the missing ones (`merge`), then refits.

`apply_profile` turns a profile into `Hardware` rates: measured values where the profile has data,
the preset's elsewhere. `Hardware` stays the single place the cost model reads rates from.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, get_type_hints

from cost_models.profile_samples import (SECTIONS, AttentionSample, CommSample, CopySample,
                                         DeviceIdentity, GemmSample, OptimizerSample, Software,
                                         StreamSample)
from planner.errors import FmplanWarning, InputError
from planner.loading import read_mapping
from planner.schema import Fields

__all__ = ["SCHEMA_VERSION", "Profile", "merge", "canonical", "to_dict", "save", "load",
           "apply_profile", "SECTIONS", "AttentionSample", "CommSample", "CopySample",
           "DeviceIdentity", "GemmSample", "OptimizerSample", "Software", "StreamSample"]

SCHEMA_VERSION = 1
"""Bump when a key changes meaning; loading another version is an error with a hint."""


@dataclass(frozen=True, kw_only=True)
class Profile:
    """A measured profile: identity, raw samples per section, notes and memory checks."""

    device: DeviceIdentity
    software: Software
    host: str
    """Host name of rank 0."""
    created_utc: str
    """ISO 8601 time of the first measurement run."""
    updated_utc: str
    """ISO 8601 time of the latest run that added samples."""
    kernel_overhead_s: tuple[float, ...] = ()
    """Median wall time of tiny kernels (one per run)."""
    samples: dict[str, tuple] = field(default_factory=lambda: {k: () for k in SECTIONS})
    """Raw samples per section (see SECTIONS)."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Sections not measured, with the reason (e.g. host copies on a CPU device)."""
    memory_checks: tuple[dict, ...] = ()
    """Measured vs analytic per-block bytes and FLOPs (see cost_models.profiler.memory)."""

    def count(self) -> int:
        """Number of raw samples in all sections."""
        return sum(len(v) for v in self.samples.values()) + len(self.kernel_overhead_s)

    def keys(self, section: str) -> set[tuple]:
        """Keys of the samples already measured in `section` (what a re-run may skip)."""
        return {s.key() for s in self.samples[section]}


def merge(old: Profile, new: Profile) -> Profile:
    """Samples of `old` plus those of `new` whose key `old` lacks (old measurements are kept)."""
    samples = {}
    for section in SECTIONS:
        have = old.keys(section)
        samples[section] = old.samples[section] + tuple(
            s for s in new.samples[section] if s.key() not in have)
    checks = {_check_key(c): c for c in new.memory_checks}
    checks.update({_check_key(c): c for c in old.memory_checks})
    skipped = {**new.skipped, **old.skipped}
    for section, items in samples.items():
        if items:
            skipped.pop(section, None)
    return replace(old, samples=samples, updated_utc=new.updated_utc,
                   kernel_overhead_s=old.kernel_overhead_s or new.kernel_overhead_s,
                   memory_checks=tuple(checks[k] for k in sorted(checks)), skipped=skipped,
                   device=replace(old.device, count=max(old.device.count, new.device.count)))


def _check_key(check: dict) -> str:
    return json.dumps(check.get("config", {}), sort_keys=True)


def to_dict(profile: Profile) -> dict[str, Any]:
    """The JSON document: samples sorted by key (deterministic) and the fitted values."""
    from cost_models.profile_fit import fit_profile
    profile = canonical(profile)
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "device": asdict(profile.device),
        "software": asdict(profile.software),
        "host": profile.host,
        "created_utc": profile.created_utc,
        "updated_utc": profile.updated_utc,
        "kernel_overhead_time_s": list(profile.kernel_overhead_s),
        "skipped": dict(sorted(profile.skipped.items())),
    }
    for section in SECTIONS:
        doc[section] = [asdict(s) for s in profile.samples[section]]
    doc["memory_checks"] = list(profile.memory_checks)
    doc["fitted"] = fit_profile(profile).to_dict()
    return doc


def canonical(profile: Profile) -> Profile:
    """The same profile with each section's samples in key order (the order files store)."""
    return replace(profile, samples={k: tuple(sorted(v, key=_sort_key))
                                     for k, v in profile.samples.items()})


def _sort_key(sample: Any) -> tuple:
    return tuple((0, v) if not isinstance(v, str) else (1, v) for v in sample.key())


def save(profile: Profile, path: Path) -> None:
    """Write the profile (same profile, same bytes); the write is atomic (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(to_dict(profile), indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


def load(path: Path) -> Profile:
    """Read and validate a profile; every problem is an InputError naming the key path."""
    source = str(path)
    data = read_mapping(path, what="profile file",
                        missing_hint="create one with `fmplan profile --out FILE`")
    top = Fields(data, source=source, path="", allowed=[
        "schema_version", "device", "software", "host", "created_utc", "updated_utc",
        "kernel_overhead_time_s", "skipped", "memory_checks", "fitted", *SECTIONS])
    version = top.raw("schema_version")
    if version != SCHEMA_VERSION:
        raise top.error("schema_version", f"expected {SCHEMA_VERSION}, got {version!r}",
                        hint="re-measure with this fmplan's `fmplan profile`, or use the fmplan "
                             "version that wrote the file")
    samples = {}
    for section, cls in SECTIONS.items():
        items = top.list(section, [])
        samples[section] = tuple(_typed(cls, item, source, f"{section}[{i}]")
                                 for i, item in enumerate(items))
    overheads = [top.check_number(f"kernel_overhead_time_s[{i}]", v,
                                  quantity="kernel_overhead_time_s")
                 for i, v in enumerate(top.list("kernel_overhead_time_s", []))]
    skipped = top.raw("skipped", {})
    if not isinstance(skipped, dict):
        raise top.error("skipped", "expected a mapping of section -> reason")
    checks = top.list("memory_checks", [])
    for i, check in enumerate(checks):
        if not isinstance(check, dict):
            raise top.error(f"memory_checks[{i}]", f"expected a mapping, got {type(check).__name__}")
    return canonical(Profile(
        device=_typed(DeviceIdentity, top.raw("device"), source, "device"),
        software=_typed(Software, top.raw("software"), source, "software"),
        host=top.str("host"), created_utc=top.str("created_utc"),
        updated_utc=top.str("updated_utc"), kernel_overhead_s=tuple(overheads),
        samples=samples, skipped={str(k): str(v) for k, v in skipped.items()},
        memory_checks=tuple(checks)))


def _typed(cls: type, data: Any, source: str, path: str) -> Any:
    """Build dataclass `cls` from a mapping, checking each field's type (int, float, str, bool,
    a Literal, or optional str)."""
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    obj = Fields(data, source=source, path=path, allowed=names)
    required = {f.name for f in fields(cls) if f.default is MISSING}
    values = {}
    for name in names:
        hint = hints[name]
        if name not in obj.data and name not in required:
            continue
        if hint is float:
            values[name] = obj.number(name)
        elif hint is int:
            values[name] = obj.int(name)
        elif hint is bool:
            values[name] = obj.bool(name)
        elif hint is str:
            values[name] = obj.str(name)
        elif getattr(hint, "__origin__", None) is Literal:
            values[name] = obj.choice(name, hint.__args__)
        else:
            value = obj.raw(name, None)
            if value is not None and not isinstance(value, str):
                raise obj.error(name, f"expected a string or null, got {value!r}")
            values[name] = value
    return cls(**values)


def apply_profile(hardware: Any, profile_path: Path, cluster: Any) -> Any:
    """`hardware` with the profile's measured rates where it has data (the preset elsewhere).

    Warns (FmplanWarning, printed by the CLI) when the profile was measured on another device than
    the cluster's. See `cost_models.profile_fit.hardware_overrides` for what replaces what.
    """
    from cost_models.profile_fit import device_matches, fit_profile, hardware_overrides
    data = read_mapping(Path(profile_path), what="profile file",
                        missing_hint="create one with `fmplan profile --out FILE` or `fmplan calibrate`")
    if isinstance(data, dict) and data.get("kind") == "fmplan-calibration":
        return _apply_calibration(hardware, data, str(profile_path), cluster)
    profile = load(Path(profile_path))
    if not device_matches(profile.device, cluster.device.name):
        warnings.warn(FmplanWarning(
            f"profile {profile_path} was measured on {profile.device.name!r} "
            f"({profile.device.kind}), but the cluster's device is {cluster.device.name!r}: "
            "its measured rates replace the preset's anyway"), stacklevel=2)
    fitted = fit_profile(profile)
    return replace(hardware, source=str(profile_path),
                   **hardware_overrides(hardware, fitted, cluster.gpus_per_node))


def _apply_calibration(hardware: Any, data: dict, source: str, cluster: Any) -> Any:
    """`hardware` scaled by a calibration file (`fmplan calibrate`), warning on a mismatch of
    device or stack."""
    from cost_models.calibrate import load_constants
    constants = load_constants(data, source)
    if data.get("device") not in (None, cluster.device.name.split("-")[0]):
        warnings.warn(FmplanWarning(
            f"calibration {source} was fitted on {data.get('device')!r} runs, but the cluster's "
            f"device is {cluster.device.name!r}: its constants apply anyway"), stacklevel=3)
    if data.get("stack") not in (None, hardware.stack):
        warnings.warn(FmplanWarning(
            f"calibration {source} was fitted for stack {data.get('stack')!r}, but this plan is "
            f"for {hardware.stack!r}: its constants apply anyway"), stacklevel=3)
    return replace(hardware.scaled(constants), source=source)
