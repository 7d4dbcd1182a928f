"""A Plan: the chosen strategy with the inputs it was made for, its predicted cost and how it was
found. Saved as `plan.yaml`; emitters and `fmplan validate` read only this.

The file embeds the full model and cluster mappings (not just preset names), so a saved plan can be
re-emitted or validated on another machine. Writing is deterministic: same plan, same bytes.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from planner.errors import InputError
from planner.loading import cluster_from_mapping, model_from_mapping, read_mapping
from planner.schema import Fields
from planner.specs import ClusterSpec, DeviceSpec, ModelSpec
from planner.strategy import RECOMPUTE_MODES, Strategy

PLAN_SCHEMA_VERSION = 1
PLAN_FILE = "plan.yaml"
"""The plan's file name in an output directory."""


@dataclass(frozen=True, kw_only=True)
class Plan:
    """A strategy for a model on a cluster, with its prediction and provenance."""

    model: ModelSpec
    cluster: ClusterSpec
    strategy: Strategy
    """Fully resolved: stage_layers and stage_recompute set."""
    predicted: dict[str, Any] = field(default_factory=dict)
    """`CostBreakdown.to_dict()` of the strategy."""
    solver: dict[str, Any] = field(default_factory=dict)
    """status (optimal / gap / feasible), gap, backend, objective."""
    search: dict[str, Any] = field(default_factory=dict)
    """candidates enumerated, pruned by bound, ILPs solved, wall time."""
    target: str = "any"
    """Engine whose limits the search honoured."""
    stack: str = "megatron-core"
    """Software stack the prediction is for (`planner.stacks`)."""

    def digest(self) -> str:
        """sha256 of the canonical model + cluster + target inputs (first 16 hex digits)."""
        payload = json.dumps({"model": model_to_mapping(self.model),
                              "cluster": cluster_to_mapping(self.cluster),
                              "target": self.target}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def to_mapping(self) -> dict[str, Any]:
        """A plain mapping for YAML/JSON."""
        return {
            "schema_version": PLAN_SCHEMA_VERSION,
            "inputs_digest": self.digest(),
            "target": self.target,
            "stack": self.stack,
            "strategy": strategy_to_mapping(self.strategy),
            "predicted": _plain(self.predicted),
            "solver": _plain(self.solver),
            "search": _plain(self.search),
            "model": model_to_mapping(self.model),
            "cluster": cluster_to_mapping(self.cluster),
        }

    def to_yaml(self) -> str:
        """The plan.yaml text (deterministic key order and float formatting)."""
        return yaml.safe_dump(self.to_mapping(), sort_keys=False, width=100)

    def write(self, path: Path) -> None:
        """Write plan.yaml to `path` (`fmplan solve --out` writes it with the launch files,
        atomically, through planner.output)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_yaml())


def load_plan(path: Path) -> Plan:
    """Read a plan.yaml written by `Plan.write`."""
    source = str(path)
    data = read_mapping(path)
    top = Fields(data, source=source, path="", allowed=[
        "schema_version", "inputs_digest", "target", "stack", "strategy", "predicted", "solver", "search",
        "model", "cluster"])
    version = top.int("schema_version")
    if version != PLAN_SCHEMA_VERSION:
        raise InputError(f"plan schema version {version} is not supported "
                         f"(this fmplan reads {PLAN_SCHEMA_VERSION})", source=source,
                         key_path="schema_version", hint="re-run `fmplan solve` to regenerate it")
    model = model_from_mapping(top.raw("model"), source=f"{source}#model")
    cluster = cluster_from_mapping(top.raw("cluster"), source=f"{source}#cluster")
    strategy = strategy_from_mapping(top.raw("strategy"), source=source)
    strategy.validate(model, cluster)
    records = {}
    for key in ("predicted", "solver", "search"):
        records[key] = top.raw(key, {})
        if not isinstance(records[key], dict):
            raise top.error(key, f"expected a mapping, got {type(records[key]).__name__}")
    return Plan(model=model, cluster=cluster, strategy=strategy, target=top.str("target", "any"),
                stack=top.str("stack", "megatron-core"),
                **records)


def strategy_to_mapping(st: Strategy) -> dict[str, Any]:
    """Strategy fields as a plain mapping (tuples become lists)."""
    out = {}
    for f in fields(Strategy):
        value = getattr(st, f.name)
        if isinstance(value, tuple):
            value = [list(v) if isinstance(v, tuple) else v for v in value]
        out[f.name] = value
    return out


def strategy_from_mapping(data: Any, *, source: str) -> Strategy:
    """Inverse of strategy_to_mapping: every field type-checked and bounded, with key paths."""
    names = [f.name for f in fields(Strategy)]
    f = Fields(data, source=source, path="strategy", allowed=names)
    values: dict[str, Any] = {}
    for name in names:
        if f.data.get(name) is None:
            continue
        default = getattr(Strategy(), name)
        if isinstance(default, bool):
            values[name] = f.bool(name)
        elif name == "recompute":
            values[name] = f.choice(name, RECOMPUTE_MODES)
        elif name == "stage_layers":
            values[name] = tuple(f.check_int(f"{name}[{i}]", v, quantity=name)
                                 for i, v in enumerate(f.list(name)))
        elif name == "stage_recompute":
            values[name] = tuple(_recompute_pair(f, i, v) for i, v in enumerate(f.list(name)))
        else:
            values[name] = f.int(name)
    return Strategy(**values)


def _recompute_pair(f: Fields, index: int, value: Any) -> tuple[int, int]:
    key = f"stage_recompute[{index}]"
    if not isinstance(value, list) or len(value) != 2:
        raise f.error(key, "expected a [full, selective] pair of block counts")
    return (f.check_int(f"{key}[0]", value[0], quantity="stage_recompute"),
            f.check_int(f"{key}[1]", value[1], quantity="stage_recompute"))


def model_to_mapping(model: ModelSpec) -> dict[str, Any]:
    """The model.yaml mapping that loads back to `model`."""
    arch = asdict(model.arch)
    for optional in ("moe", "mla"):
        if arch.get(optional) is None:
            arch.pop(optional, None)
    if arch.get("moe") and arch["moe"].get("capacity_factor") is None:
        arch["moe"].pop("capacity_factor")
    return {"name": model.name, "architecture": arch, "training": asdict(model.training)}


def cluster_to_mapping(cluster: ClusterSpec) -> dict[str, Any]:
    """The cluster.yaml mapping (device inline) that loads back to `cluster`."""
    out = {f.name: getattr(cluster, f.name) for f in fields(ClusterSpec) if f.name != "device"}
    out["gpu"] = _device_mapping(cluster.device)
    out["sources"] = list(cluster.sources)
    return out


def _device_mapping(device: DeviceSpec) -> dict[str, Any]:
    out = {f.name: getattr(device, f.name) for f in fields(DeviceSpec)}
    out["gemm_efficiency"] = [list(p) for p in device.gemm_efficiency]
    out["attention_efficiency"] = list(device.attention_efficiency)
    out["sources"] = list(device.sources)
    out["peak_tflops"] = dict(device.peak_tflops)
    return out


def _plain(value: Any) -> Any:
    """Tuples to lists, floats rounded to 6 significant digits for stable, readable files."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return float(f"{value:.6g}")
    return value
