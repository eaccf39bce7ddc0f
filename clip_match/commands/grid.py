"""`clip-match grid IMAGE [--text 雨伞 | --example PATH] [--layout 3x3] [--k 2] [--json]`: solve one tile puzzle.

Prints the chosen tiles as 1-based ``[row, col]`` (row-major; ``--zero-based`` for 0-based) and
each tile's score; ``--json`` prints the full result as one JSON object. Without ``--text`` or
``--example`` the screenshot's own prompt is read (the text around the grid, or an icon there), and
``--prompt-pattern`` says where its target is when no built-in phrasing fits.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..grid.prompt import compile_pattern
from ..grid.solver import K_UNKNOWN, GridSolver
from ..grid.tiles import LAYOUTS
from .options import add_json_option, add_model_options, one_line_warnings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", nargs="+", metavar="IMAGE",
                        help="the puzzle image, or its 6 or 9 tile images in row-major order")
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument("--text", help="the prompt, e.g. 雨伞 (default: read it from the screenshot)")
    prompt.add_argument("--example", metavar="PATH", help="an example image to match instead of a text")
    parser.add_argument("--prompt-pattern", metavar="REGEX",
                        help="reading the prompt: a regular expression with one named group, the target, for a "
                             "phrasing the built-in templates do not know, e.g. '找到(?P<target>.+?)的图片'")
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
    if args.prompt_pattern is not None:
        compile_pattern(args.prompt_pattern)  # (a bad pattern fails before the model loads)
    solver = GridSolver(args.bundle, device=args.device, precision=args.precision, k_unknown=args.k_unknown)
    puzzle = args.image[0] if len(args.image) == 1 else args.image
    prompt = args.text if args.text is not None else Path(args.example) if args.example is not None else None
    result = solver.solve(puzzle, prompt, layout=args.layout, k=args.k, threshold=args.threshold,
                          zero_based=args.zero_based, prompt_pattern=args.prompt_pattern)
    if args.json:
        given = args.text if args.text is not None else args.example
        used = {"prompt": given} if given is not None else {}
        print(json.dumps({**result.to_dict(), **used}, ensure_ascii=False))
        return 0
    print(json.dumps(result.coordinates))
    crop = f", tiles cropped to {result.tile_crop:.0%}" if result.tile_crop < 1 else ""
    base = 0 if args.zero_based else 1
    print(f"# layout {result.layout} ({result.split}{crop}), {result.rule}; [row, col] {base}-based")
    if result.prompt_source == "header-icon":
        print(f"# prompt: the icon at {result.prompt_box} (header-icon)")
    elif result.prompt_source == "ocr-text":
        print(f"# prompt: {result.prompt} (ocr-text, read {' / '.join(result.prompt_read.splitlines())!r})")
    for (row, col), score, chosen in zip(result.positions(), result.scores, result.selected):
        print(f"# [{row}, {col}] {score:+.4f}{'  *' if chosen else ''}")
    return 0
