#!/usr/bin/env bash

# Reproduce the packaged formula model (clip_match/assets/formula_bundle, the open protocol) and its
# numbers from a fresh checkout, on CPU:
#   render the open (or bank) dataset in many math fonts, a share photographed, with held-out query
#   splits (real images, real images photographed, renders in fonts never trained on) -> build-lmdb
#   -> train "formula160" from scratch on renders -> export (fp32 + int8) -> `clip-match eval-retrieval`
#   on every query split: model alone, layout alone, blended.
#
#   bash datasets/formulas/train_formulas.sh                      # open protocol: the packaged model
#   PROTOCOLS="open bank" bash datasets/formulas/train_formulas.sh  # and the 4,000-formula bank
#
# Needs the shared data (../shared/data/im2latex and ../shared/data/formulas, or
# $CLIP_MATCH_SHARED_DATA) and TeX Live + dvipng with the math fonts (install_tex.sh --fonts, run below).
# Work data goes to $WORK (default /tmp/formula_work); nothing there is committed. Seeds are fixed
# below. Training sees renders only: the builder's query-leak check (always on) refuses a training
# split that holds a real query image, or for `open` a query formula. Results: RESULTS.md here.
#
# Budget: training runs in bf16 autocast on two threads (~90-100 samples/s on a 2-core AMD EPYC with
# AVX512-BF16: ~170 min for the bank's three stages, ~80 min for open; BF16=0 runs fp32, about twice as
# long). Rendering in all fonts + build-lmdb take ~15 min for open on two cores. An interrupted stage resumes from its
# own checkpoints/epoch_latest.pt (saved every 300 steps); that file also exports as it is.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-python3}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
WORK=${WORK:-/tmp/formula_work}
PROTOCOLS=${PROTOCOLS:-open}
MODEL=formula160                    # 160 px, 180-token context, light evened out, images trimmed to their ink
                                    # + 4 px and wide ones folded into strips (clip_match/model/configs/formula160.json)
DATA_SEED=0                         # protocol split, bank sample, render augmentation
TRAIN_SEED=123                      # model init, data order
BANK_RENDERS=10                     # augmented renders per bank formula (4,000 formulas)
OPEN_RENDERS=5                      # per training formula (first half + CROHME, ~10,000 formulas)
# Training copies draw their font from FONTS (Computer Modern, the IM2LaTeX images' font, three times as
# often); QUERY_FONTS are never trained on: each becomes a held-out query split (test_font_<font>).
FONTS=tex:cm,tex:cm,tex:cm,tex:lmodern,tex:palatino,tex:times,tex:txfonts,tex:pxfonts,tex:euler,tex:newtx,tex:newpx,\
tex:libertinus,tex:fourier,tex:kpfonts,tex:cmbright,tex:arev,mathtext:cm,mathtext:dejavuserif
QUERY_FONTS=tex:stix2,mathtext:stix,mathtext:stixsans,mathtext:dejavusans
PHOTO_PROBABILITY=0.3               # training images photographed (augment.photograph); test_photo: the real queries
# Training schedules, one cosine cycle per stage as STEPS:PEAK_LR:WARMUP (optimiser steps of batch 128). A
# later stage starts from the previous stage's weights with a fresh optimiser (a warm restart) and the next seed.
BANK_STAGES=${BANK_STAGES:-3600:1e-3:100 1200:3e-4:50 2400:3e-4:50}
OPEN_STAGES=${OPEN_STAGES:-3600:1e-3:100}
CANDIDATE_RENDERS=5                 # open: renders of every candidate (query) formula, never trained on, to rank
                                    # the real images against images of the candidates as well as their text
BF16=${BF16:-1}                     # bf16 autocast (needs a CPU with bf16 support to be fast)
REAL_TRAIN=${REAL_TRAIN:-0}         # also train on the real images of up to N non-query formulas (build --real-train;
                                    # a separate WORK: an existing dataset is reused as it is)
EXAMPLES=3                          # real bank images shown through `clip-match query`
EXAMPLE_TEXT_WEIGHT=0               # candidates as the mean of their renders only: chosen on the bank's
                                    # validation renders (RESULTS.md), never on real test images; kept for open
LAYOUT_WEIGHT=0.75                  # share of the layout match (where the ink is, clip_match/formulas/layout_codes.py) in
                                    # the score with renders: chosen on the development bank's real images (RESULTS.md)
clip_match() { "${PYTHON}" -m clip_match.cli "$@"; }
# From scratch: symmetric InfoNCE with label-aware negatives (the trainer's default), AdamW wd 0.1, each
# stage's warm-up then cosine to zero. No trainer augmentation: the builder's renders (typeset from each
# formula's source LaTeX) already vary scale, ink, blur, noise, JPEG and rotation, and a random crop
# would cut symbols off; their margins are trimmed away by the model's preprocessing.
train() {  # DATA NAME FLAGS...
  local data=$1 name=$2; shift 2
  "${PYTHON}" -m clip_match.train --device=cpu --model="${MODEL}" \
    --train-data="${data}/lmdb/train" --val-data="${data}/lmdb/valid" --logs="${WORK}/runs" --name="${name}" \
    --batch-size=128 --valid-batch-size=256 --wd=0.1 --augment=none --num-workers=1 \
    --valid-num-workers=0 --save-step-frequency=300 --keep-step-checkpoints=2 \
    --precision="${train_precision}" --log-interval=50 "$@"
}
train_stages() {  # DATA PROTOCOL STAGES; sets checkpoint to the last stage's slim.pt
  local data=$1 protocol=$2 stage=0 name steps lr warmup start
  local weights=()
  for spec in $3; do
    IFS=: read -r steps lr warmup <<<"${spec}"
    stage=$((stage + 1)); name=${protocol}; (( stage > 1 )) && name=${protocol}_${stage}
    start=("${weights[@]}")  # an interrupted stage resumes from its own epoch_latest.pt instead
    [[ -f ${WORK}/runs/${name}/checkpoints/epoch_latest.pt ]] && start=()
    train "${data}" "${name}" --seed=$((TRAIN_SEED + stage - 1)) --max-steps="${steps}" --lr="${lr}" \
      --warmup="${warmup}" "${start[@]}"
    checkpoint=${WORK}/runs/${name}/checkpoints/slim.pt
    weights=(--resume="${checkpoint}")
  done
}
train_precision=fp32; (( BF16 )) && train_precision=bf16

bash datasets/formulas/install_tex.sh --fonts

for protocol in ${PROTOCOLS}; do
  data=${WORK}/${protocol}
  renders=${BANK_RENDERS}; stages=${BANK_STAGES}; candidate_renders=0; examples=train  # (a bank's training renders)
  [[ ${protocol} == open ]] && renders=${OPEN_RENDERS} && stages=${OPEN_STAGES} && candidate_renders=${CANDIDATE_RENDERS} \
    && examples=candidates
  if [[ ! -d ${data}/lmdb ]]; then
    "${PYTHON}" -m datasets.formulas.build "${protocol}" "${data}" --seed "${DATA_SEED}" --renders "${renders}" \
      --valid-size 500 --workers 2 --real-train "${REAL_TRAIN}" \
      --candidate-renders "${candidate_renders}" --fonts "${FONTS}" --photo-probability "${PHOTO_PROBABILITY}" \
      --query-fonts "${QUERY_FONTS}" --query-photos --overwrite
    clip_match build-lmdb "${data}" --splits train,valid --overwrite
  fi

  train_stages "${data}" "${protocol}" "${stages}"

  bundle=${WORK}/${protocol}_bundle
  clip_match export "${checkpoint}" --arch "${MODEL}" --precision fp32,int8 \
    --out "${bundle}" --overwrite
  # Every query split: the real images, the same photographed, renders in each held-out font.
  splits=test,test_photo
  for font in ${QUERY_FONTS//,/ }; do splits+=,test_font_${font//:/_}; done
  for precision in fp32 int8; do
    echo "== ${protocol} protocol, ${precision}: clip-match eval-retrieval ${bundle} ${data} --precision ${precision}"
    clip_match eval-retrieval "${bundle}" "${data}" --precision "${precision}" --threads "${OMP_NUM_THREADS}"
    # Rank the query images against images of each candidate: the bank's training renders, or for
    # `open` the candidates' own renders (never trained on, made as `index build --render` makes them);
    # the blend with the layout match, the model alone and the layout alone.
    echo "== ${protocol} protocol, ${precision}, candidates = mean of their renders in split ${examples}: ... --examples ${examples} --text-weight ${EXAMPLE_TEXT_WEIGHT} --layout-weight ${LAYOUT_WEIGHT} --split ${splits} --candidates test"
    clip_match eval-retrieval "${bundle}" "${data}" --precision "${precision}" --threads "${OMP_NUM_THREADS}" \
      --examples "${examples}" --text-weight "${EXAMPLE_TEXT_WEIGHT}" --layout-weight "${LAYOUT_WEIGHT}" --split "${splits}" \
      --candidates test
  done
done

# The bank as a LaTeX candidate index, and a few of its real images through `clip-match query`.
if [[ " ${PROTOCOLS} " == *" bank "* ]]; then
  "${PYTHON}" - "${WORK}/bank" "${WORK}/bank_examples" "${EXAMPLES}" <<'EOF'
"""bank_candidates.jsonl (id = formula id, text = its LaTeX) and the first real query images as PNG files."""
import json, sys
from pathlib import Path
from clip_match.data.formats import decode_b64, read_jsonl, read_tsv
data, examples, count = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
with open(data / "bank_candidates.jsonl", "w", encoding="utf-8") as out:
    for text in read_jsonl(data / "test_texts.jsonl"):
        out.write(json.dumps({"id": text.text_id, "text": text.text}) + "\n")
examples.mkdir(exist_ok=True)
truth = {image_id: text.text for text in read_jsonl(data / "test_texts.jsonl") for image_id in text.image_ids}
for line, _ in zip(read_tsv(data / "test_imgs.tsv"), range(count)):
    (examples / f"{line.image_id}.png").write_bytes(decode_b64(line.b64, str(line.line)))
    print(f"{line.image_id}.png is {truth[line.image_id]}", file=sys.stderr)
EOF
  clip_match index build --candidates "${WORK}/bank/bank_candidates.jsonl" --latex --bundle "${WORK}/bank_bundle" \
    --examples "${WORK}/bank" --text-weight "${EXAMPLE_TEXT_WEIGHT}" --layout-weight "${LAYOUT_WEIGHT}" \
    --out "${WORK}/bank_index" --overwrite
  clip_match query --latex --image "${WORK}"/bank_examples/*.png --index "${WORK}/bank_index" \
    --bundle "${WORK}/bank_bundle" --top-k 3
fi
