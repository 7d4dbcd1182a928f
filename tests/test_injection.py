"""Emitted launch scripts are injection-safe: plans whose names, paths, hostnames and baked
defaults hold `$(...)`, backticks, quotes, braces, spaces and newlines are emitted with
`fmplan emit`, then every launch script (and slurm.sbatch) runs under bash with torchrun, srun and
scontrol replaced by stubs on PATH that record their argv. Nothing injected may run (no PWNED file
anywhere) and each stub must receive exactly the arguments the plan asks for."""
from __future__ import annotations

import json
import os
import re
import shlex
import string
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from emit_cases import plan as case_plan
from planner.plan import Plan, load_plan

NASTY = "x $(touch PWNED) `touch PWNED` ${HOME} 'q' \"dq\" a}b \\ ;touch PWNED|& \ntouch PWNED\n y *"
"""Every shell metacharacter that could break out of a word, with a newline."""

LAUNCH_ENV = ("NNODES", "NPROC_PER_NODE", "MASTER_ADDR", "MASTER_PORT", "RDZV_ID", "RANK",
              "WORLD_SIZE", "LOCAL_RANK", "CDPATH")

STUB = """#!{python}
import json, os, sys
name = os.path.basename(sys.argv[0])
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps({{"name": name, "argv": sys.argv[1:]}}) + "\\n")
if name == "scontrol":
    with open(os.environ["STUB_HOSTS"]) as hosts:
        for line in hosts:  # one write per host, as a long `scontrol` output arrives
            sys.stdout.write(line)
            sys.stdout.flush()
if name == "srun":  # run the command after srun's own options, as srun does on each node
    command = [arg for arg in sys.argv[1:] if not arg.startswith("--")]
    start = sys.argv.index(command[0])
    os.execvp(sys.argv[start], sys.argv[start:])
"""

CASES = [  # (engine, emitter case, variables set at launch)
    ("megatron", "gpt-dense", ("MEGATRON_LM_DIR", "TOKENIZER_MODEL", "CHECKPOINT_DIR", "LR")),
    ("megatron", "moe-deepseek-ep-etp", ("MEGATRON_LM_DIR", "TOKENIZER_MODEL")),
    ("deepspeed", "gpt-pp", ("TRAIN_SCRIPT",)),
    ("torchtitan", "llama-gqa-fsdp", ("HF_ASSETS_PATH", "STEPS")),
]
BAKED = {"megatron": "DATA_PATH", "deepspeed": None, "torchtitan": "DUMP_FOLDER"}
"""A variable whose default is baked with `fmplan emit --env` (left unset at launch)."""


def nasty_plan(case: str) -> Plan:
    """An emitter case whose model, cluster and device names are all NASTY."""
    plan = case_plan(case)
    cluster = replace(plan.cluster, name=NASTY, device=replace(plan.cluster.device, name=NASTY))
    return replace(plan, model=replace(plan.model, name=NASTY), cluster=cluster)


@pytest.fixture()
def sandbox(tmp_path):
    """(stub directory, working directory, output directory with a NASTY name, log file)."""
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for name in ("torchrun", "srun", "scontrol"):
        path = stubs / name
        path.write_text(STUB.format(python=sys.executable))
        path.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    return stubs, work, tmp_path / f"out {NASTY}", tmp_path / "calls.jsonl"


def _emit(plan: Plan, engine: str, out: Path, tmp_path: Path) -> None:
    from cli.main import main
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(plan.to_yaml())
    args = ["emit", str(plan_file), "--target", engine, "--out", str(out)]
    if BAKED[engine]:
        args += ["--env", f"{BAKED[engine]}={NASTY}"]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 0


def _clean_env() -> dict[str, str]:
    """This process's environment without the launch variables other tests may have set."""
    return {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}


def _run(script: str, cwd: Path, stubs: Path, log: Path, env: dict[str, str]) -> list[dict]:
    log.unlink(missing_ok=True)
    result = subprocess.run(["bash", script, f"--extra {NASTY}"], cwd=cwd, capture_output=True,
                            text=True, env={**_clean_env(), **env, "STUB_LOG": str(log),
                                            "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in log.read_text().splitlines()]


def _expected_args(engine: str, plan: Plan, out: Path, env: dict[str, str]) -> list[str]:
    """The program and its arguments as the plan asks for them: the emitter's bash words split
    the POSIX way, with the launch variables substituted."""
    from planner.emit import ENGINES, deepspeed, megatron, torchtitan
    defaults = {var.name: var.default for var in ENGINES[engine].VARIABLES if var.default}
    if engine == "megatron":
        words = ['"$MEGATRON_LM_DIR/pretrain_gpt.py"', *megatron.arguments(plan)]
    elif engine == "torchtitan":
        words = ["-m torchtitan.train", *torchtitan.arguments(plan)]
    else:
        words = ['"$TRAIN_SCRIPT"', "--deepspeed", f'--deepspeed_config "$HERE/{deepspeed.CONFIG}"']
    tokens = [token for word in words for token in shlex.split(word)]
    values = {**defaults, **env, "HERE": str(out)}
    return [string.Template(token).substitute(values) for token in tokens]


def _no_pwned(root: Path) -> None:
    assert not list(root.rglob("PWNED")), "an injected command ran"


@pytest.mark.parametrize("engine,case,variables", CASES)
def test_launch_script_runs_nothing_injected(engine, case, variables, sandbox, tmp_path):
    stubs, work, out, log = sandbox
    plan = nasty_plan(case)
    _emit(plan, engine, out, tmp_path)
    st, gpus = plan.strategy, plan.cluster.gpus_per_node
    env = {name: f"{name.lower()} {NASTY}" for name in variables}
    env["MASTER_ADDR"] = f"host {NASTY}"
    env["RDZV_ID"] = f"id {NASTY}"
    if BAKED[engine]:
        env_seen = {**env, BAKED[engine]: NASTY}
    else:
        env_seen = env
    from planner.emit import ENGINES
    script = str(out / ENGINES[engine].SCRIPT)
    nodes = st.world // gpus
    calls = _run(script, work, stubs, log, {**env, "NNODES": str(nodes)})
    _no_pwned(tmp_path)
    if nodes == 1:
        launch = ["--standalone", "--nnodes", "1", "--nproc-per-node", str(gpus)]
    else:
        launch = ["--nnodes", str(nodes), "--nproc-per-node", str(gpus), "--rdzv-backend", "c10d",
                  "--rdzv-endpoint", f"{env['MASTER_ADDR']}:29500", "--rdzv-id", env["RDZV_ID"]]
    expected = [*launch, *_expected_args(engine, plan, out, env_seen), f"--extra {NASTY}"]
    assert calls == [{"name": "torchrun", "argv": expected}]
    dry = subprocess.run(["bash", script, f"--extra {NASTY}"], cwd=work, capture_output=True,
                         text=True, env={**_clean_env(), **env, "NNODES": str(nodes),
                                         "FMPLAN_DRY_RUN": "1"})
    assert dry.stdout == "".join(f"{arg}\n" for arg in ["torchrun", *expected])
    _no_pwned(tmp_path)


@pytest.mark.parametrize("engine,case,variables", CASES[:1] + CASES[2:3])
def test_slurm_script_runs_nothing_injected(engine, case, variables, sandbox, tmp_path):
    stubs, work, out, log = sandbox
    plan = nasty_plan(case)
    _emit(plan, engine, out, tmp_path)
    host, job = "node$(touch PWNED)`touch PWNED`", f"42 {NASTY}"
    env = {name: f"{name.lower()} {NASTY}" for name in variables}
    slurm = {"SLURM_JOB_NODELIST": NASTY, "SLURM_JOB_NUM_NODES": str(plan.cluster.nodes),
             "SLURM_JOB_ID": job, "STUB_HOSTS": str(tmp_path / "hosts")}
    # 50,000 hosts overflow a pipe buffer: a `| head -n 1` would kill scontrol (SIGPIPE)
    (tmp_path / "hosts").write_text(host + "".join(f"\nnode-{i}" for i in range(1, 50_000)) + "\n")
    calls = _run("slurm.sbatch", out, stubs, log, {**env, **slurm})
    _no_pwned(tmp_path)
    from planner.emit import ENGINES
    script = ENGINES[engine].SCRIPT
    assert [c["name"] for c in calls] == ["scontrol", "srun", "torchrun"]
    assert calls[0]["argv"] == ["show", "hostnames", NASTY]
    assert calls[1]["argv"] == ["--kill-on-bad-exit=1", "bash", script, f"--extra {NASTY}"]
    env_seen = {**env, BAKED[engine]: NASTY} if BAKED[engine] else env
    gpus = plan.cluster.gpus_per_node
    launch = ["--standalone", "--nnodes", "1", "--nproc-per-node", str(gpus)]
    if plan.cluster.nodes > 1:
        launch = ["--nnodes", str(plan.cluster.nodes), "--nproc-per-node", str(gpus),
                  "--rdzv-backend", "c10d", "--rdzv-endpoint", f"{host}:29500",
                  "--rdzv-id", f"fmplan-{job}"]
    expected = [*launch, *_expected_args(engine, plan, out, env_seen), f"--extra {NASTY}"]
    assert calls[2]["argv"] == expected


def test_plan_yaml_and_ds_config_keep_nasty_names(tmp_path):
    """plan.yaml (and the JSON ds_config beside it) parse back to exactly the strings written."""
    plan = nasty_plan("gpt-pp")
    path = tmp_path / "plan.yaml"
    path.write_text(plan.to_yaml())
    loaded = load_plan(path)
    assert (loaded.model.name, loaded.cluster.name, loaded.cluster.device.name) == (NASTY,) * 3
    assert loaded.to_yaml() == plan.to_yaml()
    from planner.emit import render_files
    files = render_files(plan, "deepspeed")
    json.loads(files["ds_config.json"])
    assert re.search(r"^#SBATCH --job-name=fmplan-[A-Za-z0-9_.-]+$", files["slurm.sbatch"], re.M)


def test_cdpath_does_not_move_the_config_path(sandbox, tmp_path):
    """With CDPATH set, `cd` prints the directory it enters; the script's own directory (HERE,
    where ds_config.json lies) must still be exactly the output directory."""
    stubs, work, out, log = sandbox
    _emit(nasty_plan("gpt-dense"), "deepspeed", out, tmp_path)
    calls = _run(f"{out.name}/deepspeed.sh", tmp_path, stubs, log,
                 {"TRAIN_SCRIPT": "train.py", "CDPATH": str(tmp_path)})
    argv = calls[0]["argv"]
    assert argv[argv.index("--deepspeed_config") + 1] == f"{out}/ds_config.json"
