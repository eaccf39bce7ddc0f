"""Image-text records -> ``{split}_imgs.tsv`` + ``{split}_texts.jsonl`` (Chinese-CLIP's formats).

Ids are stable: image ids number the sorted record keys, text ids the sorted distinct texts,
so the same input always gives the same files. The split is a seeded shuffle of the images
(so an image is never in two splits); each split's JSONL holds one line per distinct text
with all of that split's images for it. Every image is decoded once to reject bad files
before anything is written. All six files are written to a staging folder and renamed into
place only when every one is complete: no file is ever half-written, and only a crash within
the final renames (six system calls) could leave old and new splits side by side.
"""
from __future__ import annotations

import argparse
import io
import math
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Hashable, Iterable, Iterator, Sequence, Union

from PIL import Image
from tqdm import tqdm

from ..errors import ClipMatchError
from ..fsutil import ensure_dir
from ..runtime.images import decode_image
from .formats import imgs_path, texts_path, write_split

SPLIT_NAMES = ("train", "valid", "test")
ImageSource = Union[bytes, str, os.PathLike]
Record = tuple[str, ImageSource, Sequence[str]]


def write_dataset(
    records: Iterable[Record],
    out_dir: str | os.PathLike,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    max_side: int | None = None,
    overwrite: bool = False,
) -> dict:
    """Write train/valid/test files for ``(key, image bytes or path, texts)`` records; return counts."""
    out_dir = Path(out_dir)
    by_key = _collect(records)
    fractions = _check_fractions(split)
    if max_side is not None and max_side < 1:
        raise ClipMatchError(f"max_side must be a positive number of pixels, got {max_side}")
    targets = [p for s in SPLIT_NAMES for p in (imgs_path(out_dir, s), texts_path(out_dir, s))]
    existing = [p for p in targets if p.exists()]
    if existing and not overwrite:
        raise ClipMatchError(f"{existing[0]}: already exists (pass --overwrite to replace it)")

    keys = sorted(by_key)
    image_ids = {key: index for index, key in enumerate(keys)}
    text_ids = {text: index for index, text in enumerate(sorted({t for _, texts in by_key.values() for t in texts}))}
    split_of = deal_splits(keys, fractions, seed)
    assignment = {name: [key for key in keys if split_of[key] == name] for name in SPLIT_NAMES}

    ensure_dir(out_dir)
    stage = Path(tempfile.mkdtemp(prefix=".prepare.", suffix=".tmp", dir=out_dir))
    summary: dict = {"out_dir": str(out_dir), "images": len(keys), "texts": len(text_ids), "splits": {}}
    try:
        with tqdm(total=len(keys), desc="images", unit="img", disable=None, leave=False) as bar:
            for name in SPLIT_NAMES:
                split_keys = assignment[name]
                texts: dict[str, list[int]] = {}
                for key in split_keys:
                    for text in by_key[key][1]:
                        texts.setdefault(text, []).append(image_ids[key])
                images = _images(split_keys, by_key, image_ids, max_side, bar)
                lines = sorted((text_ids[t], t, ids) for t, ids in texts.items())
                write_split(stage, name, images, lines)
                summary["splits"][name] = {"images": len(split_keys), "texts": len(lines),
                                           "pairs": sum(len(ids) for ids in texts.values())}
        for target in targets:
            os.replace(stage / target.name, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return summary


def _collect(records: Iterable[Record]) -> dict[str, tuple[ImageSource, list[str]]]:
    """Index records by key; reject duplicate keys and empty texts."""
    by_key: dict[str, tuple[ImageSource, list[str]]] = {}
    for key, image, texts in records:
        if key in by_key:
            raise ClipMatchError(f"{key}: duplicate image key")
        if isinstance(texts, str) or not texts:
            raise ClipMatchError(f"{key}: expected a non-empty list of texts, got {texts!r}")
        cleaned = [t.strip() if isinstance(t, str) else t for t in texts]
        bad = next((t for t in cleaned if not isinstance(t, str) or not t), None)
        if bad is not None:
            raise ClipMatchError(f"{key}: empty or non-string text {bad!r}")
        by_key[key] = (image, list(dict.fromkeys(cleaned)))
    if not by_key:
        raise ClipMatchError("no images to write")
    return by_key


def split_fractions(text: str) -> tuple[float, float, float]:
    """The ``--split`` option's type: "0.8,0.1,0.1" -> (0.8, 0.1, 0.1) (the sum is checked by `write_dataset`)."""
    try:
        parts = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got {text!r}") from None
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected train,valid,test fractions, got {text!r}")
    return parts  # type: ignore[return-value]


def deal_splits(keys: Sequence[Hashable], split: Sequence[float], seed: int) -> dict:
    """key -> split name: the keys shuffled with ``seed`` and dealt in exact counts (largest remainder:
    10 keys at 0.8/0.1/0.1 give 8/1/1), so nothing keyed alike lands in two splits."""
    order = list(keys)
    random.Random(seed).shuffle(order)
    split_of, start = {}, 0
    for name, count in zip(SPLIT_NAMES, _split_counts(len(order), _check_fractions(split))):
        split_of.update((key, name) for key in order[start:start + count])
        start += count
    return split_of


def _check_fractions(split: Sequence[float]) -> tuple[float, float, float]:
    if len(split) != 3 or not all(math.isfinite(f) and f >= 0 for f in split) or abs(sum(split) - 1.0) > 1e-6:
        raise ClipMatchError(f"split must be three non-negative fractions summing to 1 (train, valid, test), got {tuple(split)}")
    return tuple(float(f) for f in split)  # type: ignore[return-value]


def _split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Exact counts summing to ``n`` (largest remainder), so 10 images at 0.8/0.1/0.1 give 8/1/1."""
    raw = [n * f for f in fractions]
    counts = [int(r) for r in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return counts


def _images(
    keys: list[str], by_key: dict, image_ids: dict[str, int], max_side: int | None, bar: tqdm
) -> Iterator[tuple[int, bytes]]:
    for key in keys:
        yield image_ids[key], _image_bytes(key, by_key[key][0], max_side)
        bar.update(1)


def _image_bytes(key: str, image: ImageSource, max_side: int | None) -> bytes:
    """The original bytes (checked by decoding), or a re-encoded copy if larger than ``max_side``."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
    else:
        try:
            data = Path(image).read_bytes()
        except OSError as error:
            raise ClipMatchError(f"{key}: cannot read image {image}: {error.strerror or error}") from None
    decoded = decode_image(data, key)
    if max_side is None or max(decoded.size) <= max_side:
        return data
    return _shrink(decoded, max_side, lossless=data.startswith(b"\x89PNG"))


def _shrink(image: Image.Image, max_side: int, lossless: bool) -> bytes:
    """Resize so the longer side is ``max_side``; PNG stays PNG, everything else becomes JPEG."""
    image = image.copy()
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if lossless:
        image.save(buffer, "PNG")
    else:
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        image.save(buffer, "JPEG", quality=95)
    return buffer.getvalue()
