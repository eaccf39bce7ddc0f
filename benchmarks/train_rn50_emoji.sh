#!/usr/bin/env bash

# A trained RN50 for bench_grid.py's precision check, made offline on CPU in about an hour:
# RN50@RBT3-chinese trained from scratch with the project's trainer on the emoji pairs, mostly at
# 128 px (a third of the 224 px cost), then briefly at 224 px, exported fp32 + int8 (the int8 image
# tower calibrated on the tiles of seed-11 puzzles, as bench_grid.py does for random weights).
#
#   bash benchmarks/train_rn50_emoji.sh
#   .venv/bin/python -m benchmarks.bench_grid --rn50 /tmp/rn50_emoji/bundle
#
# Random weights time RN50 faithfully but put all nine tiles within ~0.01 cosine of each other, so
# they cannot say whether int8 keeps the answers; this model's scores are spread like a trained
# model's. It is not CN-CLIP: an hour of CPU gives a weak model (its puzzle accuracy is printed at
# the end). With the official weights, export those instead and pass them to --rn50.
# Work data goes to $WORK (default /tmp/rn50_emoji); an interrupted run goes on where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
WORK=${WORK:-/tmp/rn50_emoji}
STEPS_128=${STEPS_128:-900}    # optimiser steps of batch 64 at 128 px
STEPS_224=${STEPS_224:-60}     # then of batch 32 at 224 px
PAIR_SEED=0 TRAIN_SEED=123 CALIBRATION_SEED=11 TEST_SEED=2026
clip_match() { "${PYTHON}" -m clip_match.cli "$@"; }

pairs=${WORK}/pairs
if [[ ! -d ${pairs}/lmdb ]]; then
  "${PYTHON}" datasets/emoji/generate.py pairs "${pairs}" --per-emoji 8 --valid-per-emoji 1 --size 128 \
    --captions all --seed "${PAIR_SEED}" --overwrite
  clip_match build-lmdb "${pairs}" --splits train,valid --overwrite
fi

# RN50@RBT3-chinese at 128 px: only the attention pool's positional embedding depends on the size.
config_128=${WORK}/RN50_128px.json
"${PYTHON}" - "${config_128}" <<'EOF'
import dataclasses, json, sys
from clip_match.model import load_config
config = dataclasses.replace(load_config("RN50@RBT3-chinese"), image_resolution=128)
fields = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("name", "trim_margin", "fold_wide")}
with open(sys.argv[1], "w") as handle:
    json.dump(fields, handle, indent=2)
EOF

train() {  # train RUN MODEL STEPS BATCH LR INIT: a warm-up + cosine cycle (an interrupted run resumes)
  local resume=${WORK}/runs/$1/checkpoints/epoch_latest.pt
  [[ -f ${resume} ]] || resume=$6
  "${PYTHON}" -m clip_match.train --device=cpu --model="$2" --precision=bf16 \
    --train-data="${pairs}/lmdb/train" --val-data="${pairs}/lmdb/valid" --logs="${WORK}/runs" --name="$1" \
    --seed="${TRAIN_SEED}" --batch-size="$4" --valid-batch-size=128 --lr="$5" --wd=0.1 --warmup=50 \
    --max-steps="$3" --augment=safe --num-workers=1 --log-interval=20 --save-step-frequency=50 \
    --keep-step-checkpoints=1 ${resume:+--resume="${resume}"}
}
train rn50_128px "${config_128}" "${STEPS_128}" 64 5e-4 ""
resized=${WORK}/rn50_224px_init.pt
[[ -f ${resized} ]] || clip_match resize "${WORK}/runs/rn50_128px/checkpoints/slim.pt" --model RN50@RBT3-chinese \
  --out "${resized}"
train rn50_224px RN50@RBT3-chinese "${STEPS_224}" 32 1e-4 "${resized}"

tiles=${WORK}/calibration_tiles_seed${CALIBRATION_SEED}
[[ -d ${tiles} ]] || "${PYTHON}" datasets/emoji/generate.py tiles "${tiles}" --count 8 --seed "${CALIBRATION_SEED}"
[[ -f ${WORK}/bundle/clip_match.json ]] || clip_match export "${WORK}/runs/rn50_224px/checkpoints/slim.pt" \
  --arch RN50@RBT3-chinese --precision fp32,int8 --calibration-images "${tiles}" --out "${WORK}/bundle" --overwrite

test_dir=${WORK}/puzzles_seed${TEST_SEED}
[[ -f ${test_dir}/puzzles.jsonl ]] || "${PYTHON}" datasets/emoji/generate.py puzzles "${test_dir}" --count 200 \
  --seed "${TEST_SEED}" --overwrite
clip_match eval-grid "${test_dir}/puzzles.jsonl" --bundle "${WORK}/bundle" --precision fp32
