"""Image<->text retrieval recall, counted as Chinese-CLIP counts it (``cn_clip/eval/evaluation.py``).

Text->image: a text is a hit at k when any of its images is among the k images most similar
to it; image->text likewise with the image's texts. Scores are percentages; mean recall is
the mean of R@1, R@5 and R@10 (per direction, and over both directions). Numpy only.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from .errors import ClipMatchError

KS = (1, 5, 10)
_CHUNK = 512  # query rows scored at a time


def recall_at_k(queries: np.ndarray, candidates: np.ndarray, positives: list[set[int]],
                ks: Iterable[int] = KS) -> dict[int, float]:
    """Percentage of queries with a positive candidate in their top k (ties broken by candidate order)."""
    ks = tuple(ks)
    hits = dict.fromkeys(ks, 0)
    depth = min(max(ks), len(candidates))
    for start in range(0, len(queries), _CHUNK):
        scores = queries[start:start + _CHUNK] @ candidates.T
        top = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
        for row, ranked in enumerate(top):
            wanted = positives[start + row]
            found = np.array([c in wanted for c in ranked])
            for k in ks:
                hits[k] += bool(found[:k].any())
    return {k: 100.0 * hits[k] / len(queries) for k in ks}


def retrieval_metrics(image_features: np.ndarray, text_features: np.ndarray,
                      pairs: Iterable[tuple[int, int]], ks: Iterable[int] = KS) -> dict[str, float]:
    """i2t/t2i R@k and mean recalls for L2-normalised features; ``pairs`` are (image_row, text_row).

    Every image needs a pair. A text without one is a candidate for the images only (a formula the
    query split has no image of): it is not a text->image query."""
    ks = tuple(ks)
    texts_of_image: list[set[int]] = [set() for _ in range(len(image_features))]
    images_of_text: list[set[int]] = [set() for _ in range(len(text_features))]
    for image_row, text_row in pairs:
        texts_of_image[image_row].add(text_row)
        images_of_text[text_row].add(image_row)
    paired_texts = [row for row, images in enumerate(images_of_text) if images]
    if not texts_of_image or not paired_texts or not all(texts_of_image):
        raise ClipMatchError("retrieval recall needs images and texts, each image with at least one pair")
    metrics: dict[str, float] = {}
    for direction, queries, candidates, positives in (
            ("i2t", image_features, text_features, texts_of_image),
            ("t2i", text_features[paired_texts], image_features, [images_of_text[row] for row in paired_texts])):
        recalls = recall_at_k(queries, candidates, positives, ks)
        metrics.update({f"{direction}_r{k}": value for k, value in recalls.items()})
        metrics[f"{direction}_mean_recall"] = float(np.mean(list(recalls.values())))
    metrics["mean_recall"] = (metrics["i2t_mean_recall"] + metrics["t2i_mean_recall"]) / 2
    return metrics
