#!/usr/bin/env bash
# Megatron-LM launch written by fmplan for llama3-70b on 8 x 8 H100-SXM-80GB
# strategy: dp=2 tp=8 pp=4 vpp=2 cp=1 mbs=1 zero=1 sp recompute=fullx4
# One node: bash this file. Several: run it on every node with NNODES, MASTER_ADDR set
# (or submit slurm.sbatch). FMPLAN_DRY_RUN=1 prints the command instead of running it.
# Vocabulary comes from TOKENIZER_MODEL; the plan assumes 128256 tokens (Megatron pads it to a multiple of 128 * tp).
set -euo pipefail
HERE=$(CDPATH= cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)

NNODES=${NNODES:-8}
NPROC_PER_NODE=${NPROC_PER_NODE:-8}
MASTER_ADDR=${MASTER_ADDR:-localhost}
MASTER_PORT=${MASTER_PORT:-29500}
RDZV_ID=${RDZV_ID:-fmplan-fa861c5a34bd5e70}
MEGATRON_LM_DIR=${MEGATRON_LM_DIR:?set MEGATRON_LM_DIR: a Megatron-LM checkout (holds pretrain_gpt.py)}
DATA_PATH=${DATA_PATH:?set DATA_PATH: Megatron indexed dataset prefix (path without .bin/.idx)}
TOKENIZER_MODEL=${TOKENIZER_MODEL:?set TOKENIZER_MODEL: Hugging Face tokenizer name or directory}
CHECKPOINT_DIR=${CHECKPOINT_DIR:-checkpoints}
TRAIN_ITERS=${TRAIN_ITERS:-1000}
LR=${LR:-3e-4}
SAVE_INTERVAL=${SAVE_INTERVAL:-1000}
export CUDA_DEVICE_MAX_CONNECTIONS=1

if (( NNODES * NPROC_PER_NODE != 64 )); then
  echo "this plan needs 64 GPUs (dp=2 tp=8 pp=4 cp=1), got NNODES=$NNODES x NPROC_PER_NODE=$NPROC_PER_NODE" >&2
  exit 1
fi
if (( NNODES == 1 )); then
  LAUNCH=(--standalone --nnodes 1 --nproc-per-node "$NPROC_PER_NODE")
else
  LAUNCH=(--nnodes "$NNODES" --nproc-per-node "$NPROC_PER_NODE" --rdzv-backend c10d
          --rdzv-endpoint "$MASTER_ADDR:$MASTER_PORT" --rdzv-id "$RDZV_ID")
fi

ARGS=(
  --num-layers 80
  --hidden-size 8192
  --num-attention-heads 64
  --ffn-hidden-size 28672
  --seq-length 8192
  --max-position-embeddings 8192
  --group-query-attention
  --num-query-groups 8
  --swiglu
  --normalization RMSNorm
  --untie-embeddings-and-output-weights
  --position-embedding-type rope
  --disable-bias-linear
  --attention-dropout 0
  --hidden-dropout 0
  --attention-backend flash
  --micro-batch-size 1
  --global-batch-size 512
  --bf16
  --optimizer adam
  --tensor-model-parallel-size 8
  --pipeline-model-parallel-size 4
  --sequence-parallel
  --overlap-grad-reduce
  --pipeline-model-parallel-layout 'Et*10|t*11|t*11|t*10|t*9|t*10|t*10|t*9L'
  --use-distributed-optimizer
  --recompute-granularity full
  --recompute-method block
  --recompute-num-layers 2
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
