"""Find the images under IMAGE_DIR without ever leaving it.

Only image headers are read (format and size), so a folder of thousands of images scans in
seconds, and files already seen with the same size and mtime are not opened again. Anything
that is not an image is reported as skipped with a reason instead of stopping the scan.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from ..errors import ClipMatchError
from ..runtime.images import FORMATS, check_pixels


@dataclass(frozen=True)
class ScannedImage:
    """One image file: ``path`` is relative to IMAGE_DIR with ``/`` separators."""

    path: str
    size: int
    mtime_ns: int
    width: int
    height: int
    format: str


@dataclass(frozen=True)
class ScanResult:
    images: list[ScannedImage]
    rejects: list[tuple[str, str]]  # (relative path, reason)


def resolve_inside(root: Path, relative: str) -> Path:
    """The real path of ``root/relative``; ClipMatchError unless it lies inside ``root``'s real path."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, relative))
    if os.path.isabs(relative) or os.path.commonpath([real_root, real]) != real_root:
        raise ClipMatchError(f"{relative}: outside the image folder")
    return Path(real)


def natural_key(path: str) -> list:
    """Sort ``img2`` before ``img10`` (digit runs compare as numbers)."""
    return [int(part) if part.isdigit() else part.casefold() for part in re.split(r"(\d+)", path)]


def scan_images(
    image_dir: Path,
    exclude: Path | None = None,
    known: Mapping[str, ScannedImage] | None = None,
) -> ScanResult:
    """List the images under ``image_dir`` (hidden files and ``exclude`` left out)."""
    root = Path(os.path.realpath(image_dir))
    if not root.is_dir():
        raise ClipMatchError(f"{image_dir}: not a folder")
    known = known or {}
    excluded = os.path.realpath(exclude) if exclude is not None else None
    candidates: list[tuple[str, os.stat_result]] = []
    rejects: list[tuple[str, str]] = []
    for relative, reason_or_stat in _walk(root, excluded):
        if isinstance(reason_or_stat, str):
            rejects.append((relative, reason_or_stat))
        else:
            candidates.append((relative, reason_or_stat))

    images: list[ScannedImage] = []
    fresh = [(rel, st) for rel, st in candidates if not _unchanged(known.get(rel), st)]
    for relative, st in candidates:
        previous = known.get(relative)
        if _unchanged(previous, st):
            images.append(previous)
    for relative, st in tqdm(fresh, desc="reading image headers", unit="file", disable=None, leave=False):
        probed = _probe(root / relative)
        if isinstance(probed, str):
            rejects.append((relative, probed))
        else:
            fmt, (width, height) = probed
            images.append(ScannedImage(relative, st.st_size, st.st_mtime_ns, width, height, fmt))
    images.sort(key=lambda image: natural_key(image.path))
    rejects.sort(key=lambda item: natural_key(item[0]))
    return ScanResult(images, rejects)


def _walk(root: Path, excluded: str | None) -> Iterable[tuple[str, os.stat_result | str]]:
    """Yield (relative path, stat) for regular files inside ``root``, or (relative path, reason)."""
    real_root = str(root)
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        kept = []
        for name in sorted(dirnames):
            full = os.path.join(directory, name)
            if name.startswith(".") or (excluded and os.path.realpath(full) == excluded):
                continue
            if os.path.islink(full):
                yield _relative(real_root, full) + "/", "symlinked folder (not followed)"
                continue
            kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            full = os.path.join(directory, name)
            relative = _relative(real_root, full)
            real = os.path.realpath(full)
            if os.path.commonpath([real_root, real]) != real_root:
                yield relative, "symlink pointing outside IMAGE_DIR"
                continue
            try:
                st = os.stat(real)
            except OSError as error:
                yield relative, f"cannot read: {error.strerror or error}"
                continue
            if not os.path.isfile(real):
                yield relative, "not a regular file"
                continue
            yield relative, st


def _relative(root: str, full: str) -> str:
    return os.path.relpath(full, root).replace(os.sep, "/")


def _unchanged(previous: ScannedImage | None, st: os.stat_result) -> bool:
    return previous is not None and previous.size == st.st_size and previous.mtime_ns == st.st_mtime_ns


def _probe(path: Path) -> tuple[str, tuple[int, int]] | str:
    """(format, (width, height)) from the header, or the reason the file is not a usable image."""
    try:
        with Image.open(path, formats=FORMATS) as image:
            check_pixels(image)  # (thread-safe: no warning filters changed)
            return image.format or "unknown", image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "image too large (decompression bomb guard)"
    except UnidentifiedImageError:
        return "not an image"
    except Exception as error:  # a corrupt header can make a decoder fail any way at all
        return f"unreadable image: {error or type(error).__name__}"
