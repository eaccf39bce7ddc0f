#!/usr/bin/env bash

# Fine-tune CN-CLIP RN50 (RN50@RBT3-chinese) with clip_match's trainer, in the style of
# Chinese-CLIP's run_scripts. One GPU, several GPUs or several nodes: set the block below on
# each node and run it there. Without a GPU it runs on CPU (gloo), only slowly.
# Command: bash run_scripts/finetune_rn50.sh ${DATAPATH}
#
# Layout (as Chinese-CLIP's): ${DATAPATH}/datasets/${DATASET}/lmdb/{train,valid}
#                             ${DATAPATH}/pretrained_weights/clip_cn_rn50.pt (optional)
#                             ${DATAPATH}/experiments/ (output)
# Every variable below can be overridden from the environment, e.g. MAX_EPOCHS=1 bash ...
set -euo pipefail

# Number of GPUs per worker (processes per node)
GPUS_PER_NODE=${GPUS_PER_NODE:-1}
# Number of workers (nodes); 1 for single-node training
WORKER_CNT=${WORKER_CNT:-1}
# The ip address of the rank-0 worker; localhost for single-node training
export MASTER_ADDR=${MASTER_ADDR:-localhost}
# The port for communication
export MASTER_PORT=${MASTER_PORT:-8514}
# The rank of this worker, in {0, ..., WORKER_CNT-1}; 0 for single-node training
export RANK=${RANK:-0}

DATAPATH=${1:?usage: bash run_scripts/finetune_rn50.sh DATAPATH}
PYTHON=${PYTHON:-python3}
DATASET=${DATASET:-MUGE}

# data options
train_data=${DATAPATH}/datasets/${DATASET}/lmdb/train
val_data=${DATAPATH}/datasets/${DATASET}/lmdb/valid # validation is skipped if this does not exist
num_workers=${NUM_WORKERS:+--num-workers=${NUM_WORKERS}} # default: the usable CPUs, at most 4

# restore options: the official weights when present (nothing is downloaded). As in cn_clip's scripts the
# flags are passed on every run: a re-run after an interruption still goes on from the run's own
# epoch_latest.pt (the trainer applies --resume and the resets only where a run starts)
resume=${RESUME:-${DATAPATH}/pretrained_weights/clip_cn_rn50.pt}
reset_data_offset="--reset-data-offset"
reset_optimizer="--reset-optimizer"

# output options
output_base_dir=${OUTPUT:-${DATAPATH}/experiments/}
name=${NAME:-${DATASET,,}_finetune_rn50_rbt3_bs${BATCH_SIZE:-128}}
save_step_frequency=${SAVE_STEP_FREQUENCY:-999999} # disable it
save_epoch_frequency=1
log_interval=${LOG_INTERVAL:-10}
report_training_batch_acc="--report-training-batch-acc"

# training hyper-params
context_length=52
warmup=${WARMUP:-100}
batch_size=${BATCH_SIZE:-128}
valid_batch_size=${VALID_BATCH_SIZE:-128}
valid_step_interval=${VALID_STEP_INTERVAL:-150}
valid_epoch_interval=1
lr=${LR:-5e-5}
wd=${WD:-0.001}
max_epochs=${MAX_EPOCHS:-3} # or set MAX_STEPS
max_steps=${MAX_STEPS:+--max-steps=${MAX_STEPS}}
accum_freq=${ACCUM_FREQ:-1}
precision=${PRECISION:-amp} # amp (fp16), bf16 or fp32
augment=${AUGMENT:-safe}    # none | safe (no flips, no colour inversion) | cnclip
grad_checkpointing=${GRAD_CHECKPOINTING:-} # "--grad-checkpointing" to save memory
vision_model=RN50
text_model=RBT3-chinese

resume_flags=()
if [[ -f "${resume}" ]]; then
  resume_flags=("--resume=${resume}" "${reset_data_offset}" "${reset_optimizer}")
elif [[ -n ${RESUME:-} ]]; then
  echo "error: RESUME=${RESUME}: no such checkpoint" >&2
  exit 2
else
  echo "note: ${resume} not found; training from random initialisation" >&2
fi
val_flag=()
if [[ -d "${val_data}" ]]; then
  val_flag=("--val-data=${val_data}")
fi

# "--" keeps torchrun from parsing the trainer's flags (it rejects --logs as ambiguous).
"${PYTHON}" -m torch.distributed.run --nproc_per_node="${GPUS_PER_NODE}" --nnodes="${WORKER_CNT}" \
          --node_rank="${RANK}" --master_addr="${MASTER_ADDR}" --master_port="${MASTER_PORT}" \
          -m clip_match.train -- \
          --train-data="${train_data}" \
          ${val_flag[@]+"${val_flag[@]}"} \
          ${resume_flags[@]+"${resume_flags[@]}"} \
          --logs="${output_base_dir}" \
          --name="${name}" \
          --save-step-frequency="${save_step_frequency}" \
          --save-epoch-frequency="${save_epoch_frequency}" \
          --log-interval="${log_interval}" \
          ${report_training_batch_acc} \
          --context-length="${context_length}" \
          --warmup="${warmup}" \
          --batch-size="${batch_size}" \
          --valid-batch-size="${valid_batch_size}" \
          --valid-step-interval="${valid_step_interval}" \
          --valid-epoch-interval="${valid_epoch_interval}" \
          --lr="${lr}" \
          --wd="${wd}" \
          --max-epochs="${max_epochs}" \
          ${max_steps} \
          --accum-freq="${accum_freq}" \
          ${num_workers} \
          --precision="${precision}" \
          --augment="${augment}" \
          ${grad_checkpointing} \
          --vision-model="${vision_model}" \
          --text-model="${text_model}"
