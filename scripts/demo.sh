#!/usr/bin/env bash
# Main job (`make demo`). Until the grid demo exists it shows the data pipeline end to end on
# the bundled sample: label folders -> TSV/JSONL splits -> verified LMDB -> inspection.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIP_MATCH=.venv/bin/clip-match
OUT=artifacts/demo_data
rm -rf "$OUT"

echo "== prepare: datasets/sample/images (one folder per label) -> $OUT"
"$CLIP_MATCH" prepare datasets/sample/images --out "$OUT" --seed 0

echo "== build-lmdb: $OUT -> $OUT/lmdb (every image decoded and verified)"
"$CLIP_MATCH" build-lmdb "$OUT" --splits train,valid,test

echo "== inspect: $OUT/lmdb"
"$CLIP_MATCH" inspect "$OUT/lmdb"
