"""torchrun and SLURM launch scripts shared by every engine's emitter.

`torchrun_script` writes a bash script that runs one program under torchrun on this node: a
standalone rendezvous on one node, a c10d rendezvous (`--rdzv-backend c10d`) across several, so the
same file serves a laptop-sized smoke test and every node of a multi-node job. `slurm_script` wraps it
in an sbatch file: one task per node, the first node of the allocation as rendezvous host.

Every value fmplan writes into a script goes through `quote` (shlex.quote); values the user
supplies at launch time arrive as environment variables and are expanded inside double quotes;
names (model, device) appear only in comments, on one line. `FMPLAN_DRY_RUN=1` prints the command,
one argument per line, instead of running it (the tests read it that way).
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from planner.plan import Plan


@dataclass(frozen=True, kw_only=True)
class LaunchVar:
    """An environment variable the launch script reads (a path or a setting the user provides)."""

    name: str
    """Variable name, e.g. DATA_PATH."""
    help: str
    """What it is, shown when it is missing."""
    default: str | None = None
    """Value used when the variable is unset; None makes it required."""


def torchrun_script(plan: Plan, *, engine: str, variables: list[LaunchVar],
                    exports: dict[str, str], program: list[str], args: list[str],
                    values: dict[str, str], notes: list[str]) -> str:
    """A bash script running `torchrun <launch options> <program> <args>` for `plan`.

    `program` and `args` are bash words (already quoted); `values` bakes defaults for `variables`
    (shell-quoted here); `exports` are environment settings the engine needs; `notes` become comments.
    """
    st, cluster = plan.strategy, plan.cluster
    lines = [
        "#!/usr/bin/env bash",
        f"# {engine} launch written by fmplan for {_comment(plan.model.name)} on "
        f"{cluster.nodes} x {cluster.gpus_per_node} {_comment(cluster.device.name)}",
        f"# strategy: {st.describe()}",
        "# One node: bash this file. Several: run it on every node with NNODES, MASTER_ADDR set",
        "# (or submit slurm.sbatch). FMPLAN_DRY_RUN=1 prints the command instead of running it.",
        *[f"# {_comment(note)}" for note in notes],
        "set -euo pipefail",
        # CDPATH unset: with it, `cd` prints the directory it enters into HERE.
        'HERE=$(CDPATH= cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)',
        "",
        f"NNODES=${{NNODES:-{cluster.nodes}}}",
        f"NPROC_PER_NODE=${{NPROC_PER_NODE:-{cluster.gpus_per_node}}}",
        "MASTER_ADDR=${MASTER_ADDR:-localhost}",
        "MASTER_PORT=${MASTER_PORT:-29500}",
        f"RDZV_ID=${{RDZV_ID:-fmplan-{plan.digest()}}}",
    ]
    for var in variables:
        default = values.get(var.name, var.default)
        if default is None:
            lines.append(f"{var.name}=${{{var.name}:?set {var.name}: {_comment(var.help)}}}")
        else:
            lines.append(f"{var.name}=${{{var.name}:-{quote(default)}}}")
    lines += [f"export {name}={quote(value)}" for name, value in sorted(exports.items())]
    lines += [
        "",
        f"if (( NNODES * NPROC_PER_NODE != {st.world} )); then",
        f"  echo \"this plan needs {st.world} GPUs (dp={st.dp} tp={st.tp} pp={st.pp} cp={st.cp}), "
        "got NNODES=$NNODES x NPROC_PER_NODE=$NPROC_PER_NODE\" >&2",
        "  exit 1",
        "fi",
        "if (( NNODES == 1 )); then",
        '  LAUNCH=(--standalone --nnodes 1 --nproc-per-node "$NPROC_PER_NODE")',
        "else",
        '  LAUNCH=(--nnodes "$NNODES" --nproc-per-node "$NPROC_PER_NODE" --rdzv-backend c10d',
        '          --rdzv-endpoint "$MASTER_ADDR:$MASTER_PORT" --rdzv-id "$RDZV_ID")',
        "fi",
        "",
        "ARGS=(",
        *[f"  {arg}" for arg in args],
        ")",
        "",
        f'CMD=(torchrun "${{LAUNCH[@]}}" {" ".join(program)} "${{ARGS[@]}}" "$@")',
        'if [[ "${FMPLAN_DRY_RUN:-0}" == 1 ]]; then',
        "  printf '%s\\n' \"${CMD[@]}\"",
        "  exit 0",
        "fi",
        'exec "${CMD[@]}"',
    ]
    return "\n".join(lines) + "\n"


def slurm_script(plan: Plan, *, script: str) -> str:
    """An sbatch file running `script` once per node under srun (torchrun starts the GPU ranks)."""
    cluster = plan.cluster
    job = re.sub(r"[^A-Za-z0-9_.-]+", "-", plan.model.name).strip("-") or "fmplan"
    return "\n".join([
        "#!/usr/bin/env bash",
        f"#SBATCH --job-name=fmplan-{job}",
        f"#SBATCH --nodes={cluster.nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={cluster.gpus_per_node}",
        "#SBATCH --exclusive",
        f"# Written by fmplan: runs {script} on each of the {cluster.nodes} nodes; the first node",
        "# of the allocation hosts the torchrun rendezvous. Submit from this directory: sbatch slurm.sbatch",
        "set -euo pipefail",
        "",
        # The whole list, then its first line: `| head -n 1` under pipefail fails the job when
        # scontrol is still writing as head exits (SIGPIPE).
        'HOSTS=$(scontrol show hostnames "$SLURM_JOB_NODELIST")',
        "MASTER_ADDR=${HOSTS%%$'\\n'*}",
        f"export NNODES=$SLURM_JOB_NUM_NODES NPROC_PER_NODE={cluster.gpus_per_node}",
        'export MASTER_ADDR MASTER_PORT=${MASTER_PORT:-29500} RDZV_ID="fmplan-$SLURM_JOB_ID"',
        f"srun --kill-on-bad-exit=1 bash {quote(script)} \"$@\"",
    ]) + "\n"


def quote(value: object) -> str:
    """`value` as one bash word that expands to exactly its text (the one place fmplan quotes
    what it writes into a script; tests/test_injection.py runs the scripts with hostile names)."""
    return shlex.quote(str(value))


def _comment(text: str) -> str:
    """Text safe inside a `#` comment line."""
    return " ".join(text.split())
