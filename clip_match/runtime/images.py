"""Safe image decoding shared by the data pipeline, the runtime, training and annotation.

Decoding is strict: bytes that are not an image (of the raster `FORMATS`: JPEG, PNG, GIF, BMP,
WebP, TIFF, PPM/PGM), truncated or corrupt files and decompression bombs (more pixels than
Pillow's ``Image.MAX_IMAGE_PIXELS``) raise `ClipMatchError` naming the input. Normalisations
happen here, at decode time, so that training and inference see the same pixels and the model
transform afterwards is exactly Chinese-CLIP's:

- EXIF orientation is applied (phone photos arrive upright; cn_clip ignores the tag),
- 16-bit and float images are scaled to 8 bits (a plain ``convert("RGB")`` would clip them
  to white): 16-bit modes by their full range, 32-bit integers ("I", e.g. a 16-bit PGM) by the
  range their values fit (8 or 16 bits), floats by 1 or their maximum;
- the two modes Pillow cannot turn into grey or RGB as they are become the nearest mode it can:
  premultiplied "La" becomes "LA" and CIE "LAB" becomes "RGB".

Other modes (CMYK, P, LA, RGBA, ...) are kept: Chinese-CLIP resizes before converting to RGB,
and preprocessing must do the same to match it.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ClipMatchError

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]

_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_CONVERTED_MODES = {"La": "LA", "LAB": "RGB"}  # Pillow takes neither to grey (nor "La" to RGB)
# The formats decoded: raster images only. Pillow would also open PostScript (by running Ghostscript
# on it) and a dozen rare formats whose decoders fail on corrupt data with arbitrary exceptions.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "PPM")  # (JPEG includes MPO, from phones)


def decode_image(data: bytes | bytearray | memoryview, source: str) -> Image.Image:
    """Decode and fully load image bytes; ``source`` names them in errors."""
    try:
        image = Image.open(io.BytesIO(bytes(data)), formats=FORMATS)  # (reads the header only)
        check_pixels(image)
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # (a copy would double every decode's cost)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # (Pillow's warning too, where the process's filters make it an error)
        raise ClipMatchError(f"{source}: image too large (decompression bomb guard): {error}") from None
    except UnidentifiedImageError:
        raise ClipMatchError(f"{source}: not an image (unrecognised format)") from None
    except Exception as error:  # a corrupt file can make a decoder fail any way at all
        raise ClipMatchError(f"{source}: corrupt or truncated image: {error or type(error).__name__}") from None
    return standard_mode(image)


def check_pixels(image: Image.Image) -> None:
    """Refuse an image of more than ``Image.MAX_IMAGE_PIXELS`` pixels, from its header, before it is decoded.

    Pillow itself refuses twice the limit and only warns between the two; turning its warning into an
    error would need ``warnings.catch_warnings``, which changes the filters of every thread (a decoding
    thread leaving it can switch the error off under another's feet). This check holds in any thread
    whatever the warning filters say; Pillow's warning, where it is shown, comes first."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and image.width * image.height > limit:
        raise Image.DecompressionBombError(f"{image.width}x{image.height} is {image.width * image.height} pixels, "
                                           f"over the limit of {limit} (PIL.Image.MAX_IMAGE_PIXELS)")


def open_image(item: ImageInput, name: str | None = None) -> Image.Image:
    """Turn a path, bytes, PIL image or HxW[xC] uint8 array into a loaded PIL image."""
    if isinstance(item, Image.Image):
        return standard_mode(item)
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim not in (2, 3) or (item.ndim == 3 and item.shape[2] not in (1, 3, 4)):
            raise ClipMatchError(
                f"{name or 'array input'}: expected a uint8 array of shape HxW, HxWx1, HxWx3 or HxWx4, "
                f"got {item.dtype} {item.shape}"
            )
        return Image.fromarray(item[:, :, 0] if item.ndim == 3 and item.shape[2] == 1 else item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return decode_image(item, name or "image bytes")
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise ClipMatchError(f"{path}: cannot read: {error.strerror or error}") from None
        return decode_image(data, name or str(path))
    raise ClipMatchError(f"{name or 'input'}: unsupported image input type {type(item).__name__}")


def standard_mode(image: Image.Image) -> Image.Image:
    """16-bit / 32-bit / float images scaled to 8-bit grayscale ("L"), "La" as "LA", "LAB" as "RGB";
    other modes pass through."""
    if image.mode in _CONVERTED_MODES:
        return image.convert(_CONVERTED_MODES[image.mode])
    if image.mode not in _HIGH_DEPTH_MODES:
        return image
    array = np.asarray(image, dtype=np.float64)
    top = float(array.max(initial=0.0))
    if image.mode.startswith("I;16"):
        peak = 65535.0
    elif image.mode == "I":
        peak = 255.0 if top <= 255 else 65535.0 if top <= 65535 else top
    else:  # "F"
        peak = 1.0 if top <= 1.0 else top
    return Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")


def image_files(directory: Path) -> list[Path]:
    """The image files (by suffix) under ``directory``, recursively and sorted; hidden files and
    folders (a leading dot, e.g. ``.thumbnails``) are skipped."""
    return sorted(path for path in directory.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
                  and not any(part.startswith(".") for part in path.relative_to(directory).parts))
