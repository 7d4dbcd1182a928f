#!/usr/bin/env bash
# Megatron-LM launch written by fmplan for gpt3-1.3b on 1 x 8 H100-SXM-80GB
# strategy: dp=4 tp=1 pp=2 cp=1 mbs=2 zero=1 recompute=full
# One node: bash this file. Several: run it on every node with NNODES, MASTER_ADDR set
# (or submit slurm.sbatch). FMPLAN_DRY_RUN=1 prints the command instead of running it.
# Vocabulary comes from TOKENIZER_MODEL; the plan assumes 51200 tokens (Megatron pads it to a multiple of 128 * tp).
set -euo pipefail
HERE=$(CDPATH= cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)

NNODES=${NNODES:-1}
NPROC_PER_NODE=${NPROC_PER_NODE:-8}
MASTER_ADDR=${MASTER_ADDR:-localhost}
MASTER_PORT=${MASTER_PORT:-29500}
RDZV_ID=${RDZV_ID:-fmplan-c00d915e4c67efd7}
MEGATRON_LM_DIR=${MEGATRON_LM_DIR:?set MEGATRON_LM_DIR: a Megatron-LM checkout (holds pretrain_gpt.py)}
DATA_PATH=${DATA_PATH:?set DATA_PATH: Megatron indexed dataset prefix (path without .bin/.idx)}
TOKENIZER_MODEL=${TOKENIZER_MODEL:?set TOKENIZER_MODEL: Hugging Face tokenizer name or directory}
CHECKPOINT_DIR=${CHECKPOINT_DIR:-checkpoints}
TRAIN_ITERS=${TRAIN_ITERS:-1000}
LR=${LR:-3e-4}
SAVE_INTERVAL=${SAVE_INTERVAL:-1000}

if (( NNODES * NPROC_PER_NODE != 8 )); then
  echo "this plan needs 8 GPUs (dp=4 tp=1 pp=2 cp=1), got NNODES=$NNODES x NPROC_PER_NODE=$NPROC_PER_NODE" >&2
  exit 1
fi
if (( NNODES == 1 )); then
  LAUNCH=(--standalone --nnodes 1 --nproc-per-node "$NPROC_PER_NODE")
else
  LAUNCH=(--nnodes "$NNODES" --nproc-per-node "$NPROC_PER_NODE" --rdzv-backend c10d
          --rdzv-endpoint "$MASTER_ADDR:$MASTER_PORT" --rdzv-id "$RDZV_ID")
fi

ARGS=(
  --num-layers 24
  --hidden-size 2048
  --num-attention-heads 16
  --ffn-hidden-size 8192
  --seq-length 2048
  --max-position-embeddings 2048
  --position-embedding-type learned_absolute
  --attention-backend flash
  --micro-batch-size 2
  --global-batch-size 512
  --fp16
  --optimizer adam
  --tensor-model-parallel-size 1
  --pipeline-model-parallel-size 2
  --overlap-grad-reduce
  --use-distributed-optimizer
  --recompute-granularity full
  --recompute-method uniform
  --recompute-num-layers 1
  --tokenizer-type HuggingFaceTokenizer
  --tokenizer-model "$TOKENIZER_MODEL"
  --data-path "$DATA_PATH"
  --split 99,1,0
  --train-iters "$TRAIN_ITERS"
  --lr "$LR"
  --save "$CHECKPOINT_DIR"
  --load "$CHECKPOINT_DIR"
  --save-interval "$SAVE_INTERVAL"
)

CMD=(torchrun "${LAUNCH[@]}" "$MEGATRON_LM_DIR/pretrain_gpt.py" "${ARGS[@]}" "$@")
if [[ "${FMPLAN_DRY_RUN:-0}" == 1 ]]; then
  printf '%s\n' "${CMD[@]}"
  exit 0
fi
exec "${CMD[@]}"
