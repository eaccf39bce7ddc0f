"""Example images for candidates: a candidate's vector can lean on images known to show it.

A bank whose candidates come with example images (renders of each formula, labelled photos of each
label), stored as a Chinese-CLIP split (``{split}_imgs.tsv`` + ``{split}_texts.jsonl``), can rank a
query image against those examples as well as against the candidate's text. A candidate with
examples gets ``normalise(w * text vector + (1 - w) * prototype)``, where the prototype is the
normalised mean image vector of its examples and ``w`` the text weight (1: text only, 0: examples
only). Matching an image to images of the same thing is easier for a small model than matching it
to a text: see datasets/formulas/RESULTS.md for the formula bank, where the weight was chosen on
validation renders. The same pass can also average the examples' layout codes
(`clip_match.formulas.layout_codes`), for indexes that blend them in.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..data.formats import decode_b64, imgs_path, read_jsonl, read_tsv, texts_path
from ..errors import ClipMatchError, where
from ..formulas.layout_codes import LAYOUT_DIM, layout_codes
from ..runtime.images import decode_image


EXAMPLE_TEXT_WEIGHT = 0.5  # a candidate's text share in its vector when it has examples, unless told otherwise


class ImageEncoder(Protocol):
    embed_dim: int

    def encode_images(self, items: Sequence[Image.Image], batch_size: int = ...) -> np.ndarray: ...


def check_text_weight(text_weight: float) -> float:
    if isinstance(text_weight, bool) or not isinstance(text_weight, (int, float)) or not 0.0 <= text_weight <= 1.0:
        raise ClipMatchError(f"text weight must be between 0 (examples only) and 1 (text only), got {text_weight!r}")
    return float(text_weight)


@dataclass(frozen=True)
class Examples:
    """Per candidate key: the prototype (normalised mean image vector of its examples) and, when
    read with ``layouts=True``, the normalised mean layout code of the same images."""

    prototypes: dict[str, np.ndarray]
    layouts: dict[str, np.ndarray] | None = None


class ExampleAverager:
    """Sums the vectors (and layout codes) of example images per key, encoding ``batch_size``
    images at a time, so that any number of examples fits in memory; `examples` gives the means."""

    def __init__(self, encoder: ImageEncoder, layouts: bool = False, batch_size: int = 64):
        self._encoder = encoder
        self._layouts = layouts
        self._batch_size = batch_size
        self._batch: list[tuple[Sequence[str], Image.Image]] = []
        self._sums: dict[str, np.ndarray] = {}

    def add(self, keys: Sequence[str], image: Image.Image) -> None:
        """Count ``image`` as an example of each of ``keys``."""
        self._batch.append((keys, image))
        if len(self._batch) == self._batch_size:
            self._flush()

    def examples(self) -> Examples:
        self._flush()
        sums = self._sums
        if not self._layouts:
            return Examples({name: _unit(total) for name, total in sums.items()})
        return Examples({name: _unit(total[:-LAYOUT_DIM]) for name, total in sums.items()},
                        {name: _unit(total[-LAYOUT_DIM:]) for name, total in sums.items()})

    def _flush(self) -> None:
        if not self._batch:
            return
        images = [image for _, image in self._batch]
        vectors = self._encoder.encode_images(images, batch_size=len(images))
        if self._layouts:  # (one array, so that the sums below add both parts at once)
            vectors = np.concatenate([vectors, layout_codes(images)], axis=1)
        for (keys, _), vector in zip(self._batch, vectors):
            for name in keys:
                self._sums[name] = self._sums.get(name, 0.0) + vector
        self._batch.clear()


def read_examples(encoder: ImageEncoder, data_dir: str | os.PathLike, split: str,
                  key: Callable[[str], str] = lambda text: text, batch_size: int = 64,
                  progress: bool = True, layouts: bool = False) -> Examples:
    """The examples of each text of a split, under ``key(text)``.

    Images are streamed in batches, so a split of any size fits in memory; an image paired with
    several texts counts for each of them.
    """
    tsv, jsonl = imgs_path(data_dir, split), texts_path(data_dir, split)
    for path in (tsv, jsonl):
        if not path.is_file():
            raise ClipMatchError(f"{path}: no such file (example images are a TSV/JSONL split)")
    keys_of_image: dict[int, list[str]] = {}
    for text in read_jsonl(jsonl):
        for image_id in text.image_ids:
            keys_of_image.setdefault(image_id, []).append(key(text.text))
    averager = ExampleAverager(encoder, layouts, batch_size)
    for line in tqdm(read_tsv(tsv), desc=f"example images ({split})", unit="image",
                     disable=None if progress else True):  # (None: off when stderr is not a terminal)
        if line.image_id in keys_of_image:
            source = where(tsv, line.line)
            averager.add(keys_of_image[line.image_id], decode_image(decode_b64(line.b64, source), source))
    examples = averager.examples()
    if not examples.prototypes:
        raise ClipMatchError(f"{tsv}: none of its images is paired with a text in {jsonl}")
    return examples


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def fuse(text_vectors: np.ndarray, prototypes: Sequence[np.ndarray | None], text_weight: float) -> np.ndarray:
    """Row i: ``normalise(w * text_vectors[i] + (1 - w) * prototypes[i])``, or the text vector alone
    where ``prototypes[i]`` is None."""
    text_weight = check_text_weight(text_weight)
    fused = np.array(text_vectors, dtype=np.float32, copy=True)
    for row, prototype in enumerate(prototypes):
        if prototype is not None:
            mixed = text_weight * fused[row] + (1.0 - text_weight) * prototype
            fused[row] = _unit(mixed)
    return fused
