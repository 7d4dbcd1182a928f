#!/usr/bin/env bash
# Megatron-LM launch written by fmplan for mixtral-8x7b on 8 x 8 H100-SXM-80GB
# strategy: dp=8 tp=2 pp=4 cp=1 ep=8 etp=1 mbs=1 zero=1 sp recompute=selective
# One node: bash this file. Several: run it on every node with NNODES, MASTER_ADDR set
# (or submit slurm.sbatch). FMPLAN_DRY_RUN=1 prints the command instead of running it.
# Vocabulary comes from TOKENIZER_MODEL; the plan assumes 32000 tokens (Megatron pads it to a multiple of 128 * tp).
set -euo pipefail
HERE=$(CDPATH= cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)

NNODES=${NNODES:-8}
NPROC_PER_NODE=${NPROC_PER_NODE:-8}
MASTER_ADDR=${MASTER_ADDR:-localhost}
MASTER_PORT=${MASTER_PORT:-29500}
RDZV_ID=${RDZV_ID:-fmplan-e5eba7885ac8602c}
MEGATRON_LM_DIR=${MEGATRON_LM_DIR:?set MEGATRON_LM_DIR: a Megatron-LM checkout (holds pretrain_gpt.py)}
DATA_PATH=${DATA_PATH:?set DATA_PATH: Megatron indexed dataset prefix (path without .bin/.idx)}
TOKENIZER_MODEL=${TOKENIZER_MODEL:?set TOKENIZER_MODEL: Hugging Face tokenizer name or directory}
CHECKPOINT_DIR=${CHECKPOINT_DIR:-checkpoints}
TRAIN_ITERS=${TRAIN_ITERS:-1000}
LR=${LR:-3e-4}
SAVE_INTERVAL=${SAVE_INTERVAL:-1000}
export CUDA_DEVICE_MAX_CONNECTIONS=1

if (( NNODES * NPROC_PER_NODE != 64 )); then
  echo "this plan needs 64 GPUs (dp=8 tp=2 pp=4 cp=1), got NNODES=$NNODES x NPROC_PER_NODE=$NPROC_PER_NODE" >&2
  exit 1
fi
if (( NNODES == 1 )); then
  LAUNCH=(--standalone --nnodes 1 --nproc-per-node "$NPROC_PER_NODE")
else
  LAUNCH=(--nnodes "$NNODES" --nproc-per-node "$NPROC_PER_NODE" --rdzv-backend c10d
          --rdzv-endpoint "$MASTER_ADDR:$MASTER_PORT" --rdzv-id "$RDZV_ID")
fi

ARGS=(
  --num-layers 32
  --hidden-size 4096
  --num-attention-heads 32
  --ffn-hidden-size 14336
  --seq-length 4096
  --max-position-embeddings 4096
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
  --num-experts 8
  --moe-router-topk 2
  --moe-ffn-hidden-size 14336
  --moe-grouped-gemm
  --moe-token-dispatcher-type alltoall
  --moe-router-dtype fp32
  --moe-router-score-function softmax
  --moe-router-load-balancing-type aux_loss
  --moe-aux-loss-coeff 1e-2
  --moe-expert-capacity-factor 1.25
  --moe-pad-expert-input-to-capacity
  --micro-batch-size 1
  --global-batch-size 1024
  --bf16
  --optimizer adam
  --tensor-model-parallel-size 2
  --pipeline-model-parallel-size 4
  --expert-model-parallel-size 8
  --expert-tensor-parallel-size 1
  --sequence-parallel
  --overlap-grad-reduce
  --decoder-first-pipeline-num-layers 7
  --decoder-last-pipeline-num-layers 7
  --use-distributed-optimizer
  --recompute-granularity selective
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
