"""`Matcher`: rank candidate texts for images, or images for a text, with one bundle and one index.

Probabilities are a softmax over 100 x cosine; `Ranking.softmax_scope` says over which set
("all" candidates / images, or the "top" retrieved ones of a large or approximate index).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from .checks import positive_batch_size
from .errors import ClipMatchError
from .formulas.layout_codes import query_layout_code
from .index.candidates import candidate_key
from .index.label_index import Hit, LabelIndex, Ranking, softmax_probabilities
from .runtime.bundle import packaged_bundle_with
from .runtime.encoder import Encoder, input_name, is_single_image
from .runtime.images import ImageInput, open_image
from .runtime.images import image_files


class Matcher:
    """``Matcher(bundle, index).rank(images, top_k)``; ``bundle`` is a path, a packaged model's name,
    an `Encoder` or None (the packaged model the index was built with, else the demo model),
    ``index`` a path or a `LabelIndex` built with the same bundle."""

    def __init__(self, bundle: str | os.PathLike | Encoder | None = None,
                 index: str | os.PathLike | LabelIndex | None = None, device: str = "auto",
                 precision: str | None = None):
        if bundle is None and index is not None:
            index = index if isinstance(index, LabelIndex) else LabelIndex.load(index)
            bundle = packaged_bundle_with(index.fingerprint)
        self.encoder = bundle if isinstance(bundle, Encoder) else Encoder.load(bundle, device, precision)
        if isinstance(index, LabelIndex):
            index.check_bundle(self.encoder.fingerprint)
        elif index is not None:
            index = LabelIndex.load(index, fingerprint=self.encoder.fingerprint)
        self.index = index

    def rank(self, images: ImageInput | Sequence[ImageInput], top_k: int = 5, batch_size: int = 16) -> list[Ranking]:
        """Top ``top_k`` candidates for each image; an unreadable image raises `ClipMatchError`."""
        index = self._require_index()
        if not index.layout_weight:  # (the encoder decodes batch by batch: memory stays bounded)
            return index.search(self.encoder.encode_images(images, batch_size=batch_size), top_k)
        items = [images] if is_single_image(images) else list(images)
        names = [input_name(item, i) for i, item in enumerate(items)]
        pictures = [open_image(item, name) for item, name in zip(items, names)]
        vectors = self.encoder.encode_images(pictures, batch_size=batch_size)
        return index.search(index.query_vectors(vectors, pictures, names), top_k)

    def iter_rank(self, images: Iterable[str | os.PathLike], top_k: int = 5,
                  batch_size: int = 16) -> Iterator[tuple[str, Ranking | ClipMatchError]]:
        """Stream ``(name, ranking)`` per image; an unreadable image yields its error instead and the
        others are still answered."""
        index = self._require_index()
        for name, vector in self._stream(images, batch_size, index):
            yield name, vector if isinstance(vector, ClipMatchError) else index.search(vector[None], top_k)[0]

    def iter_encode(self, images: Iterable[str | os.PathLike],
                    batch_size: int = 16) -> Iterator[tuple[str, np.ndarray | ClipMatchError]]:
        """Stream ``(name, unit vector)`` per image, decoding and encoding batch by batch (memory stays
        bounded for any number of images); an unreadable image yields its error instead."""
        return self._stream(images, batch_size, None)

    def _stream(self, images: Iterable[str | os.PathLike], batch_size: int,
                index: LabelIndex | None) -> Iterator[tuple[str, np.ndarray | ClipMatchError]]:
        """`iter_encode`, with each vector made into ``index``'s query vector when given."""
        positive_batch_size(batch_size)
        batch: list[tuple[str, Image.Image]] = []
        for image in images:
            name = str(image)
            try:
                picture = open_image(image, name)
                if index is not None and index.layout_weight:
                    query_layout_code(picture, name)  # (a blank image is answered by its error, as an unreadable one)
                batch.append((name, picture))
            except ClipMatchError as error:
                yield from self._encode(batch, index)
                batch = []
                yield name, error
                continue
            if len(batch) == batch_size:
                yield from self._encode(batch, index)
                batch = []
        yield from self._encode(batch, index)

    def text_vector(self, text: str, latex: bool | None = None) -> np.ndarray:
        """Unit embedding of ``text``, normalised as LaTeX when ``latex`` (default: the index's mode)."""
        latex = self.index.latex if latex is None and self.index is not None else bool(latex)
        return self.encoder.encode_texts([candidate_key(text, latex)])[0]

    def rank_images(self, text: str, images: Sequence[ImageInput], top_k: int = 5, latex: bool | None = None,
                    batch_size: int = 16, names: Sequence[str] | None = None) -> Ranking:
        """Rank ``images`` for ``text``; probabilities are a softmax over all of them. Hit ids are
        ``names``, else the image paths (``images[i]`` for other inputs). ``latex`` (default: the
        index's mode) normalises the text as LaTeX."""
        if not images:
            raise ClipMatchError("no images to rank")
        query = self.text_vector(text, latex)
        vectors = self.encoder.encode_images(list(images), batch_size=batch_size)
        names = list(names) if names is not None else [input_name(image, i) for i, image in enumerate(images)]
        return rank_vectors(query, vectors, names, top_k)

    def _require_index(self) -> LabelIndex:
        if self.index is None:
            raise ClipMatchError("no candidate index given; build one with `clip-match index build`")
        return self.index

    def _encode(self, batch: list[tuple[str, Image.Image]],
                index: LabelIndex | None) -> Iterator[tuple[str, np.ndarray]]:
        if batch:
            pictures = [image for _, image in batch]
            vectors = self.encoder.encode_images(pictures, batch_size=len(batch))
            if index is not None:
                vectors = index.query_vectors(vectors, pictures, [name for name, _ in batch])
            yield from zip([name for name, _ in batch], vectors)


def rank_vectors(query: np.ndarray, vectors: np.ndarray, names: list[str], top_k: int) -> Ranking:
    """Exact ranking of ``vectors`` (unit rows) for one unit ``query``; softmax over all of them."""
    scores = vectors @ query
    order = np.argsort(-scores, kind="stable")[: max(1, min(top_k, len(names)))]
    probabilities = softmax_probabilities(scores)[0]
    hits = [Hit(rank, names[row], names[row], names[row], float(scores[row]), float(probabilities[row]))
            for rank, row in enumerate(order, 1)]
    return Ranking(hits, softmax_scope="all", softmax_over=len(names))


def expand_images(paths: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """Files as given; folders expand to the image files under them (`image_files`: by suffix,
    recursively, sorted, hidden ones skipped), so a folder of per-label sub-folders works too."""
    for path in map(Path, paths):
        yield from image_files(path) if path.is_dir() else [path]

