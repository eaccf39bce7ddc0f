"""Chinese-CLIP's on-disk text formats: ``{split}_imgs.tsv`` and ``{split}_texts.jsonl``.

TSV line: ``image_id<TAB>base64(image file bytes)``. JSONL line:
``{"text_id": int, "text": str, "image_ids": [int, ...]}``. The readers validate every line
and name ``file:line`` in errors; they accept CRLF line endings and a UTF-8 byte-order mark
(both common in files edited on Windows) but reject invalid UTF-8. Ids are normalised to
``int`` so that ``007`` and ``7`` cannot become two different LMDB keys.

Files are read in chunks of whole lines (`scan_file`) and each chunk is parsed at once
(`scan_tsv`, `scan_jsonl`): ordinary lines are recognised with a few C-level byte searches or
one JSON scan, and only unusual lines go through the per-line parsers, which accept the odd
but valid ones and word the error for the bad ones. Chunks are named by byte offsets, so worker
processes can read their share of a file themselves: `line_spans` deals a memory-mapped file
(`map_file`) out in such pieces without reading it.
"""
from __future__ import annotations

import base64
import binascii
import json
import mmap
import re
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, NamedTuple, Optional, TypeVar

from ..errors import ClipMatchError, where
from ..jsonio import parse_object
from ..fsutil import atomic_file

BOM = b"\xef\xbb\xbf"
_INT = re.compile(rb"-?[0-9]+")
_MAX_ID_DIGITS = 4000  # (Python refuses to read integers of over 4,300 digits)
_INT_TYPE = {int}
_WHITESPACE = frozenset(b" \t\r\n\x0b\x0c")
_SPLIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_SCAN = json.JSONDecoder().scan_once  # what json.loads runs, without its per-call wrapping
CHUNK_BYTES = 1 << 20  # a worker's task in `clip-match build-lmdb`: ~400 small JPEGs
_CR, _SPACE = 13, 32

# one parsed TSV line: (line, image_id, b64 start, b64 stop, problem or None); offsets in its chunk
ImageEntry = tuple[int, int, int, int, Optional[str]]
# one parsed JSONL line: (line, text_id, text, image_ids, problem or None)
TextEntry = tuple[int, int, str, tuple[int, ...], Optional[str]]
Entry = TypeVar("Entry", ImageEntry, TextEntry)


class ImageLine(NamedTuple):
    """One TSV line; ``b64`` is the base64 text exactly as stored in the file."""

    image_id: int
    b64: bytes
    line: int


class Chunk(NamedTuple):
    """Whole lines of a file: ``data`` starts at byte ``start``, on line ``first_line``."""

    start: int
    first_line: int
    data: bytes


class Span(NamedTuple):
    """Whole lines of a file: bytes ``[start, stop)``, the first of them line ``first_line``."""

    start: int
    stop: int
    first_line: int


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


def _open(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as error:
        raise ClipMatchError(f"{path}: cannot read: {error.strerror or error}") from None


def scan_file(
    path: Path, scan: Callable[[Chunk, Path], tuple[list, int]], size: int | None = None
) -> Iterator[tuple[Chunk, list]]:
    """``(chunk, entries)`` for each chunk of ``path`` (of about ``size`` bytes, default
    CHUNK_BYTES) in order, ``scan`` (`scan_tsv` or `scan_jsonl`) numbering the lines (which also
    says where the next chunk's numbers start)."""
    line = 1
    for start, data in _chunks(path, size or CHUNK_BYTES):
        chunk = Chunk(start, line, data)
        entries, line = scan(chunk, path)
        yield chunk, entries


def _chunks(path: Path, size: int) -> Iterator[tuple[int, bytes]]:
    """``(offset, data)`` for pieces of ``path`` of about ``size`` bytes that end at line ends."""
    with _open(path) as handle:
        start = 0
        while data := handle.read(size):
            if not data.endswith(b"\n"):
                data += handle.readline()
            yield start, data
            start += len(data)


def map_file(path: Path) -> mmap.mmap | bytes:
    """``path``'s bytes, memory-mapped read-only, so that slices of it can be passed on without a
    copy (the file must not shrink while mapped); ``b""`` for an empty file, which mmap refuses."""
    with _open(path) as handle:
        try:
            return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:
            return b""
        except OSError as error:
            raise ClipMatchError(f"{path}: cannot map: {error.strerror or error}") from None


def line_spans(data: mmap.mmap | bytes, size: int, share: int = 1) -> Iterator[Span]:
    """Pieces of ``data`` of about ``size`` bytes that end at line ends (cut as `scan_file` cuts
    chunks), each with the number of its first line; only line ends are looked at.

    Near the end a piece is at most 1/``share`` of what is left (but at least ``size // 32``),
    so that workers sharing the pieces out finish at about the same time.
    """
    find, end = data.find, len(data)
    start, line = 0, 1
    while start < end:
        step = max(size // 32, min(size, (end - start) // share))
        stop = find(b"\n", min(start + step, end) - 1) + 1 or end
        yield Span(start, stop, line)
        while start := find(b"\n", start, stop) + 1:  # (count the line ends)
            line += 1
        start = stop


def read_chunk(path: Path, start: int, size: int, first_line: int) -> Chunk:
    """The chunk of ``path`` that `scan_file` yielded at byte ``start``."""
    with _open(path) as handle:
        handle.seek(start)
        return Chunk(start, first_line, handle.read(size))


def _content(raw: bytes, file_start: bool) -> tuple[int, bytes | None]:
    """``(offset, content)`` of a raw line: without the BOM (on a file's first line) and line
    ending, starting at ``raw[offset:]``; ``content`` is None for a blank line."""
    offset = len(BOM) if file_start and raw.startswith(BOM) else 0
    content = raw[offset:].rstrip(b"\r\n")
    return offset, (content if content and not content.isspace() else None)  # (strip() would copy every line)


def iter_lines(
    path: Path, start: int = 0, stop: int | None = None, first_line: int = 1
) -> Iterator[tuple[int, bytes, int]]:
    """Yield ``(line_number, content, offset)`` for each non-blank line of the byte range
    ``[start, stop)`` (which must begin a line, numbered ``first_line``), without BOM or line
    ending; ``offset`` is where ``content`` starts in the file.
    """
    with _open(path) as handle:
        handle.seek(start)
        offset = start
        for number, raw in enumerate(handle, first_line):
            if stop is not None and offset >= stop:
                return
            skip, content = _content(raw, offset == 0)
            if content is not None:
                yield number, content, offset + skip
            offset += len(raw)


def scan_tsv(chunk: Chunk, path: Path) -> tuple[list[ImageEntry], int]:
    """Parse every non-blank TSV line of ``chunk``, whose base64 field is ``chunk.data[start:stop]``;
    also return the number of the line after the chunk.

    A plain ``digits<TAB>base64`` line is recognised by byte searches; any other line goes
    through `parse_image_line` (blanks around fields, a BOM, negative ids; errors).
    """
    data, entries, number, pos = chunk.data, [], chunk.first_line, 0
    find, size, ascii_only = data.find, len(data), data.isascii()
    while pos < size:
        end = find(b"\n", pos)
        end = size if end < 0 else end
        tab = find(b"\t", pos, end)
        stop = end - (data[end - 1] == _CR)  # CRLF
        if (pos < tab < stop - 1 and tab - pos <= _MAX_ID_DIGITS and data[tab + 1] > _SPACE
                and data[stop - 1] > _SPACE and data[pos:tab].isdigit()
                and find(b"\t", tab + 1, stop) < 0 and (ascii_only or data[pos:end].isascii())):
            entries.append((number, int(data[pos:tab]), tab + 1, stop, None))
        else:
            entries += _odd_image_line(data, pos, end, number, path, chunk.start)
        pos, number = end + 1, number + 1
    return entries, number


def _odd_image_line(data: bytes, pos: int, end: int, number: int, path: Path, chunk_start: int) -> list[ImageEntry]:
    """The entry of a TSV line that is not plain: none when blank, else parsed or its problem."""
    skip, content = _content(data[pos:end], chunk_start + pos == 0)
    if content is None:
        return []
    try:
        image_id, start, stop = parse_image_line(content, path, number)
    except ClipMatchError as error:
        return [(number, 0, 0, 0, str(error))]
    return [(number, image_id, pos + skip + start, pos + skip + stop, None)]


def scan_jsonl(chunk: Chunk, path: Path) -> tuple[list[TextEntry], int]:
    """Parse every non-blank JSONL line of ``chunk``; also return the number of the line after it.

    One UTF-8 decode for the chunk and one JSON scan per line; other lines (invalid UTF-8, a
    BOM, blanks around the object, errors) go through `parse_text_line`.
    """
    try:
        lines: list = chunk.data.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        lines = chunk.data.split(b"\n")
    entries: list[TextEntry] = []
    for number, line in enumerate(lines, chunk.first_line):
        try:
            obj, end = _SCAN(line, 0)
        except (StopIteration, ValueError, TypeError, RecursionError):  # not JSON here, bytes (not UTF-8), too deep
            obj, end = None, 0
        try:
            if type(obj) is dict and (end == len(line) or line[end:] == "\r"):
                text_id, text, image_ids = _text_fields(obj, path, number)
            else:
                _, content = _content(line if isinstance(line, bytes) else line.encode(), chunk.start == 0 and number == 1)
                if content is None:
                    continue
                text_id, text, image_ids = parse_text_line(content, path, number)
            entries.append((number, text_id, text, image_ids, None))
        except ClipMatchError as error:
            entries.append((number, 0, "", (), str(error)))
    return entries, chunk.first_line + len(lines) - 1


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
    if not _INT.fullmatch(raw_id) or len(raw_id) > _MAX_ID_DIGITS:
        shown = raw_id.decode("utf-8", "replace")[:40]
        raise ClipMatchError(f"{where(path, number)}: image_id must be an integer of at most {_MAX_ID_DIGITS} digits, "
                             f"got {shown!r}")
    if start == stop:
        raise ClipMatchError(f"{where(path, number)}: empty base64 image field")
    if not content.isascii():
        raise ClipMatchError(f"{where(path, number)}: base64 field holds non-ASCII bytes (invalid UTF-8 or not base64)")
    return int(raw_id), start, stop


def parse_text_line(content: bytes, path: Path, number: int) -> tuple[int, str, tuple[int, ...]]:
    """Decode and validate one JSONL line; return (text_id, text, image_ids)."""
    return _text_fields(parse_object(content, where(path, number)), path, number)


def _text_fields(obj: dict, path: Path, number: int) -> tuple[int, str, tuple[int, ...]]:
    """(text_id, text, image_ids) of a JSONL object, checked."""
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


def sound_entries(entries: Iterable[Entry], path: Path, id_field: str, seen: set[int] | None,
                  report: Callable[[str, int], None]) -> Iterator[Entry]:
    """The parsed lines (`scan_tsv`, `scan_jsonl` entries) without a problem whose id is new to
    ``seen``, which they are added to (``seen`` None: ids may repeat). ``report(message, line)``
    is told of the others, so a reader can raise and a build can skip and count them."""
    for entry in entries:
        number, record_id, problem = entry[0], entry[1], entry[-1]
        if problem is not None:
            report(problem, number)
        elif seen is None:
            yield entry
        elif record_id in seen:
            report(f"{where(path, number)}: duplicate {id_field} {record_id}", number)
        else:
            seen.add(record_id)
            yield entry


def _raise(message: str, number: int) -> None:
    raise ClipMatchError(message)


def read_tsv(path: str | Path, unique: bool = True) -> Iterator[ImageLine]:
    """Yield validated TSV lines; with ``unique``, a duplicate image id is an error."""
    path = Path(path)
    seen: set[int] | None = set() if unique else None
    for chunk, entries in scan_file(path, scan_tsv):
        for number, image_id, start, stop, _ in sound_entries(entries, path, "image_id", seen, _raise):
            yield ImageLine(image_id, chunk.data[start:stop], number)


def read_jsonl(path: str | Path) -> Iterator[TextLine]:
    """Yield validated JSONL lines; duplicate text ids are an error."""
    path = Path(path)
    seen: set[int] = set()
    for _, entries in scan_file(path, scan_jsonl):
        for number, text_id, text, image_ids, _ in sound_entries(entries, path, "text_id", seen, _raise):
            yield TextLine(text_id, text, image_ids, number)


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
