"""Chinese-CLIP's on-disk text formats: ``{split}_imgs.tsv`` and ``{split}_texts.jsonl``.

TSV line: ``image_id<TAB>base64(image file bytes)``. JSONL line:
``{"text_id": int, "text": str, "image_ids": [int, ...]}``. The readers validate every line
and name ``file:line`` in errors; they accept CRLF line endings and a UTF-8 byte-order mark
(both common in files edited on Windows) but reject invalid UTF-8. Ids are normalised to
``int`` so that ``007`` and ``7`` cannot become two different LMDB keys.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

from ..errors import ClipMatchError, where
from ..jsonio import parse_object
from ..fsutil import atomic_file

BOM = b"\xef\xbb\xbf"
_INT = re.compile(rb"-?[0-9]+")
_INT_TYPE = {int}
_WHITESPACE = frozenset(b" \t\r\n\x0b\x0c")
_SPLIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class ImageLine(NamedTuple):
    """One TSV line; ``b64`` is the base64 text exactly as stored in the file."""

    image_id: int
    b64: bytes
    line: int


class TextLine(NamedTuple):
    """One JSONL line: a text and every image it describes."""

    text_id: int
    text: str
    image_ids: tuple[int, ...]
    line: int


def imgs_path(data_dir: str | Path, split: str) -> Path:
    return Path(data_dir) / f"{check_split_name(split)}_imgs.tsv"


def texts_path(data_dir: str | Path, split: str) -> Path:
    return Path(data_dir) / f"{check_split_name(split)}_texts.jsonl"


def check_split_name(split: str) -> str:
    """Split names become file and directory names: allow only plain names."""
    if not _SPLIT_NAME.fullmatch(split):
        raise ClipMatchError(f"invalid split name {split!r} (use letters, digits, '_', '-', '.')")
    return split


def encode_b64(image_bytes: bytes) -> str:
    """Standard base64, as in Chinese-CLIP's README (its loader also accepts URL-safe)."""
    return base64.b64encode(image_bytes).decode("ascii")


def decode_b64(b64: bytes | str, source: str) -> bytes:
    """Strictly decode standard or URL-safe base64 (what cn_clip's ``urlsafe_b64decode`` accepts)."""
    try:
        return base64.b64decode(b64, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as error:
        raise ClipMatchError(f"{source}: corrupt base64 image data: {error}") from None


def iter_lines(
    path: Path, start: int = 0, stop: int | None = None, first_line: int = 1
) -> Iterator[tuple[int, bytes, int]]:
    """Yield ``(line_number, content, offset)`` for each non-blank line of the byte range
    ``[start, stop)`` (which must begin a line, numbered ``first_line``), without BOM or line
    ending; ``offset`` is where ``content`` starts in the file. Byte ranges let worker
    processes read their share of a file themselves.
    """
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise ClipMatchError(f"{path}: cannot read: {error.strerror or error}") from None
    with handle:
        handle.seek(start)
        offset = start
        for number, raw in enumerate(handle, first_line):
            if stop is not None and offset >= stop:
                return
            line_start, offset = offset, offset + len(raw)
            if line_start == 0 and raw.startswith(BOM):
                raw, line_start = raw[len(BOM):], len(BOM)
            content = raw.rstrip(b"\r\n")
            if content and not content.isspace():  # (strip() would copy every line)
                yield number, content, line_start


def parse_image_line(content: bytes, path: Path, number: int) -> tuple[int, int, int]:
    """Check one TSV line's structure (not its image: see ``lmdb_build``).

    Returns ``(image_id, start, stop)``, the base64 field being ``content[start:stop]``: the
    build copies it straight from the file into the LMDB, and lines are long.
    """
    tab = content.find(b"\t")
    if tab < 0 or content.find(b"\t", tab + 1) >= 0:
        fields = content.count(b"\t") + 1
        raise ClipMatchError(f"{where(path, number)}: expected 2 tab-separated fields (image_id, base64), got {fields}")
    raw_id = content[:tab].strip()
    start, stop = tab + 1, len(content)
    while start < stop and content[start] in _WHITESPACE:
        start += 1
    while stop > start and content[stop - 1] in _WHITESPACE:
        stop -= 1
    if not _INT.fullmatch(raw_id):
        shown = raw_id.decode("utf-8", "replace")[:40]
        raise ClipMatchError(f"{where(path, number)}: image_id must be an integer, got {shown!r}")
    if start == stop:
        raise ClipMatchError(f"{where(path, number)}: empty base64 image field")
    if not content.isascii():
        raise ClipMatchError(f"{where(path, number)}: base64 field holds non-ASCII bytes (invalid UTF-8 or not base64)")
    return int(raw_id), start, stop


def parse_text_line(content: bytes, path: Path, number: int) -> tuple[int, str, tuple[int, ...]]:
    """Decode and validate one JSONL line; return (text_id, text, image_ids)."""
    obj = parse_object(content, where(path, number))
    try:
        text_id, text, image_ids = obj["text_id"], obj["text"], obj["image_ids"]
        if (type(text_id) is int and type(text) is str and text and not text.isspace()
                and type(image_ids) is list and set(map(type, image_ids)) == _INT_TYPE
                and len(set(image_ids)) == len(image_ids)):
            return text_id, text, tuple(image_ids)
    except (KeyError, TypeError):
        pass
    raise ClipMatchError(f"{where(path, number)}: {_text_line_problem(obj)}")


def _text_line_problem(obj: dict) -> str:
    """Say what is wrong with a parsed JSONL object that failed the fast check."""
    missing = next((f for f in ("text_id", "text", "image_ids") if f not in obj), None)
    if missing:
        return f"missing field {missing!r}"
    text_id, text, image_ids = obj["text_id"], obj["text"], obj["image_ids"]
    if not _is_int(text_id):
        return f"field 'text_id' must be an integer, got {text_id!r}"
    if not isinstance(text, str):
        return f"field 'text' must be a string, got {type(text).__name__}"
    if not text.strip():
        return "field 'text' is empty or whitespace only"
    if not isinstance(image_ids, list) or not image_ids:
        return "field 'image_ids' must be a non-empty list of integers"
    bad = next((i for i in image_ids if not _is_int(i)), None)
    if bad is not None:
        return f"field 'image_ids' must hold integers, got {bad!r}"
    return "field 'image_ids' lists an image twice"


def _is_int(value: object) -> bool:
    return type(value) is int  # bool is an int subclass but not an id


def read_tsv(path: str | Path, unique: bool = True) -> Iterator[ImageLine]:
    """Yield validated TSV lines; with ``unique``, a duplicate image id is an error."""
    path = Path(path)
    seen: set[int] = set()
    for number, content, _ in iter_lines(path):
        image_id, start, stop = parse_image_line(content, path, number)
        if unique and image_id in seen:
            raise ClipMatchError(f"{where(path, number)}: duplicate image_id {image_id}")
        seen.add(image_id)
        yield ImageLine(image_id, content[start:stop], number)


def read_jsonl(path: str | Path) -> Iterator[TextLine]:
    """Yield validated JSONL lines; duplicate text ids are an error."""
    path = Path(path)
    seen: set[int] = set()
    for number, content, _ in iter_lines(path):
        record = TextLine(*parse_text_line(content, path, number), number)
        if record.text_id in seen:
            raise ClipMatchError(f"{where(path, number)}: duplicate text_id {record.text_id}")
        seen.add(record.text_id)
        yield record


def write_split(
    out_dir: str | Path,
    split: str,
    images: Iterable[tuple[int, bytes]],
    texts: Iterable[tuple[int, str, list[int]]],
) -> None:
    """Write one split's TSV and JSONL, each atomically (temporary name, then rename)."""
    with atomic_file(imgs_path(out_dir, split), "w", encoding="utf-8", newline="\n") as tsv:
        for image_id, image_bytes in images:
            tsv.write(f"{int(image_id)}\t{encode_b64(image_bytes)}\n")
    with atomic_file(texts_path(out_dir, split), "w", encoding="utf-8", newline="\n") as jsonl:
        for text_id, text, image_ids in texts:
            record = {"text_id": int(text_id), "text": text, "image_ids": [int(i) for i in image_ids]}
            jsonl.write(json.dumps(record, ensure_ascii=False) + "\n")
