"""Formula retrieval numbers for a model bundle on a dataset built by ``datasets.formulas.build``.

    clip-match eval-retrieval BUNDLE DATA_DIR [--json]

Prints image->text R@1/5/10 and mean recall (the open/bank protocols' numbers: each real
query image against all candidate formulas) and the text->image direction. ``--examples train``
ranks against each candidate's text mixed with its training images (a bank's renders);
``--layout-weight`` also blends in where their ink is (clip_match.formulas.layout_codes), and the
model's and the layout match's numbers alone are printed beside the blend's. ``--split`` takes
several query splits (the held-out protocols: real images, photos, other fonts) at once.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..formulas.evaluate import QUERY_SPLIT, check_example_split, evaluate_split
from ..index.examples import EXAMPLE_TEXT_WEIGHT, read_examples
from .options import add_json_option, add_model_options


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="model bundle directory (clip-match export)")
    parser.add_argument("data_dir", type=Path, help="dataset directory holding {split}_imgs.tsv / {split}_texts.jsonl")
    parser.add_argument("--split", default=QUERY_SPLIT,
                        help="split to score, or several separated by commas, each against the same candidates "
                             "(default: test, the real query images)")
    parser.add_argument("--candidates", metavar="SPLIT", default=None,
                        help="rank against every formula of this split (e.g. test: all the protocol's candidates) "
                             "instead of the query split's own (default)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per encoder batch")
    parser.add_argument("--examples", metavar="SPLIT", default=None,
                        help="mix each candidate's images in this split (e.g. train: the bank's renders) into its vector")
    parser.add_argument("--text-weight", type=float, default=EXAMPLE_TEXT_WEIGHT,
                        help=f"with --examples: share of the text in each candidate's vector (default "
                             f"{EXAMPLE_TEXT_WEIGHT:g})")
    parser.add_argument("--layout-weight", type=float, default=0.0,
                        help="with --examples: share of the layout match (clip_match.formulas.layout_codes) in every score "
                             "(default 0: model only)")
    add_model_options(parser, bundle=False, threads=True)
    add_json_option(parser, "the metrics as one JSON object (a list of them for several splits)")


def run(args: argparse.Namespace) -> int:
    from ..runtime.encoder import Encoder

    encoder = Encoder.load(args.bundle, device=args.device, precision=args.precision, threads=args.threads)
    splits = [split.strip() for split in args.split.split(",") if split.strip()]
    found = None
    if args.examples and len(splits) > 1:
        check_example_split(args.examples, splits)  # (before the examples are read, not after)
        found = read_examples(encoder, args.data_dir, args.examples, batch_size=args.batch_size,
                              layouts=args.layout_weight > 0)
    results = []
    for split in splits:
        metrics = evaluate_split(encoder, args.data_dir, split, args.batch_size, args.examples, args.text_weight,
                                 args.layout_weight, found, args.candidates)
        metrics.update(bundle=str(args.bundle), precision=encoder.precision)
        results.append(metrics)
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else results))
        return 0
    for metrics in results:
        _print(args, metrics)
    return 0


def _print(args: argparse.Namespace, metrics: dict) -> None:
    print(f"{args.data_dir} [{metrics['split']}]: {metrics['queries']} query images, {metrics['candidates']} "
          f"candidate formulas ({metrics['candidates_truncated']} longer than context {metrics['context_length']})")
    if args.examples:
        print(f"  candidates mixed with their {args.examples!r} images (text weight {args.text_weight:g}"
              f"{f', layout weight {args.layout_weight:g}' if args.layout_weight else ''}): "
              f"{metrics['candidates_with_examples']} of {metrics['candidates']}")
    for direction, label in (("i2t", "image->formula"), ("t2i", "formula->image")):
        print(f"  {label}: " + _recalls(metrics, direction))
    if args.layout_weight:
        for part, label in (("model_only", "model alone"), ("layout_only", "layout alone")):
            print(f"  image->formula, {label}: " + _recalls(metrics[part], "i2t"))


def _recalls(metrics: dict, direction: str) -> str:
    return ("  ".join(f"R@{k} {metrics[f'{direction}_r{k}']:.2f}" for k in (1, 5, 10))
            + f"  mean recall {metrics[f'{direction}_mean_recall']:.2f}")

