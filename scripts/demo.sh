#!/usr/bin/env bash
# Main job (`make demo`): solve the bundled example puzzle with the bundled demo model, then show
# the data pipeline end to end on the bundled sample (label folders -> TSV/JSONL -> LMDB -> inspect).
set -euo pipefail
cd "$(dirname "$0")/.."

CLIP_MATCH=.venv/bin/clip-match
PUZZLE=datasets/emoji/example/0001.png

echo "== grid: which tiles of $PUZZLE show 伞 (umbrella)? bundled demo model, k=2"
"$CLIP_MATCH" grid "$PUZZLE" --text 伞 --k 2
echo "   (answer key in datasets/emoji/example/puzzles.jsonl: $(sed -n 's/.*"answer": \(.*\)}/\1/p' datasets/emoji/example/puzzles.jsonl))"
echo "== grid: the same with k unknown (the model's calibrated rule), as JSON"
"$CLIP_MATCH" grid "$PUZZLE" --text 伞 --json

OUT=artifacts/demo_data
rm -rf "$OUT"
echo "== prepare: datasets/sample/images (one folder per label) -> $OUT"
"$CLIP_MATCH" prepare datasets/sample/images --out "$OUT" --seed 0
echo "== build-lmdb: $OUT -> $OUT/lmdb (every image decoded and verified)"
"$CLIP_MATCH" build-lmdb "$OUT" --splits train,valid,test
echo "== inspect: $OUT/lmdb"
"$CLIP_MATCH" inspect "$OUT/lmdb"
