#!/usr/bin/env bash
# torchtitan launch written by fmplan for deepseek-v3 on 32 x 8 H100-SXM-80GB
# strategy: dp=32 tp=1 pp=8 cp=1 ep=32 etp=1 mbs=1 zero=3 recompute=full
# One node: bash this file. Several: run it on every node with NNODES, MASTER_ADDR set
# (or submit slurm.sbatch). FMPLAN_DRY_RUN=1 prints the command instead of running it.
# Run from a torchtitan 0.3 environment (python -m torchtitan.train).
set -euo pipefail
HERE=$(CDPATH= cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)

NNODES=${NNODES:-32}
NPROC_PER_NODE=${NPROC_PER_NODE:-8}
MASTER_ADDR=${MASTER_ADDR:-localhost}
MASTER_PORT=${MASTER_PORT:-29500}
RDZV_ID=${RDZV_ID:-fmplan-9f28b186485fd673}
HF_ASSETS_PATH=${HF_ASSETS_PATH:?set HF_ASSETS_PATH: directory with the Hugging Face tokenizer files}
DUMP_FOLDER=${DUMP_FOLDER:-./outputs}
STEPS=${STEPS:-1000}

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
  --module deepseek_v3
  --config deepseek_v3_671b
  --hf_assets_path "$HF_ASSETS_PATH"
  --dump_folder "$DUMP_FOLDER"
  --training.local_batch_size 480
  --training.global_batch_size 15360
  --training.seq_len 4096
  --training.steps "$STEPS"
  --training.mixed_precision_param bfloat16
  --training.disable_cuda_graphs
  --parallelism.data_parallel_replicate_degree 1
  --parallelism.data_parallel_shard_degree 32
  --parallelism.fsdp_reshard_after_forward always
  --parallelism.tensor_parallel_degree 1
  --parallelism.context_parallel_degree 1
  --parallelism.pipeline_parallel_degree 8
  --parallelism.expert_parallel_degree 32
  --parallelism.pipeline_parallel_schedule 1F1B
  --parallelism.pipeline_parallel_microbatch_size 1
  --parallelism.module_fqns_per_model_part tok_embeddings,layers.0,layers.1,layers.2,layers.3,layers.4,layers.5,layers.6 layers.7,layers.8,layers.9,layers.10,layers.11,layers.12,layers.13,layers.14 layers.15,layers.16,layers.17,layers.18,layers.19,layers.20,layers.21,layers.22 layers.23,layers.24,layers.25,layers.26,layers.27,layers.28,layers.29,layers.30 layers.31,layers.32,layers.33,layers.34,layers.35,layers.36,layers.37,layers.38 layers.39,layers.40,layers.41,layers.42,layers.43,layers.44,layers.45,layers.46 layers.47,layers.48,layers.49,layers.50,layers.51,layers.52,layers.53,layers.54 layers.55,layers.56,layers.57,layers.58,layers.59,layers.60,norm,lm_head
  activation-checkpoint:full
)

CMD=(torchrun "${LAUNCH[@]}" -m torchtitan.train "${ARGS[@]}" "$@")
if [[ "${FMPLAN_DRY_RUN:-0}" == 1 ]]; then
  printf '%s\n' "${CMD[@]}"
  exit 0
fi
exec "${CMD[@]}"
