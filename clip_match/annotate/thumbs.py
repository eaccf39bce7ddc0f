"""Display copies of images too large (or in formats) a browser should not get as they are.

A 6000x4000 photo or a 40 MB TIFF would stall the page; the server sends a copy of at most
``MAX_SIDE`` pixels instead, made once and cached in DATASET_DIR/thumbs under a name that
changes when the file does.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

from ..errors import ClipMatchError
from ..fsutil import atomic_file
from ..runtime.images import open_image
from .scan import ScannedImage, resolve_inside

BROWSER_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp", "BMP": "image/bmp"}
MAX_SIDE = 1600
MAX_BYTES = 3 * 1024 * 1024


def needs_thumbnail(image: ScannedImage) -> bool:
    return image.format not in BROWSER_FORMATS or max(image.width, image.height) > MAX_SIDE or image.size > MAX_BYTES


THUMBNAIL_TYPES = {".jpg": "image/jpeg", ".png": "image/png"}


def thumbnail(source: Path, image_id: int, image: ScannedImage, cache_dir: Path) -> Path:
    """The cached display copy of ``source`` (made now if missing); ClipMatchError if it does not decode.

    JPEG (fast to encode) unless the image has transparency, which only PNG keeps.
    """
    stem = f"{image_id}-{image.mtime_ns}-{image.size}"
    for suffix in THUMBNAIL_TYPES:
        if (cache_dir / (stem + suffix)).exists():
            return cache_dir / (stem + suffix)
    picture = open_image(source, name=image.path)
    picture.thumbnail((MAX_SIDE, MAX_SIDE))
    has_alpha = picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info
    target = cache_dir / (stem + (".png" if has_alpha else ".jpg"))
    with atomic_file(target, "wb") as handle:
        if has_alpha:
            picture.convert("RGBA").save(handle, format="PNG", compress_level=1)
        else:
            picture.convert("RGB").save(handle, format="JPEG", quality=85)
    return target


def warm_in_background(items: Sequence[tuple[int, ScannedImage]], image_dir: Path, cache_dir: Path) -> threading.Thread:
    """Make the display copies of ``items`` one by one in a daemon thread, ahead of the page asking.

    Leftover temporary files of a run that was killed mid-write are removed first.
    """
    for leftover in cache_dir.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)

    def work() -> None:
        for image_id, image in items:
            try:
                thumbnail(resolve_inside(image_dir, image.path), image_id, image, cache_dir)
            except ClipMatchError:
                continue  # the page shows the error when it asks for this image

    thread = threading.Thread(target=work, name="thumbnails", daemon=True)
    thread.start()
    return thread
