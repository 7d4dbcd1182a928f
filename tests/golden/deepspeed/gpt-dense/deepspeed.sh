#!/usr/bin/env bash
# DeepSpeed launch written by fmplan for gpt3-1.3b on 1 x 8 H100-SXM-80GB
# strategy: dp=8 tp=1 pp=1 cp=1 mbs=4 zero=0
# One node: bash this file. Several: run it on every node with NNODES, MASTER_ADDR set
# (or submit slurm.sbatch). FMPLAN_DRY_RUN=1 prints the command instead of running it.
# Learning rate and optimizer hyper-parameters in ds_config.json are defaults to edit.
set -euo pipefail
HERE=$(CDPATH= cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)

NNODES=${NNODES:-1}
NPROC_PER_NODE=${NPROC_PER_NODE:-8}
MASTER_ADDR=${MASTER_ADDR:-localhost}
MASTER_PORT=${MASTER_PORT:-29500}
RDZV_ID=${RDZV_ID:-fmplan-5c92ce155908e83a}
TRAIN_SCRIPT=${TRAIN_SCRIPT:?set TRAIN_SCRIPT: your training script: it calls deepspeed.initialize(args=...) and accepts --deepspeed --deepspeed_config (deepspeed.add_config_arguments)}

if (( NNODES * NPROC_PER_NODE != 8 )); then
  echo "this plan needs 8 GPUs (dp=8 tp=1 pp=1 cp=1), got NNODES=$NNODES x NPROC_PER_NODE=$NPROC_PER_NODE" >&2
  exit 1
fi
if (( NNODES == 1 )); then
  LAUNCH=(--standalone --nnodes 1 --nproc-per-node "$NPROC_PER_NODE")
else
  LAUNCH=(--nnodes "$NNODES" --nproc-per-node "$NPROC_PER_NODE" --rdzv-backend c10d
          --rdzv-endpoint "$MASTER_ADDR:$MASTER_PORT" --rdzv-id "$RDZV_ID")
fi

ARGS=(
  --deepspeed
  --deepspeed_config "$HERE/ds_config.json"
)

CMD=(torchrun "${LAUNCH[@]}" "$TRAIN_SCRIPT" "${ARGS[@]}" "$@")
if [[ "${FMPLAN_DRY_RUN:-0}" == 1 ]]; then
  printf '%s\n' "${CMD[@]}"
  exit 0
fi
exec "${CMD[@]}"
