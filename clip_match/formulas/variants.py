"""Seeded copies of one clean formula render that differ the way typeset formula images do.

An index built with ``--render N`` stands each candidate for N example images; N identical copies
would be one image counted N times. Copies differ in font size (the scale of the 240-dpi render),
margins (the fixed canvas sizes of real images leave room right and below), stroke weight (ink
gamma: anti-aliased edges darkened, as in heavier prints) and slight blur: the ranges of the
training renders (``datasets/formulas/augment.py``), whose other steps (noise, tint, rotation,
JPEG) make the model robust and have no place in a reference image. Each copy is a pure
function of (render, seed, copy number), so a rebuilt index is the same index. The size, margin
and stroke steps (`on_canvas`) are the training augmentation's own first steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image, ImageFilter


class CanvasRanges(Protocol):
    """The ranges `on_canvas` samples (`Variation` here, ``AugmentConfig`` for training images)."""

    scale: tuple[float, float]
    pad: tuple[int, int]
    extra_width: float
    extra_height: float
    ink_gamma: tuple[float, float]


@dataclass(frozen=True)
class Variation:
    """Ranges sampled uniformly per copy; scale is relative to the clean `RENDER_DPI` render
    (real IM2LaTeX images measure 0.35-0.37 of it)."""

    scale: tuple[float, float] = (0.3, 0.55)
    pad: tuple[int, int] = (2, 20)              # white margin per side, pixels after scaling
    extra_width: float = 0.4                    # up to this fraction of the width added on the right
    extra_height: float = 0.8                   # up to this fraction of the height added below
    ink_gamma: tuple[float, float] = (1.0, 3.0)
    blur_radius: tuple[float, float] = (0.0, 0.6)


def variants(render: Image.Image, seed: int, copies: int, variation: Variation = Variation()) -> list[Image.Image]:
    """``copies`` grayscale images of ``render`` (black on white), copy k drawn from ``(seed, k)``."""
    gray = render.convert("L")
    return [_variant(gray, np.random.default_rng([seed, copy]), variation) for copy in range(copies)]


def _variant(render: Image.Image, rng: np.random.Generator, variation: Variation) -> Image.Image:
    canvas = on_canvas(render, rng, variation)
    radius = rng.uniform(*variation.blur_radius)
    return canvas.filter(ImageFilter.GaussianBlur(radius)) if radius > 0.05 else canvas


def on_canvas(render: Image.Image, rng: np.random.Generator, ranges: CanvasRanges) -> Image.Image:
    """A grayscale ``render`` scaled, its ink darkened by a gamma, on a white canvas with margins,
    each drawn from ``ranges`` by ``rng`` (in this order: scale, gamma, four margins, extra width
    and height, so that seeded training data stays the same)."""
    scale = rng.uniform(*ranges.scale)
    size = (max(1, round(render.width * scale)), max(1, round(render.height * scale)))
    image = render.resize(size, Image.LANCZOS)
    gamma = rng.uniform(*ranges.ink_gamma)
    image = image.point(lambda v: round(255 * (v / 255) ** gamma))
    left, top, right, bottom = (int(v) for v in rng.integers(ranges.pad[0], ranges.pad[1] + 1, size=4))
    right += int(rng.uniform(0, ranges.extra_width) * size[0])
    bottom += int(rng.uniform(0, ranges.extra_height) * size[1])
    canvas = Image.new("L", (size[0] + left + right, size[1] + top + bottom), 255)
    canvas.paste(image, (left, top))
    return canvas
