#!/usr/bin/env bash
# Megatron-LM launch written by fmplan for deepseek-v3 on 32 x 8 H100-SXM-80GB
# strategy: dp=32 tp=1 pp=8 vpp=2 cp=1 ep=32 etp=1 mbs=1 zero=1 ep-overlap recompute=selective
# One node: bash this file. Several: run it on every node with NNODES, MASTER_ADDR set
# (or submit slurm.sbatch). FMPLAN_DRY_RUN=1 prints the command instead of running it.
# Vocabulary comes from TOKENIZER_MODEL; the plan assumes 129280 tokens (Megatron pads it to a multiple of 128 * tp).
# The all-to-all overlap needs torch >= 2.6 and, with --delay-wgrad-compute and --overlap-grad-reduce, Transformer Engine >= 2.8 (Megatron's checks).
set -euo pipefail
HERE=$(CDPATH= cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)

NNODES=${NNODES:-32}
NPROC_PER_NODE=${NPROC_PER_NODE:-8}
MASTER_ADDR=${MASTER_ADDR:-localhost}
MASTER_PORT=${MASTER_PORT:-29500}
RDZV_ID=${RDZV_ID:-fmplan-c2ea7da295842c6d}
MEGATRON_LM_DIR=${MEGATRON_LM_DIR:?set MEGATRON_LM_DIR: a Megatron-LM checkout (holds pretrain_gpt.py)}
DATA_PATH=${DATA_PATH:?set DATA_PATH: Megatron indexed dataset prefix (path without .bin/.idx)}
TOKENIZER_MODEL=${TOKENIZER_MODEL:?set TOKENIZER_MODEL: Hugging Face tokenizer name or directory}
CHECKPOINT_DIR=${CHECKPOINT_DIR:-checkpoints}
TRAIN_ITERS=${TRAIN_ITERS:-1000}
LR=${LR:-3e-4}
SAVE_INTERVAL=${SAVE_INTERVAL:-1000}
export CUDA_DEVICE_MAX_CONNECTIONS=32

if (( NNODES * NPROC_PER_NODE != 256 )); then
  echo "this plan needs 256 GPUs (dp=32 tp=1 pp=8 cp=1), got NNODES=$NNODES x NPROC_PER_NODE=$NPROC_PER_NODE" >&2
  exit 1
fi
if (( NNODES == 1 )); then
  LAUNCH=(--standalone --nnodes 1 --nproc-per-node "$NPROC_PER_NODE")
else
  LAUNCH=(--nnodes "$NNODES" --nproc-per-node "$NPROC_PER_NODE" --rdzv-backend c10d
          --rdzv-endpoint "$MASTER_ADDR:$MASTER_PORT" --rdzv-id "$RDZV_ID")
fi

ARGS=(
  --num-layers 61
  --hidden-size 7168
  --num-attention-heads 128
  --ffn-hidden-size 18432
  --seq-length 4096
  --max-position-embeddings 4096
  --swiglu
  --normalization RMSNorm
  --untie-embeddings-and-output-weights
  --position-embedding-type rope
  --disable-bias-linear
  --attention-dropout 0
  --hidden-dropout 0
  --attention-backend flash
  --multi-latent-attention
  --qk-layernorm
  --q-lora-rank 1536
  --kv-lora-rank 512
  --qk-head-dim 128
  --qk-pos-emb-head-dim 64
  --v-head-dim 128
  --num-experts 256
  --moe-router-topk 8
  --moe-ffn-hidden-size 2048
  --moe-shared-expert-intermediate-size 2048
  --moe-layer-freq '([0]*3+[1]*58)'
  --moe-grouped-gemm
  --moe-token-dispatcher-type alltoall
  --moe-router-dtype fp32
  --moe-router-score-function sigmoid
  --moe-router-topk-scaling-factor 2.5
  --moe-router-num-groups 8
  --moe-router-group-topk 4
  --moe-router-enable-expert-bias
  --moe-router-load-balancing-type seq_aux_loss
  --moe-aux-loss-coeff 1e-4
  --micro-batch-size 1
  --global-batch-size 15360
  --bf16
  --fp8-format hybrid
  --optimizer adam
  --tensor-model-parallel-size 1
  --pipeline-model-parallel-size 8
  --expert-model-parallel-size 32
  --expert-tensor-parallel-size 1
  --overlap-grad-reduce
  --overlap-moe-expert-parallel-comm
  --delay-wgrad-compute
  --pipeline-model-parallel-layout 'Et*4|t*4|t*4|t*4|t*4|t*4|t*4|t*3|t*3|t*4|t*4|t*4|t*4|t*4|t*4|t*3L'
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
