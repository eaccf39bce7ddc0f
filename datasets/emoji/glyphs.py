"""The emoji tile dataset (this folder): sprites in two art styles, names, tags and prompts.

A prompt is a Chinese (or English) emoji name or tag. An emoji *answers* a prompt when the
prompt is its name or one of its tags; it *may answer* it when, in addition, either string
contains the other (伞 and 降落伞): such emoji are never used as distractors.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from clip_match.errors import ClipMatchError

DEFAULT_ROOT = Path(__file__).resolve().parent
STYLES = ("noto", "fluent")
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


class EmojiSet:
    """Labels and sprite sheets of the emoji dataset; sprites are cut from the sheets on demand."""

    def __init__(self, root: str | Path = DEFAULT_ROOT):
        self.root = Path(root)
        labels_path = self.root / "labels.json"
        try:
            meta = json.loads(labels_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ClipMatchError(f"{labels_path}: emoji dataset not found (build it with datasets/emoji/build.py)") from None
        self.tile_size = int(meta["tile_size"])
        self.columns = int(meta["columns"])
        self.sheet_files = dict(meta["styles"])
        self.emoji = [
            Emoji(i, e["emoji"], e["en"], e["zh"], tuple(e["tags_en"]), tuple(e["tags_zh"]))
            for i, e in enumerate(meta["emoji"])
        ]

    def __len__(self) -> int:
        return len(self.emoji)

    @functools.cache
    def _sheet(self, style: str) -> Image.Image:
        if style not in self.sheet_files:
            raise ClipMatchError(f"unknown emoji style {style!r}; styles: {', '.join(self.sheet_files)}")
        with Image.open(self.root / self.sheet_files[style]) as sheet:
            return sheet.convert("RGBA")

    def sprite(self, index: int, style: str) -> Image.Image:
        """The RGBA sprite (transparent background) of emoji ``index`` in ``style``."""
        size, row, col = self.tile_size, *divmod(index, self.columns)
        return self._sheet(style).crop((col * size, row * size, (col + 1) * size, (row + 1) * size))

    @functools.cache
    def prompts(self, lang: str = "zh") -> tuple[str, ...]:
        """Puzzle prompts: every name, plus tags shared by 2..MAX_TAG_MEMBERS emoji (not numbers)."""
        members = self.answers_table(lang)
        names = {e.name(lang) for e in self.emoji}
        tags = {t for t, group in members.items()
                if t not in names and 2 <= len(group) <= MAX_TAG_MEMBERS and not t.isdigit()}
        return tuple(sorted(names | tags))

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
