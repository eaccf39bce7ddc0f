"""Seeded generators over the emoji dataset: training pairs and grid puzzles.

Every item draws from its own generator seeded with ``(seed, item number)``, so puzzle 17 of a
run is the same whether 20 or 20,000 are generated.

Puzzles are written as ``0001.png ...`` plus ``puzzles.jsonl`` lines
``{"image": "0001.png", "prompt": "雨伞", "layout": "3x3", "k": 2, "answer": [[1, 2], [3, 1]], "style": "noto"}``
(1-based ``[row, col]``, row-major). Distractor tiles can never answer the prompt (see
`EmojiSet.distractors`); a matching emoji may appear on several tiles (drawn differently). A
puzzle in a style draws only the emoji that style covers.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from clip_match.data.formats import write_split
from clip_match.errors import ClipMatchError
from clip_match.fsutil import atomic_dir
from clip_match.grid.tiles import LAYOUTS, check_layout

from .glyphs import EmojiSet
from .render import RenderConfig, random_colour, render_tile
from .styles import STYLES

MAX_K = {"2x3": 3, "3x3": 4}
ZH_TEMPLATES = ("一张{}的图片", "{}的图标", "{}表情", "这是{}")
EN_TEMPLATES = ("a picture of {}", "an emoji of {}", "{} icon")


@dataclass(frozen=True)
class Puzzle:
    image: Image.Image
    prompt: str
    style: str
    layout: str
    k: int
    answer: list[list[int]]  # 1-based [row, col], row-major
    tiles: list[int]         # emoji index drawn on each tile, row-major
    boxes: list[tuple[int, int, int, int]]  # each tile's (left, top, right, bottom), row-major

    def record(self, image_name: str) -> dict:
        return {"image": image_name, "prompt": self.prompt, "layout": self.layout, "k": self.k, "answer": self.answer,
                "style": self.style}


def check_style(style: str) -> str:
    if style not in STYLES:
        raise ClipMatchError(f"unknown emoji style {style!r}; styles: {', '.join(STYLES)}")
    return style


def make_puzzle(emoji: EmojiSet, rng: np.random.Generator, layout: str, style: str, lang: str = "zh",
                prompt: str | None = None) -> Puzzle:
    """One puzzle in ``style``: a prompt (random unless given), k tiles that answer it, distractors that
    cannot, drawn on a gapped grid; every tile an emoji that ``style`` covers."""
    rows, cols = check_layout(layout)
    covered = emoji.covers(style)
    prompt = str(rng.choice(emoji.prompts(lang, style))) if prompt is None else prompt
    every_answer = emoji.answers(prompt, lang)
    if not every_answer:
        raise ClipMatchError(f"no emoji answers the prompt {prompt!r}; use an emoji name or tag from labels.json")
    answers = sorted(every_answer & covered)
    if not answers:
        raise ClipMatchError(f"no emoji that answers the prompt {prompt!r} is drawn in style {style!r}")
    k = int(rng.integers(1, MAX_K[layout] + 1))
    matching = rng.choice(answers, k, replace=len(answers) < k)
    distractors = [i for i in emoji.distractors(prompt, every_answer, lang) if i in covered]
    others = rng.choice(distractors, rows * cols - k, replace=False)
    slots = rng.permutation(rows * cols)
    content = dict(zip(slots[:k], matching)) | dict(zip(slots[k:], others))

    tile, gap = int(rng.integers(90, 161)), int(rng.integers(2, 11))
    margin = int(rng.integers(0, gap + 1))
    gap_colour = (255, 255, 255) if rng.random() < 0.7 else random_colour(rng)
    image = Image.new("RGB", (2 * margin + cols * tile + (cols - 1) * gap, 2 * margin + rows * tile + (rows - 1) * gap),
                      gap_colour)
    config, monochrome = RenderConfig(size=tile), emoji.style(style).monochrome
    boxes = []
    for slot in range(rows * cols):
        row, col = divmod(slot, cols)
        left, top = margin + col * (tile + gap), margin + row * (tile + gap)
        image.paste(render_tile(emoji.sprite(int(content[slot]), style), rng, config, monochrome), (left, top))
        boxes.append((left, top, left + tile, top + tile))
    answer = [[int(s) // cols + 1, int(s) % cols + 1] for s in sorted(slots[:k])]
    return Puzzle(image, prompt, style, layout, k, answer, [int(content[s]) for s in range(rows * cols)], boxes)


def write_puzzles(out_dir: str | os.PathLike, count: int, seed: int, style: str = "noto",
                  layouts: Sequence[str] = tuple(LAYOUTS), lang: str = "zh", emoji: EmojiSet | None = None,
                  overwrite: bool = False, prompt: str | None = None) -> Path:
    """Write ``count`` puzzles (layouts alternate; random prompts unless ``prompt``) as PNGs plus
    ``puzzles.jsonl``, atomically."""
    check_style(style)
    for layout in layouts:
        check_layout(layout)
    emoji = emoji or EmojiSet()
    width = max(4, len(str(count)))
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        with open(tmp / "puzzles.jsonl", "w", encoding="utf-8") as lines:
            for i in tqdm(range(count), desc="puzzles", unit="puzzle", disable=None, leave=False):
                puzzle = make_puzzle(emoji, np.random.default_rng([seed, i]), layouts[i % len(layouts)], style, lang,
                                     prompt)
                name = f"{i + 1:0{width}d}.png"
                puzzle.image.save(tmp / name)
                lines.write(json.dumps(puzzle.record(name), ensure_ascii=False) + "\n")
    return Path(out_dir)


def write_tiles(out_dir: str | os.PathLike, count: int, seed: int, style: str = "noto", layout: str = "3x3",
                emoji: EmojiSet | None = None, overwrite: bool = False) -> Path:
    """Write the tiles of ``count`` seeded puzzles as PNGs (``0001_1.png``: puzzle 1, tile 1, row-major):
    puzzle-like images to calibrate a static int8 image tower on."""
    check_style(style)
    check_layout(layout)
    emoji = emoji or EmojiSet()
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        for i in range(count):
            puzzle = make_puzzle(emoji, np.random.default_rng([seed, i]), layout, style)
            for index, box in enumerate(puzzle.boxes):
                puzzle.image.crop(box).save(tmp / f"{i + 1:04d}_{index + 1}.png")
    return Path(out_dir)


def pair_text(emoji: EmojiSet, index: int, rng: np.random.Generator) -> str:
    """A caption for emoji ``index``: Chinese name 45%, English name 20%, a prompt tag 15%, a template 20%."""
    e, draw = emoji.emoji[index], rng.random()
    if draw < 0.45:
        return e.zh
    if draw < 0.65:
        return e.en
    if draw < 0.80:
        tags = sorted(t for t in e.tags_zh if emoji.is_prompt(t, "zh"))
        return str(rng.choice(tags)) if tags else e.zh
    if rng.random() < 0.7:
        return str(rng.choice(ZH_TEMPLATES)).format(e.zh)
    return str(rng.choice(EN_TEMPLATES)).format(e.en)


def all_captions(emoji: EmojiSet, index: int) -> list[str]:
    """Every caption that is true of emoji ``index`` and that puzzles ask for: both names and its prompt tags."""
    e = emoji.emoji[index]
    return list(dict.fromkeys([e.zh, e.en, *sorted(t for t in e.tags_zh if emoji.is_prompt(t, "zh"))]))  # a tag may be the name


CAPTIONS = ("one", "all")


def renderings(emoji: EmojiSet, styles: Sequence[str], repeats: int) -> list[tuple[int, int, int]]:
    """(style number, emoji index, rendering number) of every image, sorted: each emoji gets
    ``repeats`` x len(styles) renderings dealt in turn to the styles that cover it, so an emoji that
    few styles draw is no rarer than the others (and, covered by all, gets ``repeats`` per style)."""
    items = []
    for e in range(len(emoji)):
        drawn = [s for s, style in enumerate(styles) if e in emoji.covers(style)]
        for j in range(repeats * len(styles) if drawn else 0):
            items.append((drawn[(j + e) % len(drawn)], e, j // len(drawn)))
    return sorted(items)


def write_pairs(out_dir: str | os.PathLike, per_emoji: int = 16, valid_per_emoji: int = 1, seed: int = 0,
                styles: Sequence[str] = STYLES, size: int = 96, restyle: float = 0.3,
                emoji: EmojiSet | None = None, overwrite: bool = False, captions: str = "one",
                line_art: float = 0.0) -> dict[str, int]:
    """Training pairs in Chinese-CLIP's TSV/JSONL format: ``per_emoji`` x len(``styles``) renderings of
    every emoji for train, spread over the styles that cover it (`renderings`), ``valid_per_emoji`` x
    len(``styles``) for valid. ``captions="one"``: each rendering gets one drawn caption (`pair_text`);
    ``"all"``: each is linked to all its `all_captions`, so the data states every true match and the
    trainer's label-aware loss never takes one as a negative. ``{split}_tiles.jsonl`` says which emoji
    and style each image id shows."""
    if captions not in CAPTIONS:
        raise ClipMatchError(f"captions must be one of {', '.join(CAPTIONS)}, not {captions!r}")
    styles = list(dict.fromkeys(styles))
    for style in styles:
        check_style(style)
    emoji = emoji or EmojiSet()
    config = RenderConfig(size=size, restyle=restyle, line_art=line_art)
    counts = {}
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        for split_number, (split, repeats) in enumerate((("train", per_emoji), ("valid", valid_per_emoji))):
            items = renderings(emoji, styles, repeats)
            rngs = [np.random.default_rng([seed, split_number, s, e, r]) for s, e, r in items]
            linked: dict[str, list[int]] = {}
            for image_id, ((_, e, _), rng) in enumerate(zip(items, rngs)):
                for text in [pair_text(emoji, e, rng)] if captions == "one" else all_captions(emoji, e):
                    linked.setdefault(text, []).append(image_id)

            def images() -> Iterator[tuple[int, bytes]]:
                bar = tqdm(total=len(items), desc=f"{split} pairs", unit="img", disable=None, leave=False)
                for image_id, ((s, e, _), rng) in enumerate(zip(items, rngs)):
                    buffer = io.BytesIO()
                    tile = render_tile(emoji.sprite(e, styles[s]), rng, config, emoji.style(styles[s]).monochrome)
                    tile.save(buffer, "JPEG", quality=92)
                    bar.update()
                    yield image_id, buffer.getvalue()
                bar.close()

            texts = ((text_id, text, ids) for text_id, (text, ids) in enumerate(sorted(linked.items())))
            write_split(tmp, split, images(), texts)
            with open(tmp / f"{split}_tiles.jsonl", "w", encoding="utf-8") as lines:
                for image_id, (s, e, _) in enumerate(items):
                    lines.write(json.dumps({"image_id": image_id, "emoji": e, "style": styles[s]}) + "\n")
            counts[f"{split}_images"], counts[f"{split}_texts"] = len(items), len(linked)
            counts[f"{split}_pairs"] = sum(map(len, linked.values()))
    return counts
