"""`clip-match build-lmdb`: TSV/JSONL splits -> verified LMDB in Chinese-CLIP's layout.

Also takes cn_clip's `build_lmdb_dataset.py` flags: ``--data_dir D --splits train,valid,test [--lmdb_dir L]``.
"""
from __future__ import annotations

import argparse
import json

from ..data.lmdb_build import REPORT_NAME, build_lmdb
from ..errors import ClipMatchError
from .options import add_json_option


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_dir", nargs="?", metavar="DATA_DIR",
                        help="directory holding {split}_imgs.tsv and {split}_texts.jsonl")
    parser.add_argument("--data_dir", "--data-dir", dest="data_dir_option", metavar="DATA_DIR",
                        help="DATA_DIR as cn_clip's build_lmdb_dataset.py takes it")
    parser.add_argument("--splits", default="train,valid,test", help="comma-separated splits (default train,valid,test)")
    parser.add_argument("--lmdb-dir", "--lmdb_dir", dest="lmdb_dir", help="output directory (default DATA_DIR/lmdb)")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="check structure and ids only, do not decode images (fastest)")
    parser.add_argument("--skip-bad", action="store_true",
                        help=f"skip bad records instead of failing; they are listed in {REPORT_NAME}")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing LMDB directory")
    parser.add_argument("--workers", type=int, help="image verification processes (default: usable CPUs, max 8)")
    add_json_option(parser, "the build report")


def run(args: argparse.Namespace) -> int:
    if args.data_dir and args.data_dir_option:
        raise ClipMatchError("give DATA_DIR once: as an argument or as --data_dir, not both")
    data_dir = args.data_dir or args.data_dir_option
    if not data_dir:
        raise ClipMatchError("no DATA_DIR: give the folder holding {split}_imgs.tsv and {split}_texts.jsonl")
    report = build_lmdb(data_dir, args.splits, lmdb_dir=args.lmdb_dir, verify=args.verify,
                        skip_bad=args.skip_bad, overwrite=args.overwrite, workers=args.workers)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
        return 0
    for split, counts in report["splits"].items():
        print(f"{report['lmdb_dir']}/{split}: {counts['images']} images, {counts['pairs']} pairs")
    if report["skipped"]:
        print(f"skipped {len(report['skipped'])} bad records; see {report['lmdb_dir']}/{REPORT_NAME}")
    return 0
