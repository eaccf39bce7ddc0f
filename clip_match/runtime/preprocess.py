"""Image preprocessing without torch, equal to Chinese-CLIP's ``image_transform(resolution)``.

cn_clip's transform is ``Resize((r, r), BICUBIC)`` on the PIL image *in its original mode*
(so RGBA/LA are resized with premultiplied alpha and palette/1-bit images with nearest
neighbour, as Pillow does), then ``convert("RGB")``, ``ToTensor()`` and CLIP's
``Normalize(MEAN, STD)``. Here the same Pillow calls produce the resized RGB image and the
normalisation is one vectorised table look-up per image (the 256 possible values of each
channel are normalised once, in float32, with the same arithmetic as torchvision).

Orientation and bit depth are settled before this step, at decode time, by
``clip_match.data.images.decode_image`` / ``open_image``: the EXIF orientation tag is applied
(a phone photo stored sideways comes out upright) and 16-bit images are scaled to 8 bits.
cn_clip ignores EXIF, so for a JPEG with a rotation tag clip_match sees the upright image
where cn_clip's own loader sees it sideways; for every decoded image the output here equals
cn_clip's transform of that image (max abs difference <= 1e-5, tested).
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
from PIL import Image

from ..errors import ClipMatchError

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def preprocess(
    images: Sequence[Image.Image] | Image.Image,
    resolution: int,
    mean: Sequence[float] = MEAN,
    std: Sequence[float] = STD,
) -> np.ndarray:
    """Resize, convert and normalise PIL images into a float32 batch of shape (n, 3, r, r)."""
    if isinstance(images, Image.Image):
        images = [images]
    if not isinstance(resolution, (int, np.integer)) or resolution < 1:
        raise ClipMatchError(f"resolution must be a positive integer, got {resolution!r}")
    resolution = int(resolution)
    table = _normalisation_table(tuple(map(float, mean)), tuple(map(float, std)))
    batch = np.empty((len(images), 3, resolution, resolution), dtype=np.float32)
    for index, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise ClipMatchError(f"images[{index}]: expected a PIL image, got {type(image).__name__}")
        rgb = np.asarray(image.resize((resolution, resolution), Image.Resampling.BICUBIC).convert("RGB"))
        batch[index] = table[_CHANNEL, rgb.transpose(2, 0, 1)]
    return batch


_CHANNEL = np.arange(3).reshape(3, 1, 1)


@functools.lru_cache(maxsize=8)
def _normalisation_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(3, 256) float32: ``(value / 255 - mean[c]) / std[c]`` computed as torchvision does."""
    if len(mean) != 3 or len(std) != 3:
        raise ClipMatchError(f"mean and std need 3 values (R, G, B), got {len(mean)} and {len(std)}")
    if 0.0 in std:
        raise ClipMatchError(f"std must not contain zero, got {std}")
    scaled = np.arange(256, dtype=np.float32) / np.float32(255)
    mean32 = np.asarray(mean, dtype=np.float32)[:, None]
    std32 = np.asarray(std, dtype=np.float32)[:, None]
    table = (scaled[None, :] - mean32) / std32
    table.flags.writeable = False
    return table
