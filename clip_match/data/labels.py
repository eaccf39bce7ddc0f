"""Where users start: an image folder plus a labels file, or one sub-folder per label.

Labels files map an image path (relative to the image folder) to one or more texts:

- CSV / TSV: ``path,text[,text...]`` per row; a first row whose first cell is ``image`` or
  ``path`` is a header. Rows naming the same image add texts to it.
- JSONL: ``{"image": "cats/1.jpg", "text": "猫"}`` or ``{"image": ..., "texts": ["猫", "cat"]}``.

Both yield ``(key, path, texts)`` records for `prepare.write_dataset`, the key being the
image's path relative to the folder (its stable identity).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path, PurePosixPath
from typing import Iterator

from ..errors import ClipMatchError, where
from ..jsonio import parse_object
from ..runtime.images import image_files
from .formats import BOM

_HEADER_CELLS = frozenset({"image", "path"})


def folder_records(images_dir: str | Path) -> Iterator[tuple[str, Path, list[str]]]:
    """One record per image file under ``images_dir/<label>/``; the label is the folder name."""
    root = _existing_dir(images_dir)
    labels = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not labels:
        raise ClipMatchError(f"{root}: no label sub-folders (expected {root}/<label>/<image files>)")
    for folder in labels:
        label = folder.name.strip()
        if not label:
            raise ClipMatchError(f"{folder}: folder name is empty or whitespace only")
        for path in image_files(folder):
            yield path.relative_to(root).as_posix(), path, [label]


def labels_file_records(images_dir: str | Path, labels_path: str | Path) -> list[tuple[str, Path, list[str]]]:
    """Records from a CSV, TSV or JSONL labels file; rows for the same image are merged."""
    root = _existing_dir(images_dir)
    labels_path = Path(labels_path)
    suffix = labels_path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".jsonl"):
        raise ClipMatchError(f"{labels_path}: unknown labels format {suffix!r} (use .csv, .tsv or .jsonl)")
    text = _read_text(labels_path)
    rows = _jsonl_rows(text, labels_path) if suffix == ".jsonl" else _table_rows(text, labels_path, "," if suffix == ".csv" else "\t")
    merged: dict[str, tuple[Path, list[str]]] = {}
    for line, name, texts in rows:
        key = _relative_key(name, labels_path, line)
        path = root / key
        if not path.is_file():
            raise ClipMatchError(f"{where(labels_path, line)}: image {name!r} not found in {root}")
        merged.setdefault(key, (path, []))[1].extend(texts)
    if not merged:
        raise ClipMatchError(f"{labels_path}: no labelled images")
    return [(key, path, texts) for key, (path, texts) in merged.items()]


def _existing_dir(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise ClipMatchError(f"{path}: image folder not found")
    return path


def _read_text(path: Path) -> str:
    """Whole file as text: BOM dropped, invalid UTF-8 reported with its line."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ClipMatchError(f"{path}: cannot read: {error.strerror or error}") from None
    data = data[len(BOM):] if data.startswith(BOM) else data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ClipMatchError(f"{where(path, line)}: invalid UTF-8 at byte {error.start}") from None


def _table_rows(text: str, path: Path, delimiter: str) -> Iterator[tuple[int, str, list[str]]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    first = True
    try:
        for row in reader:
            line = reader.line_num
            cells = [c.strip() for c in row]
            if not any(cells):
                continue
            if first and cells[0].lower() in _HEADER_CELLS:
                first = False
                continue
            first = False
            texts = [c for c in cells[1:] if c]
            if not cells[0]:
                raise ClipMatchError(f"{where(path, line)}: empty image path")
            if not texts:
                raise ClipMatchError(f"{where(path, line)}: no text for image {cells[0]!r} (empty or whitespace only)")
            yield line, cells[0], texts
    except csv.Error as error:
        raise ClipMatchError(f"{where(path, reader.line_num)}: malformed {path.suffix[1:].upper()}: {error}") from None


def _jsonl_rows(text: str, path: Path) -> Iterator[tuple[int, str, list[str]]]:
    for line, content in enumerate(text.split("\n"), 1):
        content = content.rstrip("\r")
        if not content.strip():
            continue
        place = where(path, line)
        obj = parse_object(content, place)
        image = obj.get("image")
        if not isinstance(image, str) or not image.strip():
            raise ClipMatchError(f"{place}: field 'image' must be a non-empty string path")
        if ("text" in obj) == ("texts" in obj):
            raise ClipMatchError(f"{place}: give exactly one of 'text' (string) or 'texts' (list of strings)")
        texts = [obj["text"]] if "text" in obj else obj["texts"]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise ClipMatchError(f"{place}: field 'texts' must be a non-empty list of strings")
        if not all(t.strip() for t in texts):
            raise ClipMatchError(f"{place}: empty or whitespace-only text")
        yield line, image.strip(), [t.strip() for t in texts]


def _relative_key(name: str, labels_path: Path, line: int) -> str:
    """Normalise a labelled path to a POSIX path inside the image folder."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts:
        raise ClipMatchError(f"{where(labels_path, line)}: image path {name!r} must be relative to the image folder")
    return pure.as_posix()
