"""The emoji tile dataset (this folder): sprites in many art styles (styles.py), names, tags and prompts.

A prompt is a Chinese (or English) emoji name or tag. An emoji *answers* a prompt when the
prompt is its name or one of its tags; it *may answer* it when, in addition, either string
contains the other (伞 and 降落伞): such emoji are never used as distractors.

A style draws only the emoji its source has (its ``covers`` in labels.json); asking for any
other emoji in it is an error, so nothing is ever drawn in a style that lacks it.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from clip_match.errors import ClipMatchError

DEFAULT_ROOT = Path(__file__).resolve().parent
LANGUAGES = ("zh", "en")
MAX_TAG_MEMBERS = 6  # tags shared by more emoji (食物, 动物) are too vague to be puzzle prompts


@dataclass(frozen=True)
class Emoji:
    index: int
    char: str
    en: str
    zh: str
    tags_en: tuple[str, ...]
    tags_zh: tuple[str, ...]

    def name(self, lang: str) -> str:
        return self.zh if lang == "zh" else self.en

    def terms(self, lang: str) -> frozenset[str]:
        """Its name and tags in ``lang``: the prompts it answers."""
        return frozenset((self.name(lang), *(self.tags_zh if lang == "zh" else self.tags_en)))


@dataclass(frozen=True)
class Style:
    """One art style's sprite sheet: tile j of ``sheet`` is emoji ``covers[j]``."""

    name: str
    sheet: str
    source: str
    licence: str
    monochrome: bool  # black on transparent: draw it in an ink colour
    covers: tuple[int, ...]


def read_style(name: str, entry: object, count: int, where: str) -> Style:
    """A labels.json style entry, checked: a hand-edited or stale file fails here, naming the style."""
    fields = {"sheet": str, "source": str, "licence": str, "monochrome": bool, "covers": list}
    if not isinstance(entry, dict) or any(not isinstance(entry.get(f), kind) for f, kind in fields.items()):
        raise ClipMatchError(f"{where}: style {name!r} needs " + ", ".join(f"{f} ({k.__name__})" for f, k in fields.items()))
    covers = entry["covers"]
    if not all(type(i) is int for i in covers) or covers != sorted(set(covers)) \
            or (covers and not 0 <= covers[0] <= covers[-1] < count):
        raise ClipMatchError(f"{where}: style {name!r}: 'covers' must be increasing emoji indices below {count}")
    return Style(name, entry["sheet"], entry["source"], entry["licence"], entry["monochrome"], tuple(covers))


class EmojiSet:
    """Labels and sprite sheets of the emoji dataset; sprites are cut from the sheets on demand."""

    def __init__(self, root: str | Path = DEFAULT_ROOT):
        self.root = Path(root)
        labels_path = self.root / "labels.json"
        try:
            meta = json.loads(labels_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ClipMatchError(f"{labels_path}: emoji dataset not found (build it with python -m datasets.emoji.build)") from None
        self.tile_size = int(meta["tile_size"])
        self.columns = int(meta["columns"])
        self.emoji = [
            Emoji(i, e["emoji"], e["en"], e["zh"], tuple(e["tags_en"]), tuple(e["tags_zh"]))
            for i, e in enumerate(meta["emoji"])
        ]
        self.styles = {name: read_style(name, entry, len(self.emoji), str(labels_path))
                       for name, entry in meta["styles"].items()}

    def __len__(self) -> int:
        return len(self.emoji)

    def style(self, name: str) -> Style:
        if name not in self.styles:
            raise ClipMatchError(f"unknown emoji style {name!r}; styles: {', '.join(self.styles)}")
        return self.styles[name]

    @functools.cache
    def covers(self, style: str) -> frozenset[int]:
        """The emoji drawn in ``style``."""
        return frozenset(self.style(style).covers)

    @functools.cache
    def _tiles(self, style: str) -> tuple[Image.Image, dict[int, int]]:
        """The style's sheet and each covered emoji's tile number on it."""
        with Image.open(self.root / self.style(style).sheet) as sheet:
            return sheet.convert("RGBA"), {index: j for j, index in enumerate(self.style(style).covers)}

    def sprite(self, index: int, style: str) -> Image.Image:
        """The RGBA sprite (transparent background) of emoji ``index`` in ``style``."""
        sheet, tiles = self._tiles(style)
        if index not in tiles:
            raise ClipMatchError(f"emoji {index} ({self.emoji[index].en}) is not drawn in style {style!r}")
        size, (row, col) = self.tile_size, divmod(tiles[index], self.columns)
        return sheet.crop((col * size, row * size, (col + 1) * size, (row + 1) * size))

    @functools.cache
    def prompts(self, lang: str = "zh", style: str | None = None) -> tuple[str, ...]:
        """Puzzle prompts: every name, plus tags shared by 2..MAX_TAG_MEMBERS emoji (not numbers); with
        ``style``, only those that an emoji drawn in it answers."""
        members = self.answers_table(lang)
        names = {e.name(lang) for e in self.emoji}
        tags = {t for t, group in members.items()
                if t not in names and 2 <= len(group) <= MAX_TAG_MEMBERS and not t.isdigit()}
        prompts = sorted(names | tags)
        if style is not None:
            prompts = [p for p in prompts if members[p] & self.covers(style)]
        return tuple(prompts)

    @functools.cache
    def is_prompt(self, term: str, lang: str = "zh") -> bool:
        return term in frozenset(self.prompts(lang))

    @functools.cache
    def answers_table(self, lang: str = "zh") -> dict[str, frozenset[int]]:
        """prompt -> indices of the emoji that answer it."""
        if lang not in LANGUAGES:
            raise ClipMatchError(f"unknown language {lang!r}; languages: {', '.join(LANGUAGES)}")
        table: dict[str, set[int]] = {}
        for e in self.emoji:
            for term in e.terms(lang):
                table.setdefault(term, set()).add(e.index)
        return {term: frozenset(indices) for term, indices in table.items()}

    def answers(self, prompt: str, lang: str = "zh") -> frozenset[int]:
        return self.answers_table(lang).get(prompt, frozenset())

    def distractors(self, prompt: str, answers: set[int] | frozenset[int], lang: str = "zh") -> list[int]:
        """Emoji that can never answer ``prompt``: no term containing it or contained in it, and no
        name or tag shared with any of ``answers``."""
        answer_terms = set().union(*(self.emoji[i].terms(lang) for i in answers)) if answers else set()
        return [
            e.index for e in self.emoji
            if not any(prompt in term or term in prompt or term in answer_terms for term in e.terms(lang))
        ]
