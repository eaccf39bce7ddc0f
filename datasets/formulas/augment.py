"""Make clean renders look like screenshots and scans of formulas, reproducibly.

Each augmented image is a pure function of (clean render, config, seed, formula id, copy
number), so a dataset rebuilds byte for byte and the order of work does not matter.
"""
from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageFilter

from clip_match.formulas.variants import on_canvas


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges sampled uniformly per image. Scale is relative to the 240-dpi clean render.

    Measured on 300 real IM2LaTeX images: scale 0.35-0.37 of such a render, 4 px margins left
    and top, 5-60 px right and 4-32 px bottom (fixed canvas sizes), strokes as heavy as ink gamma
    2-3; the ranges cover that and more.
    """

    bold_probability: float = 0.15                # thicken strokes by a pixel at 240 dpi (heavy fonts, scans)
    ink_gamma: tuple[float, float] = (1.0, 3.5)   # darkens anti-aliased edges; real IM2LaTeX looks like 2-3
    scale: tuple[float, float] = (0.28, 0.55)
    pad: tuple[int, int] = (2, 20)               # white margin per side, pixels after scaling
    extra_width: float = 0.4                      # up to this fraction of the width added on the right
    extra_height: float = 0.8                     # up to this fraction of the height added below
    rotate_degrees: float = 1.5                   # either way
    blur_radius: tuple[float, float] = (0.0, 0.9)
    noise_std: tuple[float, float] = (0.0, 10.0)  # Gaussian pixel noise, 0-255 scale
    tint: float = 0.12                            # how far background and ink may drift from white/black
    jpeg_probability: float = 0.6
    jpeg_quality: tuple[int, int] = (40, 95)

    def to_json(self) -> dict:
        return asdict(self)


def augment(render: Image.Image, config: AugmentConfig, seed: int, fid: int, copy: int) -> bytes:
    """One augmented RGB image of a clean grayscale render, encoded as JPEG or PNG bytes."""
    rng = np.random.default_rng([seed, fid, copy])
    if rng.uniform() < config.bold_probability:
        render = render.filter(ImageFilter.MinFilter(3))
    canvas = on_canvas(render, rng, config)  # (the steps index-time renders share)

    background = 255 * (1 - rng.uniform(0, config.tint, size=3))
    ink = 255 * rng.uniform(0, config.tint, size=3)
    coverage = np.asarray(canvas, dtype=np.float32)[..., None] / 255.0  # 1 = paper, 0 = ink
    rgb = Image.fromarray(np.clip(ink + (background - ink) * coverage, 0, 255).astype(np.uint8), "RGB")

    angle = rng.uniform(-config.rotate_degrees, config.rotate_degrees)
    rgb = rgb.rotate(angle, resample=Image.BICUBIC, expand=True, fillcolor=tuple(int(c) for c in background))
    radius = rng.uniform(*config.blur_radius)
    if radius > 0.05:
        rgb = rgb.filter(ImageFilter.GaussianBlur(radius))
    noise = rng.uniform(*config.noise_std)
    if noise > 0.5:
        pixels = np.asarray(rgb, dtype=np.float32) + rng.normal(0, noise, size=(rgb.height, rgb.width, 1))
        rgb = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")

    out = io.BytesIO()
    if rng.uniform() < config.jpeg_probability:
        rgb.save(out, "JPEG", quality=int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1)))
    else:
        rgb.save(out, "PNG", optimize=False)
    return out.getvalue()
