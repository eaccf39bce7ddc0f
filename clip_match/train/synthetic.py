"""A small generated dataset (coloured shapes named in Chinese) for tests and benchmarks.

Classification-style on purpose: every label text is paired with many images, the case where
cn_clip's loss fails and the label-aware loss is needed. Written through clip_match's own
TSV/JSONL writer and LMDB builder, so it exercises the real data path.
"""
from __future__ import annotations

import io
import random
from pathlib import Path

from PIL import Image, ImageDraw

from ..data.formats import write_split
from ..data.lmdb_build import build_lmdb

COLOURS = {"红色": (220, 30, 30), "绿色": (30, 170, 40), "蓝色": (30, 60, 220), "黄色": (235, 200, 20)}
SHAPES = ("圆形", "正方形", "三角形")
LABELS = [f"{colour}的{shape}" for colour in COLOURS for shape in SHAPES]


def shape_image(label: str, rng: random.Random, size: int = 64) -> bytes:
    """PNG of the labelled shape at a random place and size on a random light background."""
    colour, shape = label.split("的")
    background = tuple(rng.randint(200, 255) for _ in range(3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    side = rng.randint(size // 3, size * 3 // 4)
    left, top = rng.randint(0, size - side), rng.randint(0, size - side)
    box = (left, top, left + side, top + side)
    fill = COLOURS[colour]
    if shape == "圆形":
        draw.ellipse(box, fill=fill)
    elif shape == "正方形":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(left + side / 2, top), (left, top + side), (left + side, top + side)], fill=fill)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_shapes_dataset(out_dir: str | Path, per_label: dict[str, int] | None = None, seed: int = 0,
                         size: int = 64) -> Path:
    """Write splits (default train: 8, valid: 2 images per label) and their LMDB; returns the LMDB dir.

    Each label is one text (one text_id) linked to all its images in the split.
    """
    out_dir = Path(out_dir)
    per_label = per_label or {"train": 8, "valid": 2}
    rng = random.Random(seed)
    next_image_id = 0
    for split, count in per_label.items():
        images, texts = [], []
        for text_id, label in enumerate(LABELS):
            ids = list(range(next_image_id, next_image_id + count))
            next_image_id += count
            images += [(image_id, shape_image(label, rng, size)) for image_id in ids]
            texts.append((text_id, label, ids))
        write_split(out_dir, split, images, texts)
    build_lmdb(out_dir, splits=tuple(per_label), workers=1)
    return out_dir / "lmdb"
