"""Layout codes: how a drawing on plain paper (a typeset formula) is laid out, without a model.

A candidate with example images (renders of a formula) can also be matched by *where its ink
is*: the image is trimmed to its ink, the ink (distance from the border colour, light on dark as
well as dark on light, scaled to its 99.5th percentile so faint and bold prints agree) is averaged
onto a fixed ``LAYOUT_SHAPE`` grid, centred and normalised. Two typesettings of one formula by the
same engine give nearly the same code at any scale, padding, blur or JPEG quality; a transparent
image is first laid on paper (`on_paper`). For photos of paper the light is evened out first
(`flatten_light`) and the ink turned level (`deskewed`, within `SKEW_DEGREES`), and each row of the
grid is smoothed along its length (`SMOOTHING_COLUMNS`), so that ink a perspective or another
engine's spacing moved by a column or two still meets its place (photos of development formulas:
78.6 -> 85.7 % R@1, typeset images unchanged or better; datasets/formulas/RESULTS.md).

An index with layout weight ``w`` scores ``(1 - w) * model cosine + w * layout cosine``: every
vector (candidate and query) is ``[sqrt(1 - w) * model vector, sqrt(w) * layout code]``, so one
inner product in FAISS is the blend and stays exact. A candidate's code is the normalised mean of
its examples' codes; one without examples gets zeros (its layout part scores 0). The formula bank
(datasets/formulas/RESULTS.md) chose ``w`` on a development bank's real images.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from ..errors import ClipMatchError
from ..runtime.preprocess import border_pixels, flatten_light, on_paper, trim_to_content

LAYOUT_SHAPE = (16, 128)  # (rows, columns): a formula line is ~6x wider than high (median real image)
LAYOUT_DIM = LAYOUT_SHAPE[0] * LAYOUT_SHAPE[1]
INK_PERCENTILE = 99.5
SKEW_DEGREES = 8.0  # a hand-held photo's tilt, either way
SMOOTHING_COLUMNS = 1.5  # each row of the grid blurred along its length by a Gaussian this wide (sigma, columns)
_SMOOTHING = np.exp(-0.5 * (np.arange(-5, 6) / SMOOTHING_COLUMNS) ** 2).astype(np.float32)
_SMOOTHING /= _SMOOTHING.sum()
LAYOUT_VERSION = 2  # raise when codes change: an index keeps its candidates' codes (1: before the smoothing)
_SKEW_SEARCH_HEIGHT = 48  # the angle is searched on a copy this high


def check_layout_weight(layout_weight: float) -> float:
    if (isinstance(layout_weight, bool) or not isinstance(layout_weight, (int, float))
            or not 0.0 <= layout_weight <= 1.0):
        raise ClipMatchError(f"layout weight must be between 0 (model only) and 1 (layout only), got {layout_weight!r}")
    return float(layout_weight)


def layout_code(image: Image.Image) -> np.ndarray:
    """The unit layout code of ``image`` (zeros for a blank image)."""
    gray = flatten_light(on_paper(image))
    # The paper's colour from the untrimmed border: after the trim, ink touches the border.
    paper = float(np.median(border_pixels(np.asarray(gray, dtype=np.float32))))
    gray = deskewed(gray, paper)
    ink = np.abs(np.asarray(trim_to_content(gray, 0), dtype=np.float32) - paper)
    ink = np.clip(ink / max(float(np.percentile(ink, INK_PERCENTILE)), 1.0), 0.0, 1.0)
    rows, columns = LAYOUT_SHAPE
    grid = np.asarray(Image.fromarray(np.round(ink * 255).astype(np.uint8)).resize((columns, rows), Image.BOX),
                      dtype=np.float32)
    grid = np.stack([np.convolve(row, _SMOOTHING, mode="same") for row in grid]).ravel()
    grid -= grid.mean()
    norm = float(np.linalg.norm(grid))
    return grid / norm if norm > 1e-6 else np.zeros(LAYOUT_DIM, np.float32)


def deskewed(gray: Image.Image, paper: float) -> Image.Image:
    """``gray`` turned so that its ink runs level: by the angle within `SKEW_DEGREES` whose rows of ink
    are most unequal (the sum of squared row sums peaks when baselines and fraction bars lie flat),
    searched by whole degrees, then quarter degrees, on a small copy. A level image is returned as it is."""
    scale = min(1.0, _SKEW_SEARCH_HEIGHT / max(1, gray.height))
    small = gray.resize((max(1, round(gray.width * scale)), max(1, round(gray.height * scale))), Image.BILINEAR)
    ink = Image.fromarray(np.abs(np.asarray(small, dtype=np.float32) - paper).astype(np.uint8))

    def peakedness(angle: float) -> float:
        rows = np.asarray(ink.rotate(angle, resample=Image.BILINEAR, expand=True), dtype=np.float32).sum(axis=1)
        return float((rows ** 2).sum())

    def steadiest(angles: np.ndarray) -> float:  # (ties, as on a blank page, go to the smallest turn)
        return max(sorted(angles.tolist(), key=abs), key=peakedness)

    best = steadiest(np.arange(-SKEW_DEGREES, SKEW_DEGREES + 0.5, 1.0))
    best = steadiest(np.arange(best - 0.75, best + 0.8, 0.25))
    if abs(best) < 0.125:
        return gray
    return gray.rotate(float(best), resample=Image.BICUBIC, expand=True, fillcolor=int(round(paper)))


def layout_codes(images: Sequence[Image.Image]) -> np.ndarray:
    return np.stack([layout_code(image) for image in images]) if images else np.zeros((0, LAYOUT_DIM), np.float32)


def query_layout_code(image: Image.Image, name: str) -> np.ndarray:
    """`layout_code` of a query image; a blank one is an error naming it: its layout part would
    score 0 against every candidate, leaving a ranking by the model alone that nobody asked for."""
    code = layout_code(image)
    if not code.any():
        raise ClipMatchError(f"{name}: no ink (a blank image): an index with a layout weight matches where a "
                             "formula's ink is; give an image of a formula")
    return code


def with_layout(vectors: np.ndarray, codes: Sequence[np.ndarray | None], layout_weight: float) -> np.ndarray:
    """Rows ``[sqrt(1 - w) * vectors[i], sqrt(w) * codes[i]]`` (zeros where ``codes[i]`` is None):
    their inner products blend the two cosines by ``w``."""
    layout_weight = check_layout_weight(layout_weight)
    blended = np.zeros((len(vectors), np.shape(vectors)[1] + LAYOUT_DIM), np.float32)
    blended[:, :np.shape(vectors)[1]] = np.sqrt(1.0 - layout_weight) * np.asarray(vectors, np.float32)
    for row, code in enumerate(codes):
        if code is not None:
            blended[row, -LAYOUT_DIM:] = np.sqrt(layout_weight) * code
    return blended
