"""Emoji spelled out as their CLDR names before tokenising.

The BERT vocabulary has no emoji: "🌂", "🐱" and "😀🐱🌂🎉" each tokenise to [UNK] alone, so every
emoji-only prompt would get the same text vector. Each emoji (the longest sequence at each place:
ZWJ sequences, flags, skin tones) becomes its name from ``assets/emoji_names.json`` (emojibase-data,
from Unicode CLDR): the Chinese name in a text with Chinese characters or in one of emoji alone, the
English name in a text of Latin letters. Torch-free.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

NAMES_PATH = Path(__file__).resolve().parent.parent / "assets" / "emoji_names.json"
_VARIATION_SELECTOR = "\ufe0f"


@functools.cache
def _table() -> tuple[dict[str, tuple[str, str]], frozenset[str], int]:
    """name table, the characters an emoji can start with, the longest sequence (in characters)."""
    names = {key: tuple(pair) for key, pair in
             json.loads(NAMES_PATH.read_text(encoding="utf-8"))["names"].items()}
    return names, frozenset(key[0] for key in names), max(map(len, names))


def spell_out_emoji(text: str) -> str:
    """``text`` with every emoji replaced by its name (unchanged when it holds none)."""
    names, starts, longest = _table()
    if starts.isdisjoint(text):
        return text
    text = text.replace(_VARIATION_SELECTOR, "")
    english = not any(_is_cjk(char) for char in text) and any(char.isascii() and char.isalpha() for char in text)
    pieces, i = [], 0
    while i < len(text):
        match = next((text[i:i + size] for size in range(min(longest, len(text) - i), 0, -1)
                      if text[i:i + size] in names), None) if text[i] in starts else None
        if match is None:
            pieces.append(text[i])
            i += 1
            continue
        name = names[match][1 if english else 0]
        pieces.append(f" {name} " if english else name)
        i += len(match)
    return " ".join("".join(pieces).split()) if english else "".join(pieces)


def _is_cjk(char: str) -> bool:
    return "\u3400" <= char <= "\u9fff" or "\uf900" <= char <= "\ufaff" or "\U00020000" <= char <= "\U0002ffff"
