"""Who measured: the device's identity and the software versions, for the profile's header."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys

import torch

from cost_models.profile_format import DeviceIdentity, Software


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return "CPU " + line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU " + (platform.processor() or platform.machine())


def device_identity(device: torch.device, count: int) -> DeviceIdentity:
    """Name, kind, memory and thread count of the measuring device."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return DeviceIdentity(name=props.name, kind="cuda", memory_bytes=int(props.total_memory),
                              count=count, threads=torch.get_num_threads())
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return DeviceIdentity(name=cpu_name(), kind="cpu", memory_bytes=int(memory), count=count,
                          threads=torch.get_num_threads())


def _driver_version() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out.strip() else None


def software(device: torch.device, backend: str | None) -> Software:
    """torch, Python, CUDA and driver versions, and the communication backend used."""
    cuda = device.type == "cuda"
    return Software(torch=torch.__version__, python=sys.version.split()[0],
                    cuda=torch.version.cuda if cuda else None,
                    driver=_driver_version() if cuda else None, comm_backend=backend)
