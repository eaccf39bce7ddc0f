"""`clip-match inspect`: counts, duplicates, dangling ids and samples of a dataset."""
from __future__ import annotations

import argparse
import json

from ..data.inspect import inspect_dataset
from .options import add_json_option


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="TSV/JSONL directory, LMDB directory or one LMDB split directory")
    parser.add_argument("--samples", type=int, default=3, help="pairs to show per split (default 3)")
    add_json_option(parser, "the statistics")


def run(args: argparse.Namespace) -> int:
    report = inspect_dataset(args.path, samples=args.samples)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
        return 0
    print(f"{report['path']} ({report['kind']})")
    for split, s in report["splits"].items():
        tpi, ipt = s["texts_per_image"], s["images_per_text"]
        print(f"  {split}: {s['images']} images, {s['texts']} texts, {s['pairs']} pairs")
        print(f"    texts per image {tpi['min']}..{tpi['max']} (mean {tpi['mean']}), "
              f"images per text {ipt['min']}..{ipt['max']} (mean {ipt['mean']})")
        print(f"    images without text {s['images_without_text']}, dangling image ids {s['dangling_image_ids']['count']}, "
              f"duplicates: image ids {s['duplicate_image_ids']}, text ids {s['duplicate_text_ids']}, "
              f"image content {s['duplicate_image_content']}, texts {s['duplicate_texts']}")
        for sample in s["samples"]:
            print(f"    sample: image {sample['image_id']} ({sample['image']}) <-> text {sample['text_id']}: {sample['text']}")
    return 0
