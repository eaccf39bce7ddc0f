"""Image preprocessing without torch, equal to Chinese-CLIP's ``image_transform(resolution)``.

cn_clip's transform is ``Resize((r, r), BICUBIC)`` on the PIL image *in its original mode*
(so RGBA/LA are resized with premultiplied alpha and palette/1-bit images with nearest
neighbour, as Pillow does), then ``convert("RGB")``, ``ToTensor()`` and CLIP's
``Normalize(MEAN, STD)``. Here the same Pillow calls produce the resized RGB images (in a thread
pool when one is given: Pillow releases the GIL while resampling) and the whole batch is
normalised at once with torchvision's float32 arithmetic (divide by 255, subtract the mean,
divide by the std), so the result is bit for bit the same.

Orientation and bit depth are settled before this step, at decode time, by
``clip_match.runtime.images.decode_image`` / ``open_image``: the EXIF orientation tag is applied
(a phone photo stored sideways comes out upright) and 16-bit images are scaled to 8 bits.
cn_clip ignores EXIF, so for a JPEG with a rotation tag clip_match sees the upright image
where cn_clip's own loader sees it sideways; for every decoded image the output here equals
cn_clip's transform of that image (max abs difference <= 1e-5, tested).

A model may ask for steps before the resize (its `Framing`, from ``trim_margin``, ``fold_wide`` and
``flatten_light`` in its config and bundle): lay a transparent image on paper (`on_paper`), even out
the light on a photographed page (`flatten_light`), crop it to its content (`trim_to_content`), then
cut a wide result into strips stacked into a near-square (`fold_wide`).
cn_clip has no such steps; no shipped CN-CLIP architecture uses them.
"""
from __future__ import annotations

import math
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from ..errors import ClipMatchError

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
# Grey levels between a pixel and the border colour that make it content for `trim_to_content`:
# above scan noise and JPEG ringing, below anti-aliased ink.
CONTENT_CONTRAST = 60
# `fold_wide`: at most this many strips; neighbouring strips share half the content's height (about
# one symbol, so a symbol cut at one strip's edge is whole in the next) and are a quarter of it apart.
MAX_FOLDS = 8


@dataclass(frozen=True)
class Framing:
    """What a model of things drawn on plain paper (formulas) does to an image before the square
    resize: crop it to its ink plus ``trim_margin`` pixels, then, with ``fold``, stack a wide
    result's strips into a near-square, so the resize keeps its detail instead of squeezing it."""

    trim_margin: int
    fold: bool = False
    flatten: bool = False  # `flatten_light` first: for photos of paper

    def __call__(self, image: Image.Image) -> Image.Image:
        image = on_paper(image)
        image = trim_to_content(flatten_light(image) if self.flatten else image, self.trim_margin)
        return fold_wide(image) if self.fold else image


def preprocess(
    images: Sequence[Image.Image] | Image.Image,
    resolution: int,
    mean: Sequence[float] = MEAN,
    std: Sequence[float] = STD,
    pool: Executor | None = None,
    framing: Framing | None = None,
) -> np.ndarray:
    """Resize, convert and normalise PIL images into a float32 batch of shape (n, 3, r, r);
    ``pool`` resizes the images in parallel; ``framing`` first crops (and folds) each."""
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
        if framing is not None:
            image = framing(image)
        return np.asarray(image.resize((resolution, resolution), Image.Resampling.BICUBIC).convert("RGB"))

    pixels = pool.map(resized, images) if pool is not None and len(images) > 1 else map(resized, images)
    batch = np.empty((len(images), 3, resolution, resolution), dtype=np.float32)
    for index, rgb in enumerate(pixels):
        batch[index] = rgb.transpose(2, 0, 1)
    batch /= np.float32(255)
    batch -= mean32
    batch /= std32
    return batch


def checked_framing(trim_margin: object, fold_wide: object, where: str, flatten: object = False) -> Framing | None:
    """The framing a config or bundle manifest (named by ``where``) asks for, or an error naming the
    field: ``trim_margin`` None or whole pixels >= 0, ``fold_wide`` and ``flatten_light`` bools, true
    only with a trim_margin (they act on the content, not the canvas)."""
    if trim_margin is not None and (not isinstance(trim_margin, int) or isinstance(trim_margin, bool) or trim_margin < 0):
        raise ClipMatchError(f"{where}: trim_margin must be null or a whole number >= 0, got {trim_margin!r}")
    if not isinstance(fold_wide, bool) or (fold_wide and trim_margin is None):
        raise ClipMatchError(f"{where}: fold_wide must be true or false, and true only with a trim_margin; "
                             f"got {fold_wide!r}")
    if not isinstance(flatten, bool) or (flatten and trim_margin is None):
        raise ClipMatchError(f"{where}: flatten_light must be true or false, and true only with a trim_margin; "
                             f"got {flatten!r}")
    return None if trim_margin is None else Framing(trim_margin, fold_wide, flatten)


def on_paper(image: Image.Image) -> Image.Image:
    """``image`` laid on opaque paper (RGB) if it has transparency; otherwise unchanged.

    A formula exported with a transparent background is ink over pixels whose colour nobody sees
    (often black): dropping the alpha, as ``convert`` does, can leave black ink on black. The paper
    is white under dark ink and black under light ink (a dark-mode export), judged by the mean
    grey level of the visible pixels.
    """
    if not image.has_transparency_data:
        return image
    rgba = image.convert("RGBA")
    alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32)
    gray = np.asarray(rgba.convert("L"), dtype=np.float32)
    light_ink = float((gray * alpha).sum()) > 127.5 * float(alpha.sum())
    paper = Image.new("RGBA", rgba.size, (0, 0, 0, 255) if light_ink else (255, 255, 255, 255))
    return Image.alpha_composite(paper, rgba).convert("RGB")


def flatten_light(image: Image.Image) -> Image.Image:
    """``image`` in grey with the paper's uneven light divided out: paper white again, ink as dark as
    it is against the paper around it.

    A phone photo of a printed formula is lit unevenly; to `trim_to_content` and to layout codes a
    shadow across the paper looks like ink. The paper's brightness is estimated by a closing (maximum,
    then minimum filter) wider than any stroke, on a quarter-size copy, blurred; every pixel is divided
    by it. Light ink on dark paper is flattened the other way round. An evenly lit image comes back as
    its grey.
    """
    gray = image.convert("L")
    dark = float(np.median(border_pixels(np.asarray(gray)))) < 128
    if dark:
        gray = ImageOps.invert(gray)
    small = gray.resize((max(1, gray.width // 4), max(1, gray.height // 4)), Image.Resampling.BOX)
    size = min(9, 2 * max(2, min(small.size) // 4) + 1)  # odd, up to 36 px of the full image
    paper = small.filter(ImageFilter.MaxFilter(size)).filter(ImageFilter.MinFilter(size))  # a closing: ink gone
    paper = paper.filter(ImageFilter.GaussianBlur(size / 2))
    paper_levels = np.maximum(np.asarray(paper.resize(gray.size, Image.Resampling.BILINEAR), dtype=np.float32), 1.0)
    flat = Image.fromarray(np.clip(np.asarray(gray, dtype=np.float32) / paper_levels * 255, 0, 255).astype(np.uint8))
    return ImageOps.invert(flat) if dark else flat


def trim_to_content(image: Image.Image, margin: int) -> Image.Image:
    """``image`` cropped to where it differs from its border colour, plus ``margin`` pixels.

    For models of things drawn on plain paper (formulas): the square resize squeezes the whole
    canvas, so without this the same formula looks different on every canvas size. A blank image
    is returned unchanged.
    """
    gray = np.asarray(image.convert("L"), dtype=np.int16)
    border = border_pixels(gray)
    content = np.abs(gray - int(np.median(border))) > CONTENT_CONTRAST
    rows, cols = np.flatnonzero(content.any(axis=1)), np.flatnonzero(content.any(axis=0))
    if rows.size == 0:
        return image
    return image.crop((max(0, int(cols[0]) - margin), max(0, int(rows[0]) - margin),
                       min(image.width, int(cols[-1]) + 1 + margin), min(image.height, int(rows[-1]) + 1 + margin)))


def border_pixels(pixels: np.ndarray) -> np.ndarray:
    """The first and last rows and columns of an image array, one after another: their median is
    the paper's colour."""
    return np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])


def fold_wide(image: Image.Image) -> Image.Image:
    """A wide ``image`` cut into overlapping strips stacked top to bottom on its border colour, with
    as many strips (up to `MAX_FOLDS`) as bring it closest to square; unchanged if one strip does.

    A formula is often 5-15 times wider than high: squeezed into a square it loses most of its
    width's detail while its height is stretched for nothing. Folded, every symbol keeps its pixels.
    """
    width, height = image.size
    if width <= height or height == 0:  # nothing to fold (and no zero-height strips to divide by)
        return image
    overlap, gap = height // 2, height // 4

    def strip_width(strips: int) -> int:
        return math.ceil((width - overlap) / strips) + overlap if strips > 1 else width

    def squareness(strips: int) -> float:
        return abs(math.log(strip_width(strips) / (strips * height + (strips - 1) * gap)))

    strips = min(range(1, MAX_FOLDS + 1), key=squareness)
    if strips == 1:
        return image
    source = image.convert("RGB")
    rgb = np.asarray(source)
    border = border_pixels(rgb)
    paper = tuple(int(c) for c in np.median(border, axis=0))
    folded = Image.new("RGB", (strip_width(strips), strips * height + (strips - 1) * gap), paper)
    step = (width - overlap) / strips
    for index in range(strips):
        left = round(index * step)
        folded.paste(source.crop((left, 0, min(width, left + strip_width(strips)), height)),
                     (0, index * (height + gap)))
    return folded


def _channel_constants(values: Sequence[float], name: str) -> np.ndarray:
    """(3, 1, 1) float32, to broadcast over a channel-first batch."""
    if len(values) != 3:
        raise ClipMatchError(f"mean and std need 3 values (R, G, B), got {len(values)} for {name}")
    return np.asarray(values, dtype=np.float32).reshape(3, 1, 1)
