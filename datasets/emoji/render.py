"""Seeded tile rendering: an emoji sprite on a random background, with photometric and style changes.

Used for training pairs and for puzzles alike. ``restyle`` adds the changes that make a model
robust to emoji art it never saw: hue/saturation/contrast shifts, flat colour (posterize),
outlines, and texture. Geometric changes are scale 0.5-0.95, rotation within ±30°, and a
random position; no flips (prompts may depend on direction). Monochrome styles (black on
transparent) are drawn in a random ink colour that stands out from the tile's background; ``line_art``
(off by default; RESULTS.md measured it) draws colour sprites that way too, as an outline or a silhouette.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageEnhance, ImageFilter, ImageOps


MIN_INK_CONTRAST = 96  # luma between a monochrome glyph's ink and its background's median, of 255


@dataclass(frozen=True)
class RenderConfig:
    size: int = 96                      # output tile side (px)
    scale: tuple[float, float] = (0.5, 0.95)
    max_rotation: float = 30.0
    restyle: float = 0.0                # probability of each style change (0 for puzzles of a given style)
    blur: float = 0.3                   # probability of a light Gaussian blur
    noise: float = 0.3                  # probability of additive pixel noise
    line_art: float = 0.0               # probability that a colour sprite is drawn as monochrome line art


def random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def background(size: int, rng: np.random.Generator) -> Image.Image:
    """A solid, gradient, noise, striped, checked or dotted RGB background."""
    kind = rng.choice(["solid", "gradient", "noise", "stripes", "checks", "dots"])
    a, b = np.array(random_colour(rng), float), np.array(random_colour(rng), float)
    if rng.random() < 0.5:  # keep many backgrounds light, as in real puzzles
        a, b = 255 - (255 - a) * 0.3, 255 - (255 - b) * 0.3
    y, x = np.mgrid[0:size, 0:size] / size
    if kind == "solid":
        weight = np.zeros((size, size))
    elif kind == "gradient":
        angle = rng.uniform(0, np.pi)
        weight = (x * np.cos(angle) + y * np.sin(angle))
        weight = (weight - weight.min()) / max(np.ptp(weight), 1e-6)
    elif kind == "noise":
        coarse = rng.random((int(rng.integers(2, 12)),) * 2)
        weight = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)) / 255
    elif kind == "stripes":
        period, angle = rng.uniform(4, 24), rng.uniform(0, np.pi)
        weight = (np.sin((x * np.cos(angle) + y * np.sin(angle)) * size / period * 2 * np.pi) > 0).astype(float)
    elif kind == "checks":
        period = rng.uniform(6, 30)
        weight = ((np.floor(x * size / period) + np.floor(y * size / period)) % 2).astype(float)
    else:
        period = rng.uniform(8, 24)
        cx, cy = (x * size / period) % 1 - 0.5, (y * size / period) % 1 - 0.5
        weight = (cx ** 2 + cy ** 2 < rng.uniform(0.02, 0.12)).astype(float)
    pixels = a + (b - a) * weight[..., None]
    pixels += rng.normal(0, rng.uniform(0, 10), pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def restyle(sprite: Image.Image, rng: np.random.Generator, probability: float) -> Image.Image:
    """Change the emoji's art style: colour shifts, flat colour, outline, texture (RGBA in and out)."""
    rgb, alpha = sprite.convert("RGB"), sprite.getchannel("A")
    if rng.random() < probability:
        hsv = np.asarray(rgb.convert("HSV")).astype(np.int16)
        hsv[..., 0] = (hsv[..., 0] + int(rng.integers(-12, 13))) % 256  # small hue shift: colour names stay true
        rgb = Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")
        rgb = ImageEnhance.Color(rgb).enhance(rng.uniform(0.6, 1.5))
        rgb = ImageEnhance.Contrast(rgb).enhance(rng.uniform(0.7, 1.4))
    if rng.random() < probability:
        rgb = ImageOps.posterize(rgb, int(rng.integers(2, 5)))
    if rng.random() < probability:  # soft shading or gloss: multiply by a smooth random field
        field = rng.uniform(0.75, 1.15, (4, 4))
        field = np.asarray(Image.fromarray((field * 200).astype(np.uint8)).resize(rgb.size, Image.BICUBIC)) / 200
        rgb = Image.fromarray(np.clip(np.asarray(rgb) * field[..., None], 0, 255).astype(np.uint8))
    out = rgb.convert("RGBA")
    out.putalpha(alpha)
    if rng.random() < probability:  # outline: a dark or light ring around the shape
        width = int(rng.integers(1, 4)) * 2 + 1
        ring = alpha.filter(ImageFilter.MaxFilter(width))
        shell = Image.new("RGBA", sprite.size, random_colour(rng) if rng.random() < 0.3 else (30, 30, 30, 255))
        shell.putalpha(ring)
        out = Image.alpha_composite(shell, out)
    return out


def line_art(sprite: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A colour sprite as a one-colour glyph, the way monochrome emoji fonts draw it: its outline and inner
    edges (half the time), or its silhouette with the inner edges cut out (the other half). Black on
    transparent, like the monochrome styles' sprites, for `ink` to colour."""
    alpha = sprite.getchannel("A").point(lambda a: 255 if a > 127 else 0)
    white = Image.new("RGBA", sprite.size, (255, 255, 255, 255))
    grey = Image.alpha_composite(white, sprite).convert("L")
    edges = grey.filter(ImageFilter.FIND_EDGES).point(lambda v: 255 if v > 40 else 0)
    edges = ImageChops.multiply(edges.filter(ImageFilter.MaxFilter(3)), alpha)
    if rng.random() < 0.5:
        rim = ImageChops.subtract(alpha, alpha.filter(ImageFilter.MinFilter(5)))
        mask = ImageChops.lighter(rim, edges)
    else:
        mask = ImageChops.subtract(alpha, edges)
    out = Image.new("RGBA", sprite.size, (0, 0, 0, 255))
    out.putalpha(mask)
    return out


def luma(colour: np.ndarray) -> float:
    """Pillow's "L" conversion (ITU-R 601-2) of one RGB colour."""
    return float(colour @ np.array([0.299, 0.587, 0.114]))


def ink(sprite: Image.Image, ground: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A monochrome sprite recoloured in a random ink that stands out from ``ground`` (dark half the
    time, as line art mostly is; else its complement, else black or white)."""
    median = float(np.median(np.asarray(ground.convert("L"))))
    colour = np.array(random_colour(rng), float)
    if rng.random() < 0.5:
        colour *= 0.3
    if abs(luma(colour) - median) < MIN_INK_CONTRAST:
        colour = 255 - colour
    if abs(luma(colour) - median) < MIN_INK_CONTRAST:
        colour = np.full(3, 0.0 if median > 127 else 255.0)
    out = Image.new("RGBA", sprite.size, tuple(int(v) for v in colour))
    out.putalpha(sprite.getchannel("A"))
    return out


def render_tile(sprite: Image.Image, rng: np.random.Generator, config: RenderConfig = RenderConfig(),
                monochrome: bool = False) -> Image.Image:
    """One RGB tile: ``sprite`` (inked if ``monochrome``), restyled, scaled, rotated and placed on a
    random background."""
    size = config.size
    tile = background(size, rng)
    if not monochrome and config.line_art and rng.random() < config.line_art:
        sprite, monochrome = line_art(sprite, rng), True
    if monochrome:
        sprite = ink(sprite, tile, rng)
    sprite = restyle(sprite, rng, config.restyle) if config.restyle else sprite
    side = max(8, int(size * rng.uniform(*config.scale)))
    emoji = sprite.resize((side, side), Image.LANCZOS)
    emoji = emoji.rotate(rng.uniform(-config.max_rotation, config.max_rotation), Image.BICUBIC, expand=True)
    if emoji.width > size:
        emoji = emoji.resize((size, size), Image.LANCZOS)
    left = int(rng.integers(0, size - emoji.width + 1))
    top = int(rng.integers(0, size - emoji.height + 1))
    tile.paste(emoji, (left, top), emoji)
    if rng.random() < config.blur:
        tile = tile.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    if rng.random() < config.noise:
        noisy = np.asarray(tile, float) + rng.normal(0, rng.uniform(2, 12), (size, size, 3))
        tile = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    return tile
