"""Make clean renders look like screenshots, scans and phone photos of formulas, reproducibly.

Each augmented image is a pure function of (clean render, config, seed, formula id, copy
number), so a dataset rebuilds byte for byte and the order of work does not matter.
`photograph` turns any formula image (a render, or a real IM2LaTeX image for the photo query
split) into what a phone camera makes of it on paper.
"""
from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageFilter

from clip_match.formulas.variants import on_canvas
from clip_match.runtime.preprocess import border_pixels


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
    photo_probability: float = 0.0                # share of images `photograph`ed instead of rotated/blurred/noised

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PhotoConfig:
    """Ranges sampled uniformly per photo (sizes relative to the image's height or width)."""

    margin: tuple[float, float] = (0.1, 1.0)      # more paper around the formula, times its height
    perspective: float = 0.08                     # each corner moved up to this fraction of the size
    rotate_degrees: float = 5.0                   # either way
    shading: tuple[float, float] = (0.1, 0.5)     # light falling off across the paper (0: even)
    light_tint: float = 0.12                      # warm/cool light: channels scaled by up to this
    grain: tuple[float, float] = (1.0, 8.0)       # low-frequency paper texture, 0-255 scale
    downscale: tuple[float, float] = (0.6, 1.0)   # camera resolution below the print's
    blur_radius: tuple[float, float] = (0.2, 1.1)
    noise_std: tuple[float, float] = (1.0, 6.0)
    jpeg_quality: tuple[int, int] = (35, 90)

    def to_json(self) -> dict:
        return asdict(self)


def photograph(image: Image.Image, rng: np.random.Generator, config: PhotoConfig = PhotoConfig()) -> Image.Image:
    """``image`` (ink on paper) as a phone photo of it: more paper, tilted and in perspective, lit
    unevenly, textured, at camera resolution, blurred and noisy (RGB; encode it as JPEG)."""
    rgb = image.convert("RGB")
    paper = tuple(int(c) for c in np.median(border_pixels(np.asarray(rgb)), axis=0))
    pad = [int(rng.uniform(*config.margin) * rgb.height) + 2 for _ in range(4)]
    canvas = Image.new("RGB", (rgb.width + pad[0] + pad[2], rgb.height + pad[1] + pad[3]), paper)
    canvas.paste(rgb, (pad[0], pad[1]))

    width, height = canvas.size
    shift = rng.uniform(-config.perspective, config.perspective, size=(4, 2)) * (width, height)
    corners = np.array([(0, 0), (width, 0), (width, height), (0, height)], dtype=np.float64)
    canvas = canvas.transform(canvas.size, Image.PERSPECTIVE, _perspective_coefficients(corners, corners + shift),
                              resample=Image.BICUBIC, fillcolor=paper)
    canvas = canvas.rotate(rng.uniform(-config.rotate_degrees, config.rotate_degrees), resample=Image.BICUBIC,
                           expand=True, fillcolor=paper)

    width, height = canvas.size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (xs / width - 0.5) * np.cos(angle) + (ys / height - 0.5) * np.sin(angle)
    light = 1 - rng.uniform(*config.shading) * (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    coarse = rng.normal(0, rng.uniform(*config.grain), size=(max(2, height // 12), max(2, width // 12)))
    grain = np.asarray(Image.fromarray(coarse.astype(np.float32), "F").resize((width, height), Image.BICUBIC))
    tint = 1 - rng.uniform(0, config.light_tint, size=3)
    pixels = np.asarray(canvas, dtype=np.float32) * light[..., None] * tint + grain[..., None]
    photo = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")

    factor = rng.uniform(*config.downscale)
    photo = photo.resize((max(8, round(width * factor)), max(8, round(height * factor))), Image.BILINEAR)
    photo = photo.filter(ImageFilter.GaussianBlur(rng.uniform(*config.blur_radius)))
    noisy = np.asarray(photo, dtype=np.float32) + rng.normal(0, rng.uniform(*config.noise_std), size=(photo.height,
                                                                                                      photo.width, 1))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def photo_jpeg(image: Image.Image, rng: np.random.Generator, config: PhotoConfig = PhotoConfig()) -> bytes:
    """`photograph` of ``image``, encoded as a camera would (JPEG)."""
    out = io.BytesIO()
    photograph(image, rng, config).save(out, "JPEG", quality=int(rng.integers(config.jpeg_quality[0],
                                                                              config.jpeg_quality[1] + 1)))
    return out.getvalue()


def _perspective_coefficients(output: np.ndarray, source: np.ndarray) -> tuple[float, ...]:
    """PIL's PERSPECTIVE data: the 8 coefficients mapping each ``output`` corner to its ``source`` point."""
    rows = []
    for (x, y), (u, v) in zip(output, source):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    return tuple(np.linalg.solve(np.asarray(rows), source.reshape(8)).tolist())


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
    if config.photo_probability and rng.uniform() < config.photo_probability:
        return photo_jpeg(rgb, rng)

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
