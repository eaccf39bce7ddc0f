"""`clip-match prepare`: an image folder (+ labels file) -> Chinese-CLIP TSV/JSONL splits."""
from __future__ import annotations

import argparse
import json

from ..data.labels import folder_records, labels_file_records
from ..data.prepare import split_fractions, write_dataset
from .options import add_json_option


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", help="image folder: one sub-folder per label, or any layout with --labels")
    parser.add_argument("--labels", help="CSV, TSV or JSONL file mapping image paths (relative to IMAGES) to texts")
    parser.add_argument("--out", required=True, help="output directory for {split}_imgs.tsv and {split}_texts.jsonl")
    parser.add_argument("--split", type=split_fractions, default=(0.8, 0.1, 0.1),
                        help="train,valid,test fractions (default 0.8,0.1,0.1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split shuffle (default 0)")
    parser.add_argument("--max-side", type=int, help="re-encode images whose longer side exceeds N pixels")
    parser.add_argument("--overwrite", action="store_true", help="replace existing split files in --out")
    add_json_option(parser, "the summary")


def run(args: argparse.Namespace) -> int:
    records = labels_file_records(args.images, args.labels) if args.labels else folder_records(args.images)
    summary = write_dataset(records, args.out, split=args.split, seed=args.seed, max_side=args.max_side, overwrite=args.overwrite)
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        parts = ", ".join(f"{name} {s['images']} images / {s['texts']} texts" for name, s in summary["splits"].items())
        print(f"wrote {summary['out_dir']}: {parts}")
    return 0
