"""Shipped presets under `configs/` (devices, clusters, models), found by name."""
from __future__ import annotations

import difflib
import re
from importlib import resources
from pathlib import Path

KINDS = ("devices", "clusters", "models", "stacks")
DEFAULT_CLUSTER = "dgx-h100-8n"
"""Cluster used by `solve`/`estimate` without --cluster: 8 DGX H100 nodes (64 GPUs)."""
_SIZED = re.compile(r"^(?P<base>.+)-(?P<nodes>\d+)n$")


def _dir(kind: str) -> Path:
    return Path(str(resources.files("configs"))) / kind


def names(kind: str) -> list[str]:
    """Preset names of one kind, sorted."""
    return sorted(p.stem for p in _dir(kind).glob("*.yaml"))


def has(kind: str, name: str) -> bool:
    """Whether a preset of that kind and name exists."""
    return (_dir(kind) / f"{name}.yaml").is_file()


def path(kind: str, name: str) -> Path:
    """The preset file's path."""
    return _dir(kind) / f"{name}.yaml"


def suggest(kind: str, name: str) -> str:
    """A "did you mean" hint listing the closest preset names."""
    close = difflib.get_close_matches(name, names(kind), n=3, cutoff=0.4)
    if close:
        return "did you mean " + " or ".join(f"`{c}`" for c in close) + "?"
    return f"see `fmplan presets` for the {kind} presets"


def sized_cluster(name: str) -> tuple[str, int] | None:
    """Split a sized cluster name such as `dgx-h100-128n` into (`dgx-h100`, 128), if it is one."""
    match = _SIZED.match(name)
    if match and has("clusters", match["base"]) and int(match["nodes"]) >= 1:
        return match["base"], int(match["nodes"])
    return None
