"""Training-time image augmentation, seeded per sample so that a resumed run sees the same images.

``safe`` (the default with ``--use-augment``): random crop of 80-100% of the area and mild
brightness/contrast; no flips, no colour inversion, no hue change, so prompts about colour or
direction stay true. ``cnclip``: what cn_clip's ``--use-augment`` does (crop 90-100%, horizontal
flip, ImageNet AutoAugment with invert/solarize/posterize), for comparison.
Both return a ``resolution`` x ``resolution`` RGB image; normalisation is the runtime's.
"""
from __future__ import annotations

import functools
import math
import random
from typing import Callable

from PIL import Image, ImageEnhance

Augment = Callable[[Image.Image, random.Random], Image.Image]


def make_augment(kind: str, resolution: int) -> Augment | None:
    """The augmentation named ``kind`` ("none" -> None)."""
    if kind == "none":
        return None
    if kind == "safe":
        return functools.partial(_safe, resolution=resolution)
    if kind == "cnclip":
        return _CnClipAugment(resolution)
    raise ValueError(f"unknown augmentation {kind!r}")


def random_crop_box(width: int, height: int, rng: random.Random, scale: tuple[float, float],
                    ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """A box covering ``scale`` of the area with aspect ratio in ``ratio`` (RandomResizedCrop's rule)."""
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            return left, top, left + w, top + h
    return 0, 0, width, height


def _safe(image: Image.Image, rng: random.Random, resolution: int) -> Image.Image:
    box = random_crop_box(image.width, image.height, rng, scale=(0.8, 1.0))
    image = image.resize((resolution, resolution), Image.Resampling.BICUBIC, box=box).convert("RGB")
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.85, 1.15))
    return ImageEnhance.Contrast(image).enhance(rng.uniform(0.85, 1.15))


def _to_rgb(image: Image.Image) -> Image.Image:
    return image.convert("RGB")


class _CnClipAugment:
    """cn_clip's timm pipeline rebuilt with torchvision, driven by the per-sample seed."""

    def __init__(self, resolution: int):
        from torchvision import transforms

        self.transform = transforms.Compose([
            transforms.RandomResizedCrop(resolution, scale=(0.9, 1.0),
                                         interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.RandomHorizontalFlip(),
            transforms.Lambda(_to_rgb),
            transforms.AutoAugment(transforms.AutoAugmentPolicy.IMAGENET),
        ])

    def __call__(self, image: Image.Image, rng: random.Random) -> Image.Image:
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(rng.getrandbits(63))
            return self.transform(image)
