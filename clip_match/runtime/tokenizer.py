"""Chinese-CLIP's BERT WordPiece tokenizer without torch.

`tokenize` returns exactly what ``cn_clip.clip.tokenize`` returns (as an int64 numpy array), so
text embeddings computed with clip_match match the ones cn_clip computes. The steps are those
of cn_clip's ``FullTokenizer`` (``cn_clip/clip/bert_tokenizer.py``):

1. drop NUL, U+FFFD and control characters (Cc/Cf, except tab/CR/LF); whitespace -> space,
2. put spaces around CJK ideographs, split on whitespace,
3. per word: lower-case, strip accents (NFD, drop Mn), split off every punctuation character
   (all non-alphanumeric ASCII counts as punctuation),
4. greedy longest-match-first WordPiece; a word longer than 200 characters, or one that
   cannot be covered by vocabulary pieces, becomes a single [UNK].

Speed: steps 1-2 are one ``str.translate`` over a per-code-point table filled on first sight,
and steps 3-4 are cached per word, which pays for candidate lists of 1e5+ labels that share
words. Non-``str`` inputs are rejected (cn_clip would silently decode ``bytes``).
"""
from __future__ import annotations

import functools
import itertools
import os
import unicodedata
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ClipMatchError
from .emoji import spell_out_emoji

VOCAB_PATH = Path(__file__).with_name("vocab.txt")
MAX_CHARS_PER_WORD = 200
_SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[UNK]")


def normalize_text(text: str) -> str:
    """What training and query time apply before tokenising.

    cn_clip's trainer lower-cases and turns curly double quotes into ``"``; curly single quotes
    become ``'`` too, because the vocabulary maps ``’`` (common in English names) to [UNK]; emoji,
    which it maps to [UNK] as well, are spelled out as their names (`spell_out_emoji`).
    """
    return (
        spell_out_emoji(text).lower()
        .replace("\u201c", '"')
        .replace("\u201d", '"')
        .replace("\u2018", "'")
        .replace("\u2019", "'")
    )


def strip_invisible(text: str) -> str:
    """``text`` without the characters the tokenizer drops (NUL, U+FFFD, control and format
    characters such as the zero-width space U+200B), so an emptiness check sees what the model sees."""
    return "".join(char for char in text if not _is_dropped(char))


def load_vocab(path: str | os.PathLike) -> dict[str, int]:
    """Read a BERT vocabulary the way cn_clip does: one token per line, stripped, id = line number."""
    try:
        with open(path, encoding="utf-8") as lines:
            vocab = {line.strip(): index for index, line in enumerate(lines)}
    except (OSError, UnicodeDecodeError) as error:
        raise ClipMatchError(f"{path}: cannot read tokenizer vocabulary: {error}") from None
    missing = [token for token in _SPECIAL_TOKENS if token not in vocab]
    if missing:
        raise ClipMatchError(f"{path}: not a BERT vocabulary, missing {', '.join(missing)}")
    return vocab


class Tokenizer:
    """A WordPiece tokenizer over one vocabulary file; call it like `tokenize`."""

    def __init__(self, vocab_file: str | os.PathLike = VOCAB_PATH, cache_size: int = 1 << 18):
        self.vocab = load_vocab(vocab_file)
        self.cls_id, self.sep_id, self.unk_id = (self.vocab[token] for token in _SPECIAL_TOKENS)
        self._longest_token = max(map(len, self.vocab))
        self._word_ids = functools.lru_cache(maxsize=cache_size)(self._compute_word_ids)

    def __call__(
        self, texts: str | Sequence[str], context_length: int = 52, pad_to_longest: bool = False
    ) -> np.ndarray:
        """Token ids, shape (n, context_length) or (n, longest row) with ``pad_to_longest``.

        Each row is [CLS] + at most ``context_length - 2`` word pieces + [SEP], zero-padded.
        """
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(context_length, (int, np.integer)) or context_length < 2:
            raise ClipMatchError(f"context_length must be an integer >= 2, got {context_length!r}")
        context_length = int(context_length)
        rows = [self.encode(text, name=f"texts[{index}]")[: context_length - 2] for index, text in enumerate(texts)]
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        width = int(lengths.max(initial=0)) + 2 if pad_to_longest else context_length
        ids = np.zeros((len(rows), width), dtype=np.int64)
        ids[:, 0] = self.cls_id
        body = ids[:, 1:]
        body[np.arange(width - 1) < lengths[:, None]] = np.fromiter(
            itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum())
        )
        ids[np.arange(len(rows)), lengths + 1] = self.sep_id
        return ids

    def encode(self, text: str, name: str = "text") -> list[int]:
        """Word-piece ids of one text, without [CLS]/[SEP] and without truncation."""
        if not isinstance(text, str):
            raise ClipMatchError(f"{name}: expected a str, got {type(text).__name__}")
        ids: list[int] = []
        for word in text.translate(_CLEAN_AND_SPLIT_CJK).split():
            ids.extend(self._word_ids(word))
        return ids

    def _compute_word_ids(self, word: str) -> tuple[int, ...]:
        ids: list[int] = []
        for piece in _split_punctuation(_strip_accents(word.lower())):
            for subword in piece.split():
                ids.extend(self._wordpiece(subword))
        return tuple(ids)

    def _wordpiece(self, word: str) -> list[int]:
        """Greedy longest-match-first split into vocabulary pieces; [UNK] if impossible."""
        if len(word) > MAX_CHARS_PER_WORD:
            return [self.unk_id]
        ids = []
        start = 0
        while start < len(word):
            end = min(len(word), start + self._longest_token)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                token_id = self.vocab.get(piece)
                if token_id is not None:
                    ids.append(token_id)
                    break
                end -= 1
            else:
                return [self.unk_id]
            start = end
        return ids


@functools.lru_cache(maxsize=None)
def default_tokenizer() -> Tokenizer:
    """The tokenizer over the packaged CN-CLIP vocabulary (loaded once)."""
    return Tokenizer(VOCAB_PATH)


def tokenize(texts: str | Sequence[str], context_length: int = 52, pad_to_longest: bool = False) -> np.ndarray:
    """Exactly ``cn_clip.clip.tokenize(texts, context_length)`` as an int64 array, without torch.

    With ``pad_to_longest`` the padding stops at the longest row: the text tower's cost grows
    with sequence length, and short labels need far fewer than 52 positions.
    """
    return default_tokenizer()(texts, context_length, pad_to_longest)


class _CleanAndSplitCJK(dict):
    """``str.translate`` table: removes invalid/control characters, maps whitespace to a
    space and surrounds CJK ideographs with spaces. Filled lazily, one code point at a time."""

    def __missing__(self, code_point: int) -> str:
        char = chr(code_point)
        if _is_dropped(char):
            mapped = ""
        elif _is_whitespace(char):
            mapped = " "
        elif _is_cjk_ideograph(code_point):
            mapped = f" {char} "
        else:
            mapped = char
        self[code_point] = mapped
        return mapped


_CLEAN_AND_SPLIT_CJK = _CleanAndSplitCJK()

_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


def _is_cjk_ideograph(code_point: int) -> bool:
    return any(low <= code_point <= high for low, high in _CJK_RANGES)


def _is_whitespace(char: str) -> bool:
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def _is_dropped(char: str) -> bool:
    """NUL, U+FFFD and control/format characters: cn_clip's tokenizer removes them."""
    return ord(char) in (0, 0xFFFD) or _is_control(char)


def _is_control(char: str) -> bool:
    return char not in "\t\n\r" and unicodedata.category(char) in ("Cc", "Cf")


def _is_punctuation(char: str) -> bool:
    """Unicode P* categories plus every non-alphanumeric printable ASCII character."""
    code_point = ord(char)
    if 33 <= code_point <= 47 or 58 <= code_point <= 64 or 91 <= code_point <= 96 or 123 <= code_point <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _strip_accents(word: str) -> str:
    return "".join(char for char in unicodedata.normalize("NFD", word) if unicodedata.category(char) != "Mn")


def _split_punctuation(word: str) -> list[str]:
    """Split a word so that each punctuation character is a piece of its own."""
    pieces: list[str] = []
    current: list[str] = []
    for char in word:
        if _is_punctuation(char):
            if current:
                pieces.append("".join(current))
                current = []
            pieces.append(char)
        else:
            current.append(char)
    if current:
        pieces.append("".join(current))
    return pieces
