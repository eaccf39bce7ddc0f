"""Candidate texts: reading candidate files and the key under which duplicates collapse."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..errors import ClipMatchError, where
from ..formulas.latex import normalize_latex
from ..jsonio import parse_object
from ..runtime.tokenizer import normalize_text, strip_invisible


@dataclass(frozen=True)
class Candidate:
    """One candidate: a stable ``id``, the ``text`` as given, and any extra JSONL fields."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


def candidate_key(text: str, latex: bool) -> str:
    """The text that is embedded and compared for duplicates.

    LaTeX: `normalize_latex`. Plain text: what the model sees anyway (`normalize_text`, i.e.
    lower-case and straight quotes, without the characters the tokenizer drops) with runs of
    whitespace collapsed.
    """
    return normalize_latex(text) if latex else " ".join(normalize_text(strip_invisible(text)).split())


def read_candidates(path: str | os.PathLike) -> list[Candidate]:
    """Read a candidate file: JSONL (``.jsonl``; ``id``, ``text``, other fields kept as metadata)
    or plain text (one candidate per line; the id is the stripped line, and a repeated line is kept
    once). Blank lines are skipped; lines end at newlines only (a U+2028 inside a JSON string is text)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ClipMatchError(f"{path}: cannot read candidates: {error.strerror or error}") from None
    try:
        lines = data.decode("utf-8").split("\n")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise ClipMatchError(f"{where(path, line)}: not UTF-8 text ({error.reason})") from None
    jsonl = path.suffix.lower() == ".jsonl"
    parse = _parse_jsonl_line if jsonl else _parse_text_line
    first_line: dict[str, int] = {}
    candidates, repeated = [], 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        candidate = parse(line, where(path, number))
        if candidate.id in first_line:
            if jsonl:
                raise ClipMatchError(f"{where(path, number)}: candidate id {candidate.id!r} is already on line "
                                     f"{first_line[candidate.id]}")
            repeated += 1
            continue
        first_line[candidate.id] = number
        candidates.append(candidate)
    if not candidates:
        raise ClipMatchError(f"{path}: no candidates (the file is empty)")
    if repeated:
        warnings.warn(f"{path}: {repeated} repeated line(s) kept once", stacklevel=2)
    return candidates


def check_unique_ids(candidates: Iterable[Candidate], source: str) -> None:
    seen: set[str] = set()
    for candidate in candidates:
        if candidate.id in seen:
            raise ClipMatchError(f"{source}: candidate id {candidate.id!r} occurs more than once")
        seen.add(candidate.id)


def _parse_text_line(line: str, location: str) -> Candidate:
    text = line.strip()
    return Candidate(id=text, text=text)


def _parse_jsonl_line(line: str, location: str) -> Candidate:
    record = parse_object(line, location)
    for name in ("id", "text"):
        if name not in record:
            raise ClipMatchError(f"{location}: missing field {name!r}")
    if not isinstance(record["text"], str) or not record["text"].strip():
        raise ClipMatchError(f"{location}: field 'text' must be a non-empty string")
    if not isinstance(record["id"], (str, int)) or isinstance(record["id"], bool):
        raise ClipMatchError(f"{location}: field 'id' must be a string or an integer")
    metadata = {key: value for key, value in record.items() if key not in ("id", "text")}
    return Candidate(id=str(record["id"]), text=record["text"], metadata=metadata)
