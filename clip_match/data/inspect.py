"""What is in a dataset: counts, links between images and texts, duplicates, dangling ids.

Works on a TSV/JSONL directory (``{split}_imgs.tsv`` + ``{split}_texts.jsonl``), an LMDB root
(``{split}/imgs`` + ``{split}/pairs``) or one LMDB split directory. Structural problems that
make a file unreadable are errors; problems between records (duplicates, dangling ids) are
what this reports.
"""
from __future__ import annotations

import collections
import hashlib
from pathlib import Path
from typing import Iterable

from ..errors import ClipMatchError, where
from ..runtime.images import decode_image
from .formats import decode_b64, imgs_path, iter_lines, parse_text_line, read_tsv, texts_path
from .lmdb_reader import LMDBReader

SAMPLES = 3


def inspect_dataset(path: str | Path, samples: int = SAMPLES) -> dict:
    """Statistics per split of the dataset at ``path`` (see module docstring for layouts)."""
    path = Path(path)
    if not path.is_dir():
        raise ClipMatchError(f"{path}: not a directory")
    if _is_lmdb_split(path):
        return {"path": str(path), "kind": "lmdb", "splits": {path.name: _lmdb_split(path, samples)}}
    lmdb_splits = sorted((p for p in path.iterdir() if _is_lmdb_split(p)), key=lambda p: _split_order(p.name))
    if lmdb_splits:
        return {"path": str(path), "kind": "lmdb", "splits": {p.name: _lmdb_split(p, samples) for p in lmdb_splits}}
    names = sorted({p.name[: -len(suffix)] for suffix in ("_imgs.tsv", "_texts.jsonl") for p in path.glob(f"*{suffix}")},
                   key=_split_order)
    if names:
        return {"path": str(path), "kind": "tsv", "splits": {name: _tsv_split(path, name, samples) for name in names}}
    raise ClipMatchError(f"{path}: neither TSV/JSONL splits ({{split}}_imgs.tsv) nor an LMDB ({{split}}/imgs, pairs)")


def _split_order(name: str) -> tuple[int, str]:
    """train, valid, test first, then any other split alphabetically."""
    usual = ("train", "valid", "test")
    return (usual.index(name) if name in usual else len(usual), name)


def _is_lmdb_split(path: Path) -> bool:
    return (path / "imgs").is_dir() and (path / "pairs").is_dir()


def _tsv_split(data_dir: Path, split: str, samples: int) -> dict:
    tsv, jsonl = imgs_path(data_dir, split), texts_path(data_dir, split)
    for needed in (tsv, jsonl):
        if not needed.is_file():
            raise ClipMatchError(f"{needed}: missing (its other half exists)")
    text_lines = [parse_text_line(c, jsonl, n) for n, c, _ in iter_lines(jsonl)]
    stats = _Stats([(image_id, text_id, text) for text_id, text, image_ids in text_lines for image_id in image_ids], samples)
    stats.duplicate_text_ids = _repeated(text_id for text_id, _, _ in text_lines)
    stats.add_images((r.image_id, r.b64) for r in read_tsv(tsv, unique=False))
    return stats.summary(str(tsv))


def _lmdb_split(split_dir: Path, samples: int) -> dict:
    with LMDBReader(split_dir) as reader:
        stats = _Stats(list(reader), samples)
        stats.add_images(reader.images())
        return {**stats.summary(str(split_dir / "imgs")), "num_images_key": reader.num_images}


def _repeated(values: Iterable) -> int:
    """How many values are extra copies of an earlier one."""
    return sum(c - 1 for c in collections.Counter(values).values())


class _Stats:
    """One split's (image_id, text_id, text) pairs and a pass over its images.

    Only content hashes are kept per image, plus the data of the few sample images, so memory
    stays small for large datasets.
    """

    def __init__(self, pairs: list[tuple[int, int, str]], samples: int):
        self.pairs = [tuple(p) for p in pairs]
        self.samples = self.pairs[:samples]
        self.image_ids: set[int] = set()
        self.sample_data: dict[int, bytes] = {}
        self.duplicate_image_ids = 0
        self.duplicate_text_ids = 0
        self.content_hashes: collections.Counter = collections.Counter()

    def add_images(self, images: Iterable[tuple[int, bytes]]) -> None:
        wanted = {image_id for image_id, _, _ in self.samples}
        for image_id, b64 in images:
            if image_id in self.image_ids:
                self.duplicate_image_ids += 1
                continue
            self.image_ids.add(image_id)
            self.content_hashes[hashlib.blake2b(b64, digest_size=16).digest()] += 1
            if image_id in wanted:
                self.sample_data[image_id] = b64

    def summary(self, source: str) -> dict:
        texts_per_image = collections.Counter({image_id: 0 for image_id in self.image_ids})
        images_per_text: collections.Counter = collections.Counter()
        texts: set[tuple[int, str]] = set()
        dangling: list[int] = []
        for image_id, text_id, text in self.pairs:
            images_per_text[text_id] += 1
            texts.add((text_id, text))
            if image_id in self.image_ids:
                texts_per_image[image_id] += 1
            else:
                dangling.append(image_id)
        return {
            "images": len(self.image_ids),
            "texts": len(images_per_text),
            "pairs": len(self.pairs),
            "texts_per_image": _spread(texts_per_image.values()),
            "images_per_text": _spread(images_per_text.values()),
            "images_without_text": sum(1 for c in texts_per_image.values() if c == 0),
            "duplicate_image_ids": self.duplicate_image_ids,
            "duplicate_text_ids": self.duplicate_text_ids,
            "duplicate_image_content": sum(c - 1 for c in self.content_hashes.values()),
            "duplicate_texts": _repeated(text for _, text in texts),  # one string under several text ids
            "dangling_image_ids": {"count": len(dangling), "examples": sorted(set(dangling))[:5]},
            "samples": [self._sample(pair, source) for pair in self.samples],
        }

    def _sample(self, pair: tuple[int, int, str], source: str) -> dict:
        image_id, text_id, text = pair
        sample: dict = {"image_id": image_id, "text_id": text_id, "text": text}
        if image_id not in self.sample_data:
            sample["image"] = "missing"
            return sample
        place = where(source, key=image_id)
        try:
            image = decode_image(decode_b64(self.sample_data[image_id], place), place)
            sample["image"] = f"{image.width}x{image.height} {image.mode}"
        except ClipMatchError as error:
            sample["image"] = f"bad: {error}"
        return sample


def _spread(values: Iterable[int]) -> dict:
    values = list(values)
    if not values:
        return {"min": 0, "mean": 0.0, "max": 0}
    return {"min": min(values), "mean": round(sum(values) / len(values), 3), "max": max(values)}
