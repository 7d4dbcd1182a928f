"""The matrix of plans the emitter tests run through every engine's parser, and helpers to run an
emitted launch script in dry-run mode and to compare emitted files with their golden copies.

Golden files live in tests/golden/<engine>/<case>/. After an intended change to an emitter,
regenerate them with `FMPLAN_UPDATE_GOLDEN=1 python -m pytest tests/test_emit_*.py` and review the
diff before committing.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import replace
from pathlib import Path

from planner.loading import load_cluster, load_model
from planner.plan import Plan
from planner.strategy import Strategy

GOLDEN = Path(__file__).parent / "golden"

CASES: dict[str, tuple[str, str, dict]] = {
    # name: (model preset, cluster preset, strategy fields)
    "gpt-dense": ("gpt3-1.3b", "dgx-h100-1n", dict(dp=8, mbs=4)),
    "gpt-pp": ("gpt3-1.3b", "dgx-h100-1n", dict(dp=4, pp=2, zero=1, mbs=2, recompute="full",
                                                 stage_layers=(12, 12))),
    "llama-gqa-selective": ("llama3-8b", "dgx-h100-2n",
                            dict(dp=8, tp=2, sp=True, zero=1, recompute="selective",
                                 tp_comm_overlap=True)),
    "llama-gqa-fsdp": ("llama3-8b", "dgx-h100-2n",
                       dict(dp=8, tp=2, sp=True, zero=2, recompute="selective")),
    "pp-first-last": ("llama3-70b", "dgx-h100-8n",
                      dict(dp=2, tp=8, pp=4, zero=1, sp=True, recompute="full",
                           stage_layers=(19, 21, 21, 19))),
    "pp-any-split": ("llama3-70b", "dgx-h100-8n",
                     dict(dp=2, tp=8, pp=4, zero=3, sp=True, stage_layers=(18, 20, 22, 20))),
    "vpp-even": ("llama3-70b", "dgx-h100-8n",
                 dict(dp=2, tp=8, pp=4, vpp=2, zero=1, sp=True, stage_layers=(20, 20, 20, 20))),
    "vpp-uneven-block": ("llama3-70b", "dgx-h100-8n",
                         dict(dp=2, tp=8, pp=4, vpp=2, zero=1, sp=True, recompute="full",
                              recompute_layers=4, stage_layers=(19, 21, 21, 19))),
    "cp": ("llama3-8b", "dgx-h100-2n", dict(dp=4, tp=2, cp=2, sp=True, zero=1)),
    "cp-fsdp": ("llama3-8b", "dgx-h100-2n", dict(dp=4, tp=2, cp=2, sp=True, zero=3)),
    "zero3-offload": ("llama3-8b", "dgx-h100-2n",
                      dict(dp=16, zero=3, offload_optimizer=True, offload_params=True,
                           recompute="full")),
    "zero1-offload": ("llama3-8b", "dgx-h100-2n",
                      dict(dp=8, tp=2, sp=True, zero=1, offload_optimizer=True,
                           recompute="full", recompute_layers=8)),
    # Mixture of experts: 8 experts over ep=8 (expert data parallel 2*8/8 = 2), whole experts.
    "moe-mixtral-ep": ("mixtral-8x7b", "dgx-h100-8n",
                       dict(dp=8, tp=2, pp=4, ep=8, etp=1, sp=True, zero=1, recompute="selective")),
    # DeepSeek-V3: 3 dense layers, a shared expert, MLA; 256 experts over ep=16, etp=2 (tp*dp =
    # ep*etp = 32, expert data parallel 1); 61 layers over 8 stages (first and last lighter).
    "moe-deepseek-ep-etp": ("deepseek-v3", "dgx-h100-32n",
                            dict(dp=16, tp=2, pp=8, ep=16, etp=2, sp=True, zero=1,
                                 recompute="full", stage_layers=(7, 8, 8, 8, 8, 8, 8, 6))),
    # DeepSeek-V3 with the all-to-all of one micro-batch overlapped with another's computation
    # (Megatron's combined 1F1B needs the interleaved schedule: vpp=2; no full recompute).
    "moe-deepseek-ep-overlap": ("deepseek-v3", "dgx-h100-32n",
                                dict(dp=32, pp=8, vpp=2, ep=32, zero=1, recompute="selective",
                                     ep_comm_overlap=True, stage_layers=(7, 8, 8, 8, 8, 8, 8, 6))),
    # DeepSeek-V3 under FSDP: ep=32 carved from the 32 sharded data-parallel ranks.
    "moe-deepseek-fsdp-ep": ("deepseek-v3", "dgx-h100-32n",
                             dict(dp=32, pp=8, ep=32, zero=3, recompute="full",
                                  stage_layers=(7, 8, 8, 8, 8, 8, 8, 6))),
    # Llama 4 Maverick: dense and MoE blocks alternate; 128 experts over ep=8, 48 layers on 4
    # stages (whole dense+MoE pairs, first and last stage lighter).
    "moe-llama4-interleaved": ("llama4-maverick", "dgx-h100-16n",
                               dict(dp=4, tp=8, pp=4, ep=8, etp=1, sp=True, zero=1,
                                    recompute="full", stage_layers=(10, 14, 14, 10))),
}


PRECISION = {"gpt-dense-fp8": "fp8", "gpt-pp-fp16": "fp16", "moe-deepseek-fsdp-ep-bf16": "bf16"}
"""Cases that are another case with a different training precision (torchtitan trains bf16 only;
DeepSeek-V3's preset is fp8, as published)."""


def plan(case: str) -> Plan:
    """The plan of one case (its strategy validated against model and cluster)."""
    base = case.rsplit("-", 1)[0] if case in PRECISION else case
    model_name, cluster_name, fields = CASES[base]
    model, cluster = load_model(model_name), load_cluster(cluster_name)
    if case in PRECISION:
        model = replace(model, training=replace(model.training, precision=PRECISION[case]))
    strategy = Strategy(**fields)
    strategy.validate(model, cluster)
    return Plan(model=model, cluster=cluster, strategy=strategy)


_LAUNCH_ENV = ("NNODES", "NPROC_PER_NODE", "MASTER_ADDR", "MASTER_PORT", "RDZV_ID", "RANK",
               "WORLD_SIZE", "LOCAL_RANK")
"""Variables the scripts read that other tests (DeepSpeed's process group) may have set here."""


def dry_run(script: Path, env: dict[str, str]) -> list[str]:
    """The command the launch script would exec (FMPLAN_DRY_RUN=1), one argument per item."""
    inherited = {k: v for k, v in os.environ.items() if k not in _LAUNCH_ENV}
    result = subprocess.run(["bash", str(script)], env={**inherited, **env, "FMPLAN_DRY_RUN": "1"},
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise AssertionError(f"{script} failed: {result.stderr}")
    return result.stdout.splitlines()


def check_golden(files: list[Path], engine: str, case: str) -> None:
    """Each emitted file equals tests/golden/<engine>/<case>/<name> (or rewrites it on request)."""
    folder = GOLDEN / engine / case
    update = os.environ.get("FMPLAN_UPDATE_GOLDEN") == "1"
    for path in files:
        golden = folder / path.name
        if update:
            folder.mkdir(parents=True, exist_ok=True)
            golden.write_text(path.read_text())
            continue
        assert golden.is_file(), f"no golden file {golden} (FMPLAN_UPDATE_GOLDEN=1 writes it)"
        assert path.read_text() == golden.read_text(), (
            f"{path.name} differs from {golden} (FMPLAN_UPDATE_GOLDEN=1 to accept the change)")
    if not update:
        expected = sorted(p.name for p in folder.iterdir())
        assert sorted(p.name for p in files) == expected
