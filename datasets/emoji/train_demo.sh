#!/usr/bin/env bash

# Reproduce the bundled demo model (clip_match/assets/demo_bundle) from a fresh clone, on CPU:
#   the previous demo (Noto + Fluent Flat only; its bundle as committed at INIT_COMMIT, read back into a
#   checkpoint with `clip-match unexport`) -> for each stage, fresh seeded renderings of every emoji in
#   every training style (each linked to all its names and puzzle tags) -> build-lmdb -> a warm-up +
#   cosine cycle of the trainer from the last stage's weights -> export int8 (the image tower statically
#   quantised, calibrated on generated tiles) -> fit the tile crop and the k-unknown rule (and, beside the
#   bundle, the learned k-unknown selector) on validation puzzles of the training styles -> evaluate on
#   test puzzles, a row per style.
#
#   bash datasets/emoji/train_demo.sh                               # the shipped recipe (writes the bundle)
#   HOLDOUT=symbola NAME=loso_symbola BUNDLE=/tmp/demo_work/loso_symbola_bundle VALID_COUNT=100 \
#     STAGES="demo:600:3e-4" TEST_STYLES="symbola noto" \
#     bash datasets/emoji/train_demo.sh                            # leave one style out, a short schedule
#   INIT_COMMIT= STAGES="demo64:3000:1e-3 demo64:2000:5e-4 demo:1500:3e-4" ... # from random weights
#
# A style in HOLDOUT is never drawn in the training, validation or calibration data: its test rows
# measure art the model never saw (the shipped model leaves out the blob Noto and the monochrome Fluent).
# Work data goes to $WORK (default /tmp/demo_work); nothing there is committed. Every seed is fixed
# below. An interrupted run goes on where it stopped: rerun the same command (finished stages are
# skipped, a stopped one resumes from its epoch_latest.pt). Results and commands: datasets/emoji/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-python3}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
WORK=${WORK:-/tmp/demo_work}
NAME=${NAME:-demo}
BUNDLE=${BUNDLE:-clip_match/assets/demo_bundle}
HOLDOUT=${HOLDOUT-noto-v1 fluent-emoji-high-contrast}  # styles left out of everything fitted
# The weights to start from: the demo bundle as committed at INIT_COMMIT (empty: random weights).
INIT_COMMIT=${INIT_COMMIT-6d43563}
ALL_STYLES=$("${PYTHON}" -c 'from datasets.emoji.styles import STYLES; print(" ".join(STYLES))')
STYLES=${STYLES:-$(for s in ${ALL_STYLES}; do [[ " ${HOLDOUT} " == *" ${s} "* ]] || printf '%s ' "${s}"; done)}
PER_EMOJI=${PER_EMOJI:-3}                # renderings per emoji and training style, in each stage's pairs
# One stage per item, CONFIG:STEPS:PEAK_LR[:MATCH_LOSS], each on its own fresh renderings (pair seed 1000 + stage);
# MATCH_LOSS is the trainer's --match-loss weight (default 0: InfoNCE alone).
STAGES=${STAGES:-"demo:1500:3e-4 demo:1000:1.5e-4 demo:800:1e-4 demo:1500:1e-4 demo:2500:1e-4"}
PRECISION=${PRECISION:-bf16}             # bf16 autocast: 1.9x faster steps on AVX512-BF16/AMX CPUs, else fp32
VALID_COUNT=${VALID_COUNT:-200}          # calibration puzzles per training style
TEST_COUNT=${TEST_COUNT:-600}            # reported puzzles per style
TEST_STYLES=${TEST_STYLES:-${ALL_STYLES}}  # the styles reported (default: every one)
TRAIN_SEED=123                           # model init, data order, trainer augmentation
# Puzzle seeds per style: validation (calibration) and test (reported), never used for anything else.
declare -A VALID_SEED=([noto]=101 [fluent]=102 [fluent-emoji]=103 [noto-v1]=104 [emojione]=105 [emojione-v1]=106
  [fxemoji]=107 [streamline-emojis]=108 [fluent-emoji-high-contrast]=109 [emojione-monotone]=110
  [noto-emoji-mono]=111 [symbola]=112)
declare -A TEST_SEED=([noto]=2026 [fluent]=2027 [fluent-emoji]=3001 [noto-v1]=3002 [emojione]=3003
  [emojione-v1]=3004 [fxemoji]=3005 [streamline-emojis]=3006 [fluent-emoji-high-contrast]=3007
  [emojione-monotone]=3008 [noto-emoji-mono]=3009 [symbola]=3010)
clip_match() { "${PYTHON}" -m clip_match.cli "$@"; }
echo "== ${NAME}: training styles: ${STYLES}; held out: ${HOLDOUT:-none}" >&2

# int8 calibration images: the tiles of generated 3x3 puzzles in the training styles (seed 11)
tiles=${WORK}/calibration_tiles_${NAME}
if [[ ! -d ${tiles} ]]; then
  for style in ${STYLES}; do
    "${PYTHON}" -m datasets.emoji.generate tiles "${tiles}/${style}" --count 2 --style "${style}" --seed 11
  done
fi

checkpoint=""
model=""
if [[ -n ${INIT_COMMIT} ]]; then  # the committed bundle, back as a checkpoint (batch norms measured on the tiles)
  init=${WORK}/${NAME}_init
  if [[ ! -f ${init}.pt ]]; then
    if ! git rev-parse -q --verify "${INIT_COMMIT}^{commit}" > /dev/null; then
      echo "train_demo.sh: commit ${INIT_COMMIT} (INIT_COMMIT) is not in this checkout's history; run it in a" \
        "git clone of the project, or set INIT_COMMIT= to train from random weights" >&2
      exit 2
    fi
    rm -rf "${init}" && mkdir -p "${init}"
    git archive "${INIT_COMMIT}" clip_match/assets/demo_bundle | tar -x -C "${init}"
    clip_match unexport "${init}/clip_match/assets/demo_bundle" --calibration-images "${tiles}" --out "${init}.pt"
  fi
  checkpoint=${init}.pt
  model=demo
fi
number=0
for stage in ${STAGES}; do
  IFS=: read -r config steps lr match <<< "${stage}"
  number=$((number + 1))
  pairs=${WORK}/pairs_${NAME}_s${number}
  if [[ ! -d ${pairs}/lmdb ]]; then
    # shellcheck disable=SC2086
    "${PYTHON}" -m datasets.emoji.generate pairs "${pairs}" --per-emoji "${PER_EMOJI}" --valid-per-emoji 1 \
      --styles ${STYLES} --captions all --seed $((1000 + number)) --overwrite
    clip_match build-lmdb "${pairs}" --splits train,valid --overwrite
  fi
  if [[ -n ${model} && ${config} != "${model}" ]]; then  # a new input size: carry the weights over
    resized=${WORK}/${NAME}_s${number}_init.pt
    [[ -f ${resized} ]] || clip_match resize "${checkpoint}" --model "${config}" --out "${resized}"
    checkpoint=${resized}
  fi
  model=${config}
  warmup=50
  [[ -n ${checkpoint} ]] || warmup=150  # from random weights
  resume=()
  [[ -z ${checkpoint} ]] || resume=("--resume=${checkpoint}")  # (a stopped stage goes on from its own)
  "${PYTHON}" -m clip_match.train --device=cpu --model="${config}" \
    --train-data="${pairs}/lmdb/train" --val-data="${pairs}/lmdb/valid" --logs="${WORK}/runs" \
    --name="${NAME}_s${number}" --seed="${TRAIN_SEED}" --batch-size=128 --valid-batch-size=256 --lr="${lr}" \
    --wd=0.1 --warmup="${warmup}" --max-steps="${steps}" --augment=safe --num-workers=1 \
    --log-interval=20 --save-step-frequency=100 --keep-step-checkpoints=2 --precision="${PRECISION}" \
    --match-loss="${match:-0}" ${resume[@]+"${resume[@]}"}
  checkpoint=${WORK}/runs/${NAME}_s${number}/checkpoints/slim.pt
done

puzzles() {  # puzzles SET COUNT STYLE SEED -> WORK/puzzles/SET/STYLE (made once)
  [[ -f ${WORK}/puzzles/$1/$3/puzzles.jsonl ]] || "${PYTHON}" -m datasets.emoji.generate puzzles \
    "${WORK}/puzzles/$1/$3" --count "$2" --style "$3" --seed "$4" --overwrite
}
merged() {  # merged SET STYLES... -> one puzzles.jsonl over those styles' folders (image paths prefixed)
  local set=$1 style
  for style in "${@:2}"; do
    sed "s|\"image\": \"|\"image\": \"${style}/|" "${WORK}/puzzles/${set}/${style}/puzzles.jsonl"
  done
}
# shellcheck disable=SC2086
for style in ${STYLES}; do puzzles valid "${VALID_COUNT}" "${style}" "${VALID_SEED[${style}]}"; done
for style in ${TEST_STYLES}; do puzzles test "${TEST_COUNT}" "${style}" "${TEST_SEED[${style}]}"; done
# shellcheck disable=SC2086
merged valid ${STYLES} > "${WORK}/puzzles/valid/${NAME}.jsonl"
# shellcheck disable=SC2086
merged test ${TEST_STYLES} > "${WORK}/puzzles/test/${NAME}.jsonl"

# fp32 + int8 side by side (not shipped) to compare their answers; the shipped bundle holds int8 only.
clip_match export "${checkpoint}" --arch "${model}" --precision fp32,int8 --calibration-images "${tiles}" \
  --out "${WORK}/${NAME}_fp32_int8" --overwrite
clip_match export "${checkpoint}" --arch "${model}" --precision int8 --calibration-images "${tiles}" \
  --out "${BUNDLE}" --overwrite

# The tile crop and the k-unknown rule, fitted on the validation puzzles only, go into the bundle. The learned
# k-unknown selector is fitted on them too but kept beside it: it lost to the calibrated rule on the held-out
# styles (RESULTS.md), so the shipped bundle uses the rule.
selector=${WORK}/${NAME}_grid_selector.json
clip_match eval-grid "${WORK}/puzzles/valid/${NAME}.jsonl" --bundle "${BUNDLE}" \
  --calibrate "${BUNDLE}/grid_calibration.json" --fit-selector "${selector}" \
  --source "datasets/emoji/train_demo.sh validation puzzles: ${VALID_COUNT} per training style (${STYLES% }), seeds 101-112"

# The reported numbers: every style, with the calibrated rule and with the learned selector for k unknown.
echo "== ${NAME} (held out: ${HOLDOUT:-none}): test puzzles, ${TEST_COUNT} per style" >&2
clip_match eval-grid "${WORK}/puzzles/test/${NAME}.jsonl" --bundle "${BUNDLE}"
clip_match eval-grid "${WORK}/puzzles/test/${NAME}.jsonl" --bundle "${BUNDLE}" --selector "${selector}" \
  --k-unknown selector
