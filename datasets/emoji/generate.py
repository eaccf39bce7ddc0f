#!/usr/bin/env python3
"""Generate seeded data from the emoji tiles: training pairs, grid puzzles, puzzle tiles or widget screenshots.

    # training pairs (Chinese-CLIP TSV/JSONL) in every style of styles.py, 16 renderings per emoji
    # and style (an emoji that fewer styles draw gets as many in all, spread over those)
    python -m datasets.emoji.generate pairs data/emoji_pairs --per-emoji 16 --seed 0
    # the two original styles only (the shipped demo model's data: same seeds, same images as before)
    python -m datasets.emoji.generate pairs data/emoji_pairs_2 --styles noto fluent --seed 0
    # every rendering linked to all its names and puzzle tags (no drawn caption)
    python -m datasets.emoji.generate pairs data/emoji_pairs_all --captions all --seed 1
    # 1,000 puzzles (2x3 and 3x3 alternate) in one style, drawn only from the emoji it covers
    python -m datasets.emoji.generate puzzles data/puzzles_symbola --count 1000 --style symbola --seed 1
    # the 72 tiles of 8 3x3 puzzles as PNGs (calibration images for `clip-match export --precision int8`)
    python -m datasets.emoji.generate tiles data/calibration_tiles --count 8 --seed 11
    # 600 puzzle-widget screenshots (Chinese and English text prompts, icon prompts; screenshots.py)
    python -m datasets.emoji.generate screenshots data/screenshots --count 600 --seed 2

Pairs feed `clip-match build-lmdb` and the trainer; puzzles feed `clip-match eval-grid`; tiles
feed `clip-match export --calibration-images`; screenshots feed `clip-match eval-grid --read-prompt`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from clip_match.errors import ClipMatchError
from clip_match.grid.tiles import LAYOUTS, MIN_TILE

from .puzzles import CAPTIONS, write_pairs, write_puzzles, write_tiles
from .screenshots import FONTS, write_screenshots
from .styles import STYLES


def at_least(low: int):
    """An argparse type: a whole number >= ``low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return parse


def probability(text: str) -> float:
    """An argparse type: a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {value:g}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    pairs = sub.add_parser("pairs", help="training pairs: {train,valid}_imgs.tsv and _texts.jsonl")
    pairs.add_argument("out", type=Path)
    pairs.add_argument("--per-emoji", type=at_least(1), default=16,
                       help="train renderings per emoji and style (per emoji: this x the number of --styles)")
    pairs.add_argument("--valid-per-emoji", type=at_least(0), default=1)
    pairs.add_argument("--styles", nargs="+", default=list(STYLES), choices=STYLES, help="default: all")
    pairs.add_argument("--size", type=at_least(MIN_TILE), default=96, help="tile side in px")
    pairs.add_argument("--restyle", type=probability, default=0.3, help="probability of each art-style change")
    pairs.add_argument("--line-art", type=probability, default=0.0,
                       help="probability that a colour emoji is drawn as monochrome line art (outline or silhouette)")
    pairs.add_argument("--captions", choices=CAPTIONS, default="one",
                       help="one drawn caption per rendering, or all its names and puzzle tags (default: one)")
    puzzles = sub.add_parser("puzzles", help="puzzle PNGs + puzzles.jsonl")
    puzzles.add_argument("out", type=Path)
    puzzles.add_argument("--count", type=at_least(1), default=1000)
    puzzles.add_argument("--style", default="noto", choices=STYLES)
    puzzles.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    puzzles.add_argument("--prompt", help="one prompt for every puzzle (an emoji name or tag; default: random)")
    tiles = sub.add_parser("tiles", help="the tiles of 3x3 puzzles as PNGs")
    tiles.add_argument("out", type=Path)
    tiles.add_argument("--count", type=at_least(1), default=8, help="puzzles (9 tiles each)")
    tiles.add_argument("--style", default="noto", choices=STYLES)
    shots = sub.add_parser("screenshots", help="puzzle-widget screenshots (prompt in a frame) + puzzles.jsonl")
    shots.add_argument("out", type=Path)
    shots.add_argument("--count", type=at_least(1), default=600)
    shots.add_argument("--styles", nargs="+", default=["noto", "fluent"], choices=STYLES,
                       help="art styles, in turn (default: noto fluent)")
    shots.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    shots.add_argument("--fonts", nargs="+", default=list(FONTS), choices=list(FONTS),
                       help="prompt fonts (default: all; each needs its Debian package)")
    for command in (pairs, puzzles, tiles, shots):
        command.add_argument("--seed", type=int, default=0)
        command.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.what == "pairs":
            result = write_pairs(args.out, args.per_emoji, args.valid_per_emoji, args.seed, args.styles, args.size,
                                 args.restyle, overwrite=args.overwrite, captions=args.captions,
                                 line_art=args.line_art)
        elif args.what == "puzzles":
            write_puzzles(args.out, args.count, args.seed, args.style, args.layouts, overwrite=args.overwrite,
                          prompt=args.prompt)
            result = {"puzzles": args.count, "style": args.style, "seed": args.seed}
        elif args.what == "tiles":
            write_tiles(args.out, args.count, args.seed, args.style, overwrite=args.overwrite)
            result = {"tiles": 9 * args.count, "style": args.style, "seed": args.seed}
        else:
            write_screenshots(args.out, args.count, args.seed, args.styles, args.layouts, args.fonts,
                              overwrite=args.overwrite)
            result = {"screenshots": args.count, "styles": args.styles, "seed": args.seed}
    except ClipMatchError as error:
        print(f"generate.py {args.what}: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(args.out), **result}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
