"""Formula retrieval numbers for a model bundle on a dataset built by ``datasets.formulas.build``.

    python -m clip_match.eval.formulas_cli BUNDLE DATA_DIR [--json]

Prints image->text R@1/5/10 and mean recall (the open/bank protocols' numbers: each real
query image against all candidate formulas) and the text->image direction. ``--examples train``
ranks against each candidate's text mixed with its training images (a bank's renders);
``--layout-weight`` also blends in where their ink is (clip_match.index.layout).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from ..errors import ClipMatchError
from ..index.examples import EXAMPLE_TEXT_WEIGHT
from .formulas import QUERY_SPLIT, evaluate_split


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="model bundle directory (clip-match export)")
    parser.add_argument("data_dir", type=Path, help="dataset directory holding {split}_imgs.tsv / {split}_texts.jsonl")
    parser.add_argument("--split", default=QUERY_SPLIT, help="split to score (default: test, the real query images)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "int8"), default=None,
                        help="bundle precision (default: fp16 on CUDA, fp32 on CPU)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: its choice)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per encoder batch")
    parser.add_argument("--examples", metavar="SPLIT", default=None,
                        help="mix each candidate's images in this split (e.g. train: the bank's renders) into its vector")
    parser.add_argument("--text-weight", type=float, default=EXAMPLE_TEXT_WEIGHT,
                        help=f"with --examples: share of the text in each candidate's vector (default "
                             f"{EXAMPLE_TEXT_WEIGHT:g})")
    parser.add_argument("--layout-weight", type=float, default=0.0,
                        help="with --examples: share of the layout match (clip_match.index.layout) in every score "
                             "(default 0: model only)")
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object")


def run(args: argparse.Namespace) -> int:
    from ..runtime.encoder import Encoder

    encoder = Encoder.load(args.bundle, device=args.device, precision=args.precision, threads=args.threads)
    metrics = evaluate_split(encoder, args.data_dir, args.split, args.batch_size, args.examples, args.text_weight,
                             args.layout_weight)
    metrics.update(bundle=str(args.bundle), precision=encoder.precision)
    if args.json:
        print(json.dumps(metrics))
        return 0
    print(f"{args.data_dir} [{metrics['split']}]: {metrics['queries']} query images, {metrics['candidates']} "
          f"candidate formulas ({metrics['candidates_truncated']} longer than context {metrics['context_length']})")
    if args.examples:
        print(f"  candidates mixed with their {args.examples!r} images (text weight {args.text_weight:g}"
              f"{f', layout weight {args.layout_weight:g}' if args.layout_weight else ''}): "
              f"{metrics['candidates_with_examples']} of {metrics['candidates']}")
    for direction, label in (("i2t", "image->formula"), ("t2i", "formula->image")):
        print(f"  {label}: " + "  ".join(f"R@{k} {metrics[f'{direction}_r{k}']:.2f}" for k in (1, 5, 10))
              + f"  mean recall {metrics[f'{direction}_mean_recall']:.2f}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clip_match.eval.formulas_cli", description=__doc__.splitlines()[0])
    configure(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except ClipMatchError as error:
        print(f"formulas_cli: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
