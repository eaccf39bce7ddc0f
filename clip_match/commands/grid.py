"""`clip-match grid IMAGE --text 雨伞 [--layout 3x3] [--k 2] [--json]`: solve one tile puzzle.

Prints the chosen tiles as 1-based ``[row, col]`` (row-major; ``--zero-based`` for 0-based) and
each tile's score; ``--json`` prints the full result as one JSON object.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..grid.solver import K_UNKNOWN, GridSolver
from ..grid.tiles import LAYOUTS
from .options import add_json_option, add_model_options, one_line_warnings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", nargs="+", metavar="IMAGE",
                        help="the puzzle image, or its 6 or 9 tile images in row-major order")
    prompt = parser.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--text", help="the prompt, e.g. 雨伞")
    prompt.add_argument("--example", metavar="PATH", help="an example image to match instead of a text")
    parser.add_argument("--layout", default="auto", choices=("auto", *LAYOUTS), help="rows x columns (default: detect)")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--k", type=int, help="number of matching tiles, when known")
    choice.add_argument("--threshold", type=float,
                        help="k unknown: choose the tiles scoring at least this cosine (-1 to 1), and always the best "
                             "(default: the bundle's calibrated rule)")
    parser.add_argument("--k-unknown", choices=K_UNKNOWN, default="auto",
                        help="k unknown: the bundle's learned selector, its calibrated rule, or auto (the selector "
                             "when the bundle has one; the default)")
    parser.add_argument("--zero-based", action="store_true", help="0-based [row, col] instead of 1-based")
    add_json_option(parser, "the result as one JSON object")
    add_model_options(parser)


def run(args: argparse.Namespace) -> int:
    one_line_warnings("grid")
    solver = GridSolver(args.bundle, device=args.device, precision=args.precision, k_unknown=args.k_unknown)
    puzzle = args.image[0] if len(args.image) == 1 else args.image
    prompt = args.text if args.text is not None else Path(args.example)
    result = solver.solve(puzzle, prompt, layout=args.layout, k=args.k, threshold=args.threshold,
                          zero_based=args.zero_based)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
        return 0
    print(json.dumps(result.coordinates))
    crop = f", tiles cropped to {result.tile_crop:.0%}" if result.tile_crop < 1 else ""
    base = 0 if args.zero_based else 1
    print(f"# layout {result.layout} ({result.split}{crop}), {result.rule}; [row, col] {base}-based")
    for (row, col), score, chosen in zip(result.positions(), result.scores, result.selected):
        print(f"# [{row}, {col}] {score:+.4f}{'  *' if chosen else ''}")
    return 0
