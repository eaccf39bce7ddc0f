"""Display copies of images too large (or in formats) a browser should not get as they are.

A 6000x4000 photo or a 40 MB TIFF would stall the page; the server sends a WebP of at most
``MAX_SIDE`` pixels instead, made once and cached in DATASET_DIR/thumbs under a name that
changes when the file does.
"""
from __future__ import annotations

from pathlib import Path

from ..data.images import open_image
from ..fsutil import atomic_file
from .scan import ScannedImage

BROWSER_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp", "BMP": "image/bmp"}
MAX_SIDE = 1600
MAX_BYTES = 3 * 1024 * 1024


def needs_thumbnail(image: ScannedImage) -> bool:
    return image.format not in BROWSER_FORMATS or max(image.width, image.height) > MAX_SIDE or image.size > MAX_BYTES


def thumbnail(source: Path, image_id: int, image: ScannedImage, cache_dir: Path) -> Path:
    """The cached display copy of ``source`` (made now if missing); ClipMatchError if it does not decode."""
    target = cache_dir / f"{image_id}-{image.mtime_ns}-{image.size}.webp"
    if target.exists():
        return target
    picture = open_image(source, name=image.path)
    picture.thumbnail((MAX_SIDE, MAX_SIDE))
    has_alpha = picture.mode in ("RGBA", "LA", "PA") or (picture.mode == "P" and "transparency" in picture.info)
    picture = picture.convert("RGBA" if has_alpha else "RGB")
    with atomic_file(target, "wb") as handle:
        picture.save(handle, format="WEBP", quality=85, method=0)
    return target
