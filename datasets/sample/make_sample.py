"""Regenerate the tiny bundled sample: 12 small shape images in one folder per label.

    .venv/bin/python datasets/sample/make_sample.py

Deterministic (fixed seed), a few KB in all; `scripts/demo.sh` runs the data pipeline on it.
"""
from __future__ import annotations

import random
import shutil
from pathlib import Path

from PIL import Image, ImageDraw

LABELS = {"红色圆形": "ellipse", "蓝色方块": "rectangle", "绿色三角形": "triangle"}
COLOURS = {"ellipse": (220, 30, 30), "rectangle": (30, 60, 220), "triangle": (30, 170, 60)}
PER_LABEL = 4
SIZE = 48


def draw(shape: str, rng: random.Random) -> Image.Image:
    background = tuple(rng.randint(200, 255) for _ in range(3))
    image = Image.new("RGB", (SIZE, SIZE), background)
    pen = ImageDraw.Draw(image)
    x0, y0 = rng.randint(2, 14), rng.randint(2, 14)
    x1, y1 = rng.randint(34, 46), rng.randint(34, 46)
    if shape == "ellipse":
        pen.ellipse((x0, y0, x1, y1), fill=COLOURS[shape])
    elif shape == "rectangle":
        pen.rectangle((x0, y0, x1, y1), fill=COLOURS[shape])
    else:
        pen.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=COLOURS[shape])
    return image


def main() -> None:
    root = Path(__file__).resolve().parent / "images"
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(0)
    for label, shape in LABELS.items():
        (root / label).mkdir(parents=True)
        for index in range(PER_LABEL):
            image = draw(shape, rng)
            if index % 2:
                image.save(root / label / f"{index}.jpg", quality=85)
            else:
                image.quantize(16).save(root / label / f"{index}.png", optimize=True)  # palette mode


if __name__ == "__main__":
    main()
