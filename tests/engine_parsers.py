"""The engines' own parsers, loaded for the emitter tests (test-only dependencies, pinned in
pyproject.toml's `engines` extra and installed by .ci/run).

- DeepSpeed 0.19.8: `deepspeed.runtime.config.DeepSpeedConfig` with an mpu giving the data-parallel
  world size. Shim: DeepSpeed's torch backend JIT-compiles a shared-memory all-reduce kernel for the
  CPU accelerator when it starts (about 3 minutes with ninja); parsing a config never uses it, so
  `build_shm_op` is replaced by a function returning None before the 1-process gloo group starts.
- torchtitan 0.3.0: `ConfigManager.parse_args` on the emitted command line, then
  `ParallelDims.from_config` with the plan's world size.
- Megatron-LM: `megatron/training/arguments.py` ships only in megatron-core >= 0.17 wheels, which
  require Python >= 3.12; the code itself runs on 3.11. .ci/run downloads the 0.19.2 wheel and
  unpacks it under .cache/engines (see MEGATRON_DIR); shims: `typing.override` (3.12) from
  typing_extensions, and `get_device_arch_version` and `torch.cuda.get_device_capability` (ask
  CUDA) return the plan GPU's compute capability; TransformerConfig (megatron_transformer_config) gets apply_rope_fusion off (a
  Transformer Engine kernel). triton, which torchtitan and megatron import at module level, is a real install.
"""
from __future__ import annotations

import os
import sys
import typing
from pathlib import Path
from types import SimpleNamespace

import pytest

MEGATRON_VERSION = "0.19.2"
MEGATRON_DIR = Path(os.environ.get(
    "FMPLAN_MEGATRON_DIR",
    Path(__file__).resolve().parents[1] / ".cache" / "engines" / f"megatron-core-{MEGATRON_VERSION}"))
"""Unpacked megatron-core wheel (holds megatron/training/arguments.py)."""


def megatron_arguments():
    """megatron.training.arguments from the unpacked wheel (skips outside CI when absent)."""
    if not (MEGATRON_DIR / "megatron" / "training" / "arguments.py").is_file():
        if os.environ.get("CI"):
            raise RuntimeError(f"{MEGATRON_DIR} is missing: .ci/run should have unpacked it")
        pytest.skip(f"megatron-core {MEGATRON_VERSION} wheel not unpacked at {MEGATRON_DIR} "
                    "(run the megatron step of .ci/run)")
    if not hasattr(typing, "override"):
        import typing_extensions
        typing.override = typing_extensions.override  # Python 3.12 API used by megatron.training
    if str(MEGATRON_DIR) not in sys.path:
        sys.path.insert(0, str(MEGATRON_DIR))
    import megatron.training.arguments as arguments
    if not arguments.__file__.startswith(str(MEGATRON_DIR)):
        raise RuntimeError(f"megatron imported from {arguments.__file__}, not {MEGATRON_DIR}")
    return arguments


def megatron_validate(argv: list[str], env: dict[str, str], world_size: int, gpu_arch: int = 9):
    """Run Megatron's parse_args + validate_args on `argv` with the launch environment `env`.

    validate_args asks CUDA for the GPU's compute capability (`get_device_arch_version`, and
    `torch.cuda.get_device_capability` for `--moe-grouped-gemm`); without a GPU the test supplies
    the plan's (9 = Hopper) for the duration of the call. With `--delay-wgrad-compute` it asks
    for Transformer Engine >= 2.8 (a GPU install absent here): `is_te_min_version` answers yes
    for that call only.
    """
    arguments = megatron_arguments()
    arguments.get_device_arch_version = lambda: gpu_arch
    saved_argv, saved_env = sys.argv, dict(os.environ)
    saved_capability = arguments.torch.cuda.get_device_capability
    saved_te = arguments.is_te_min_version
    arguments.torch.cuda.get_device_capability = lambda device=None: (gpu_arch, 0)
    if "--delay-wgrad-compute" in argv:
        arguments.is_te_min_version = lambda version, check_equality=True: True
    try:
        sys.argv = ["pretrain_gpt.py", *argv]
        os.environ.pop("CUDA_DEVICE_MAX_CONNECTIONS", None)
        os.environ.update(env, RANK="0", WORLD_SIZE=str(world_size))
        args = arguments.parse_args()
        arguments.validate_args(args)
        return args
    finally:
        arguments.torch.cuda.get_device_capability = saved_capability
        arguments.is_te_min_version = saved_te
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)


def megatron_transformer_config(args):
    """Megatron's TransformerConfig built from validated args: it checks the pipeline layout, the
    first/last stage sizes, the recompute settings and the MoE/MLA settings against the model.
    Shims for Transformer Engine, a GPU install absent here: the fused RoPE kernel is switched off
    (apply_rope_fusion), and for fp8 MoE plans, whose config asks for TE >= 1.11 (FP8 grouped
    GEMM), `is_te_min_version` answers yes for the duration of the call."""
    arguments = megatron_arguments()
    from megatron.core.transformer import transformer_config
    args.apply_rope_fusion = False
    saved = transformer_config.is_te_min_version
    if args.fp8 and args.num_experts:
        transformer_config.is_te_min_version = lambda version, check_equality=True: True
    try:
        return arguments.core_transformer_config_from_args(args)
    finally:
        transformer_config.is_te_min_version = saved


_DS_STARTED = False


def deepspeed_config(config: dict, *, dp: int):
    """DeepSpeedConfig(config, mpu) with a data-parallel world of `dp` ranks."""
    global _DS_STARTED
    import deepspeed
    from deepspeed.runtime.config import DeepSpeedConfig
    if not _DS_STARTED:
        # `import deepspeed.comm.torch` would bind torch itself (deepspeed.comm imports torch).
        sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None  # see the docstring
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(29400 + os.getpid() % 500),
                          RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        deepspeed.init_distributed(dist_backend="gloo", verbose=False)
        _DS_STARTED = True
    mpu = SimpleNamespace(get_data_parallel_world_size=lambda: dp)
    return DeepSpeedConfig(config, mpu=mpu)


def torchtitan_config(argv: list[str], *, world_size: int):
    """torchtitan's ConfigManager on `argv`, and ParallelDims validating the degrees."""
    from torchtitan.config.manager import ConfigManager
    from torchtitan.distributed.parallel_dims import ParallelDims
    config = ConfigManager().parse_args(argv)
    dims = ParallelDims.from_config(config.parallelism, world_size)
    return config, dims
