"""Image preprocessing without torch, equal to Chinese-CLIP's ``image_transform(resolution)``.

cn_clip's transform is ``Resize((r, r), BICUBIC)`` on the PIL image *in its original mode*
(so RGBA/LA are resized with premultiplied alpha and palette/1-bit images with nearest
neighbour, as Pillow does), then ``convert("RGB")``, ``ToTensor()`` and CLIP's
``Normalize(MEAN, STD)``. Here the same Pillow calls produce the resized RGB images (in a thread
pool when one is given: Pillow releases the GIL while resampling) and the whole batch is
normalised at once with torchvision's float32 arithmetic (divide by 255, subtract the mean,
divide by the std), so the result is bit for bit the same.

Orientation and bit depth are settled before this step, at decode time, by
``clip_match.data.images.decode_image`` / ``open_image``: the EXIF orientation tag is applied
(a phone photo stored sideways comes out upright) and 16-bit images are scaled to 8 bits.
cn_clip ignores EXIF, so for a JPEG with a rotation tag clip_match sees the upright image
where cn_clip's own loader sees it sideways; for every decoded image the output here equals
cn_clip's transform of that image (max abs difference <= 1e-5, tested).

A model may ask for one step before the resize (``trim_margin`` in its config and bundle): crop
each image to its content (`trim_to_content`). cn_clip has no such step; no shipped CN-CLIP
architecture uses it.
"""
from __future__ import annotations

from concurrent.futures import Executor
from typing import Sequence

import numpy as np
from PIL import Image

from ..errors import ClipMatchError

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
# Grey levels between a pixel and the border colour that make it content for `trim_to_content`:
# above scan noise and JPEG ringing, below anti-aliased ink.
CONTENT_CONTRAST = 60


def preprocess(
    images: Sequence[Image.Image] | Image.Image,
    resolution: int,
    mean: Sequence[float] = MEAN,
    std: Sequence[float] = STD,
    pool: Executor | None = None,
    trim_margin: int | None = None,
) -> np.ndarray:
    """Resize, convert and normalise PIL images into a float32 batch of shape (n, 3, r, r);
    ``pool`` resizes the images in parallel; ``trim_margin`` first crops each to its content
    (`trim_to_content`)."""
    if isinstance(images, Image.Image):
        images = [images]
    if not isinstance(resolution, (int, np.integer)) or resolution < 1:
        raise ClipMatchError(f"resolution must be a positive integer, got {resolution!r}")
    resolution = int(resolution)
    mean32, std32 = _channel_constants(mean, "mean"), _channel_constants(std, "std")
    if not std32.all():
        raise ClipMatchError(f"std must not contain zero, got {tuple(std)}")
    for index, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise ClipMatchError(f"images[{index}]: expected a PIL image, got {type(image).__name__}")

    def resized(image: Image.Image) -> np.ndarray:
        if trim_margin is not None:
            image = trim_to_content(image, trim_margin)
        return np.asarray(image.resize((resolution, resolution), Image.Resampling.BICUBIC).convert("RGB"))

    pixels = pool.map(resized, images) if pool is not None and len(images) > 1 else map(resized, images)
    batch = np.empty((len(images), 3, resolution, resolution), dtype=np.float32)
    for index, rgb in enumerate(pixels):
        batch[index] = rgb.transpose(2, 0, 1)
    batch /= np.float32(255)
    batch -= mean32
    batch /= std32
    return batch


def check_trim_margin(value: object, where: str) -> int | None:
    """``value`` if it is a valid ``trim_margin`` (None, or whole pixels >= 0), else an error naming ``where``."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise ClipMatchError(f"{where} must be null or a whole number >= 0, got {value!r}")
    return value


def trim_to_content(image: Image.Image, margin: int) -> Image.Image:
    """``image`` cropped to where it differs from its border colour, plus ``margin`` pixels.

    For models of things drawn on plain paper (formulas): the square resize squeezes the whole
    canvas, so without this the same formula looks different on every canvas size. A blank image
    is returned unchanged.
    """
    gray = np.asarray(image.convert("L"), dtype=np.int16)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    content = np.abs(gray - int(np.median(border))) > CONTENT_CONTRAST
    rows, cols = np.flatnonzero(content.any(axis=1)), np.flatnonzero(content.any(axis=0))
    if rows.size == 0:
        return image
    return image.crop((max(0, int(cols[0]) - margin), max(0, int(rows[0]) - margin),
                       min(image.width, int(cols[-1]) + 1 + margin), min(image.height, int(rows[-1]) + 1 + margin)))


def _channel_constants(values: Sequence[float], name: str) -> np.ndarray:
    """(3, 1, 1) float32, to broadcast over a channel-first batch."""
    if len(values) != 3:
        raise ClipMatchError(f"mean and std need 3 values (R, G, B), got {len(values)} for {name}")
    return np.asarray(values, dtype=np.float32).reshape(3, 1, 1)
