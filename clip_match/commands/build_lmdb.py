"""`clip-match build-lmdb`: TSV/JSONL splits -> verified LMDB in Chinese-CLIP's layout."""
from __future__ import annotations

import argparse
import json

from ..data.lmdb_build import REPORT_NAME, build_lmdb
from .options import add_json_option


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_dir", metavar="DATA_DIR", help="directory holding {split}_imgs.tsv and {split}_texts.jsonl")
    parser.add_argument("--splits", default="train,valid,test", help="comma-separated splits (default train,valid,test)")
    parser.add_argument("--lmdb-dir", help="output directory (default DATA_DIR/lmdb)")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="check structure and ids only, do not decode images (fastest)")
    parser.add_argument("--skip-bad", action="store_true",
                        help=f"skip bad records instead of failing; they are listed in {REPORT_NAME}")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing LMDB directory")
    parser.add_argument("--workers", type=int, help="image verification processes (default: usable CPUs, max 8)")
    add_json_option(parser, "the build report")


def run(args: argparse.Namespace) -> int:
    report = build_lmdb(args.data_dir, args.splits, lmdb_dir=args.lmdb_dir, verify=args.verify,
                        skip_bad=args.skip_bad, overwrite=args.overwrite, workers=args.workers)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
        return 0
    for split, counts in report["splits"].items():
        print(f"{report['lmdb_dir']}/{split}: {counts['images']} images, {counts['pairs']} pairs")
    if report["skipped"]:
        print(f"skipped {len(report['skipped'])} bad records; see {report['lmdb_dir']}/{REPORT_NAME}")
    return 0
