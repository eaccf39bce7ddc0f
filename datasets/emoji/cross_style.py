"""Image prompts across styles: the prompt is an icon in one art style, the tiles are in another.

    python -m datasets.emoji.cross_style --bundle B --puzzles WORK/puzzles/test --icons noto fluent symbola

For every puzzles.jsonl under ``--puzzles`` (one folder per tile style), the puzzles whose prompt names
one emoji (so every matching tile shows that emoji) are solved with k known, once per icon style, with
the emoji's sprite in that style on a white square as the example image instead of the text. Prints a
table of exact-puzzle accuracy, icon style x tile style (``-`` where the icon style lacks the emoji).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from clip_match.grid.evaluate import read_puzzles
from clip_match.grid.solver import GridSolver

from .glyphs import EmojiSet

ICON_SIDE = 96


def icon(emoji: EmojiSet, index: int, style: str) -> Image.Image:
    """The sprite on a white square, as a widget shows a prompt icon."""
    sprite = emoji.sprite(index, style).resize((ICON_SIDE - 16,) * 2, Image.LANCZOS)
    canvas = Image.new("RGB", (ICON_SIDE, ICON_SIDE), "white")
    canvas.paste(sprite, (8, 8), sprite)
    return canvas


def measure(solver: GridSolver, emoji: EmojiSet, puzzles: Path, icon_styles: list[str],
            limit: int) -> dict[str, float | None]:
    """Exact-puzzle accuracy with k known per icon style, over the single-emoji puzzles of one file."""
    lines = [p for p in read_puzzles(puzzles) if len(emoji.answers(p.prompt)) == 1][:limit]
    right = {style: [] for style in icon_styles}
    for line in lines:
        target = next(iter(emoji.answers(line.prompt)))
        for style in icon_styles:
            if target in emoji.covers(style):
                result = solver.solve(line.image, icon(emoji, target, style), k=line.k)
                right[style].append(np.array_equal(result.selected, line.answer))
    return {style: float(np.mean(hits)) if hits else None for style, hits in right.items()} | {"puzzles": len(lines)}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m datasets.emoji.cross_style", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="model bundle (default: the packaged demo model)")
    parser.add_argument("--puzzles", type=Path, required=True, help="folder of per-style puzzle folders")
    parser.add_argument("--icons", nargs="+", required=True, help="icon styles")
    parser.add_argument("--limit", type=int, default=200, help="single-emoji puzzles per tile style")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    solver, emoji = GridSolver(args.bundle, device="cpu"), EmojiSet()
    table = {path.parent.name: measure(solver, emoji, path, args.icons, args.limit)
             for path in sorted(args.puzzles.glob("*/puzzles.jsonl"))}
    if args.json:
        print(json.dumps(table))
        return 0
    print(f"{'tiles':<28} {'n':>4} " + " ".join(f"{style[:12]:>12}" for style in args.icons))
    for tiles, row in table.items():
        cells = " ".join(f"{'-' if row[s] is None else f'{row[s]:.3f}':>12}" for s in args.icons)
        print(f"{tiles:<28} {row['puzzles']:>4} {cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
