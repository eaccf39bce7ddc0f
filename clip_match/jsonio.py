"""Strict JSON reading shared by every format clip_match reads (JSONL lines, manifests).

Errors are `ClipMatchError`s that start with the place at fault (``file:line`` or a path).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import ClipMatchError


def parse_object(content: str | bytes, place: str) -> dict[str, Any]:
    """One JSON object (a JSONL line, say); anything else, NaN and Infinity included (Python's json
    accepts them, JSON does not, and they would be written back), is an error naming ``place``."""
    try:
        obj = json.loads(content.decode("utf-8") if isinstance(content, bytes) else content,
                         parse_constant=_refuse_constant)
    except _NotJson as error:
        raise ClipMatchError(f"{place}: malformed JSON: {error} is not JSON") from None
    except UnicodeDecodeError as error:
        raise ClipMatchError(f"{place}: invalid UTF-8 at byte {error.start}") from None
    except json.JSONDecodeError as error:
        raise ClipMatchError(f"{place}: malformed JSON: {error.msg} (column {error.colno})") from None
    except ValueError as error:  # e.g. an integer longer than Python's 4,300-digit limit
        raise ClipMatchError(f"{place}: malformed JSON: {error}") from None
    except RecursionError:
        raise ClipMatchError(f"{place}: malformed JSON: nested too deeply") from None
    if not isinstance(obj, dict):
        raise ClipMatchError(f"{place}: expected a JSON object, got {type(obj).__name__}")
    return obj


class _NotJson(Exception):
    """NaN, Infinity or -Infinity in a JSON text."""


def _refuse_constant(name: str) -> Any:
    raise _NotJson(name)


def read_manifest(directory: Path, name: str, kind: str, fmt: str, version: int, remedy: str,
                  required: tuple[str, ...]) -> dict[str, Any]:
    """Read and check ``directory/name``, the manifest of a ``kind`` ("model bundle", "clip_match index").

    ``remedy`` says how to get a readable one (e.g. "re-export the model") when the version differs.
    """
    path = directory / name
    if not directory.is_dir():
        raise ClipMatchError(f"{directory}: no such {kind} directory")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ClipMatchError(f"{directory}: not a {kind} (no {name})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ClipMatchError(f"{path}: unreadable {kind} manifest: {error}") from None
    try:
        manifest = parse_object(text, str(path))
    except ClipMatchError as error:
        raise ClipMatchError(f"{path}: unreadable {kind} manifest: {error}") from None
    if manifest.get("format") != fmt:
        raise ClipMatchError(f"{path}: not a {kind} manifest")
    if manifest.get("format_version") != version:
        raise ClipMatchError(f"{path}: {kind} format version {manifest.get('format_version')!r} is not supported "
                             f"(this clip_match reads version {version}); {remedy}")
    missing = [field for field in required if field not in manifest]
    if missing:
        raise ClipMatchError(f"{path}: missing field {missing[0]!r}")
    files = manifest.get("files", {})
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise ClipMatchError(f"{path}: field 'files' must map file names to sha256 digests")
    return manifest
