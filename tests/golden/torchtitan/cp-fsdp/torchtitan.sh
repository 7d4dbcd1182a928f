#!/usr/bin/env bash
# torchtitan launch written by fmplan for llama3-8b on 2 x 8 H100-SXM-80GB
# strategy: dp=4 tp=2 pp=1 cp=2 mbs=1 zero=3 sp
# One node: bash this file. Several: run it on every node with NNODES, MASTER_ADDR set
# (or submit slurm.sbatch). FMPLAN_DRY_RUN=1 prints the command instead of running it.
# Run from a torchtitan 0.3 environment (python -m torchtitan.train).
set -euo pipefail
HERE=$(CDPATH= cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)

NNODES=${NNODES:-2}
NPROC_PER_NODE=${NPROC_PER_NODE:-8}
MASTER_ADDR=${MASTER_ADDR:-localhost}
MASTER_PORT=${MASTER_PORT:-29500}
RDZV_ID=${RDZV_ID:-fmplan-77278236ab0c0b26}
HF_ASSETS_PATH=${HF_ASSETS_PATH:?set HF_ASSETS_PATH: directory with the Hugging Face tokenizer files}
DUMP_FOLDER=${DUMP_FOLDER:-./outputs}
STEPS=${STEPS:-1000}

if (( NNODES * NPROC_PER_NODE != 16 )); then
  echo "this plan needs 16 GPUs (dp=4 tp=2 pp=1 cp=2), got NNODES=$NNODES x NPROC_PER_NODE=$NPROC_PER_NODE" >&2
  exit 1
fi
if (( NNODES == 1 )); then
  LAUNCH=(--standalone --nnodes 1 --nproc-per-node "$NPROC_PER_NODE")
else
  LAUNCH=(--nnodes "$NNODES" --nproc-per-node "$NPROC_PER_NODE" --rdzv-backend c10d
          --rdzv-endpoint "$MASTER_ADDR:$MASTER_PORT" --rdzv-id "$RDZV_ID")
fi

ARGS=(
  --module llama3
  --config llama3_8b
  --hf_assets_path "$HF_ASSETS_PATH"
  --dump_folder "$DUMP_FOLDER"
  --training.local_batch_size 1
  --training.global_batch_size 512
  --training.seq_len 8192
  --training.steps "$STEPS"
  --training.mixed_precision_param bfloat16
  --parallelism.data_parallel_replicate_degree 1
  --parallelism.data_parallel_shard_degree 4
  --parallelism.fsdp_reshard_after_forward always
  --parallelism.tensor_parallel_degree 2
  --parallelism.context_parallel_degree 2
  --parallelism.pipeline_parallel_degree 1
  activation-checkpoint:none
)

CMD=(torchrun "${LAUNCH[@]}" -m torchtitan.train "${ARGS[@]}" "$@")
if [[ "${FMPLAN_DRY_RUN:-0}" == 1 ]]; then
  printf '%s\n' "${CMD[@]}"
  exit 0
fi
exec "${CMD[@]}"
