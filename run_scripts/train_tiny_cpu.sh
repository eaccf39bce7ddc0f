#!/usr/bin/env bash

# Train the small "tiny" CN-CLIP config from scratch on CPU (gloo), e.g. on the demo data (10 pairs):
#   bash scripts/demo.sh && BATCH_SIZE=4 bash run_scripts/train_tiny_cpu.sh artifacts/demo_data
# Layout: ${DATAPATH}/lmdb/{train,valid} (what `clip-match build-lmdb` writes).
# Every variable below can be overridden from the environment, e.g. MAX_STEPS=50 bash ...
set -euo pipefail

# Processes on this machine (each uses OMP_NUM_THREADS threads)
NPROC=${NPROC:-1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

DATAPATH=${1:?usage: bash run_scripts/train_tiny_cpu.sh DATAPATH}
venv_python="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python"  # the project's own, when there is one
[[ -x ${venv_python} ]] || venv_python=python3
PYTHON=${PYTHON:-${venv_python}}

# data options
train_data=${DATAPATH}/lmdb/train
val_data=${DATAPATH}/lmdb/valid
num_workers=${NUM_WORKERS:-1}

# output options
output_base_dir=${OUTPUT:-${DATAPATH}/experiments/}
name=${NAME:-tiny_cpu}
save_epoch_frequency=${SAVE_EPOCH_FREQUENCY:-5}
log_interval=${LOG_INTERVAL:-5}

# training hyper-params (the probe that is known to learn: AdamW 1e-3, wd 0.1, warm-up, cosine)
model=tiny
batch_size=${BATCH_SIZE:-64}
valid_batch_size=${VALID_BATCH_SIZE:-64}
lr=${LR:-1e-3}
wd=${WD:-0.1}
warmup=${WARMUP:-20}
max_epochs=${MAX_EPOCHS:-30}
max_steps=${MAX_STEPS:+--max-steps=${MAX_STEPS}}
augment=${AUGMENT:-safe}

val_flag=()  # validation when the split exists and holds pairs (an empty split is written for --split 1,0,0)
if [[ -d ${val_data} ]] && "${PYTHON}" -c 'import sys; from clip_match.data.lmdb_reader import LMDBReader
sys.exit(not len(LMDBReader(sys.argv[1])))' "${val_data}" 2>/dev/null; then
  val_flag=("--val-data=${val_data}")
fi

"${PYTHON}" -m torch.distributed.run --standalone --nproc_per_node="${NPROC}" \
          -m clip_match.train -- \
          --device=cpu \
          --model="${model}" \
          --train-data="${train_data}" \
          ${val_flag[@]+"${val_flag[@]}"} \
          --logs="${output_base_dir}" \
          --name="${name}" \
          --save-epoch-frequency="${save_epoch_frequency}" \
          --log-interval="${log_interval}" \
          --batch-size="${batch_size}" \
          --valid-batch-size="${valid_batch_size}" \
          --lr="${lr}" \
          --wd="${wd}" \
          --warmup="${warmup}" \
          --max-epochs="${max_epochs}" \
          ${max_steps} \
          --num-workers="${num_workers}" \
          --augment="${augment}"
