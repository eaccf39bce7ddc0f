"""A learned k-unknown selector: where to cut a puzzle's sorted tile scores, judged from their whole pattern.

One threshold (or one relative cut) fitted on the training styles loses 20-25 points on art the model
never saw, where every score shifts and the spread shrinks. The selector instead scores each possible
cut of the sorted scores (k = 1 .. n-1 tiles chosen) by features of the whole pattern that stay
meaningful when scores shift or shrink (the gap at the cut against the others, z-scores, shares of the
spread, the layout) and chooses the best cut: a logistic regression, fitted on validation puzzles of the
training styles (`fit_selector`, scikit-learn at fitting time only), stored as plain JSON (standardisation
and coefficients, never pickle) and evaluated with numpy at run time. ``grid_selector.json`` in a
bundle (listed in its manifest) makes it the default k-unknown rule; without one the calibrated rule is.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ClipMatchError
from ..runtime.bundle import write_file
from .select import top_k

SELECTOR_NAME = "grid_selector.json"
FORMAT, FORMAT_VERSION = "clip_match.grid_selector", 1
FEATURES = ("gap", "gap_share", "gap_to_largest", "largest_gap", "second_gap_share", "z_last_chosen",
            "z_first_left", "relative_last_chosen", "relative_first_left", "mean_difference", "spread_chosen",
            "spread_left", "chosen_share", "nine_tiles", "best", "spread")
_EPS = 1e-6


def cut_features(scores: Sequence[float]) -> np.ndarray:
    """(n - 1, len(FEATURES)) features of choosing the best k = 1 .. n-1 tiles of one puzzle."""
    v = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    n = len(v)
    if n < 2:
        raise ClipMatchError(f"a puzzle needs at least 2 tile scores, got {n}")
    gaps = v[:-1] - v[1:]
    spread = v[0] - v[-1] + _EPS
    mean, std, median = v.mean(), v.std() + _EPS, np.median(v)
    largest = gaps.max() + _EPS
    second = np.sort(gaps)[-2] if n > 2 else 0.0
    rows = []
    for k in range(1, n):
        chosen, left = v[:k], v[k:]
        rows.append((gaps[k - 1], gaps[k - 1] / spread, gaps[k - 1] / largest, float(gaps[k - 1] >= largest - _EPS),
                     second / largest, (v[k - 1] - mean) / std, (v[k] - mean) / std,
                     (v[k - 1] - median) / (v[0] - median + _EPS), (v[k] - median) / (v[0] - median + _EPS),
                     (chosen.mean() - left.mean()) / spread, chosen.std() / spread, left.std() / spread, k / n,
                     float(n == 9), v[0], spread))
    return np.asarray(rows, dtype=np.float64)


@dataclass(frozen=True)
class Selector:
    """A fitted cut selector for one model (``fingerprint``)."""

    fingerprint: str
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    source: str          # what it was fitted on (puzzles, styles, seeds)
    puzzles: int
    accuracy: float      # share of those puzzles exactly right
    features: tuple[str, ...] = FEATURES

    def k(self, scores: Sequence[float]) -> int:
        """How many of the best tiles to choose."""
        x = (cut_features(scores) - np.asarray(self.mean)) / np.asarray(self.scale)
        return int(np.argmax(x @ np.asarray(self.coef) + self.intercept)) + 1

    def select(self, scores: Sequence[float]) -> np.ndarray:
        """Boolean mask of the chosen tiles (the best ``k``); never empty."""
        return top_k(np.asarray(scores, dtype=np.float64), self.k(scores))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the selector; into a bundle directory, it is also listed (sha256) in its manifest."""
        record = {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}
        return write_file(path, (json.dumps(record, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Selector:
        """Read and check a selector file; every fault names the file and the field."""
        try:
            record = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ClipMatchError(f"{path}: not a readable grid selector: {error}") from None
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise ClipMatchError(f"{path}: not a grid selector (field 'format' must be {FORMAT!r})")
        if record.get("format_version") != FORMAT_VERSION:
            raise ClipMatchError(f"{path}: grid selector version {record.get('format_version')!r}, this release "
                                 f"reads {FORMAT_VERSION}; fit it again with `clip-match eval-grid --fit-selector`")
        if record.get("features") != list(FEATURES):
            raise ClipMatchError(f"{path}: field 'features' must list this release's features {list(FEATURES)}")
        for field in ("mean", "scale", "coef"):
            values = record.get(field)
            if not (isinstance(values, list) and len(values) == len(FEATURES) and all(map(_real, values))):
                raise ClipMatchError(f"{path}: field {field!r} must be {len(FEATURES)} numbers")
        if not all(value > 0 for value in record["scale"]):
            raise ClipMatchError(f"{path}: field 'scale' must be positive numbers")
        for field, kind in (("intercept", float), ("accuracy", float), ("puzzles", int), ("fingerprint", str),
                            ("source", str)):
            value = record.get(field)
            if not (_real(value) if kind is float else isinstance(value, kind) and not isinstance(value, bool)):
                raise ClipMatchError(f"{path}: field {field!r} must be a {kind.__name__}")
        return cls(record["fingerprint"], tuple(record["mean"]), tuple(record["scale"]), tuple(record["coef"]),
                   float(record["intercept"]), record["source"], record["puzzles"], float(record["accuracy"]))


def fit_selector(score_lists: Sequence[np.ndarray], answers: Sequence[np.ndarray], fingerprint: str,
                 source: str, regularisation: float = 1.0) -> Selector:
    """Fit on validation puzzles (never the reported ones): each puzzle's cuts, its true one the positive.
    Puzzles whose answer is not the best k tiles (the model ranks a wrong tile above a right one) teach
    nothing about where to cut and are left out of the fit (still counted in ``accuracy``)."""
    from sklearn.linear_model import LogisticRegression  # fitting only: the runtime reads the JSON

    rows, labels = [], []
    for scores, answer in zip(score_lists, answers):
        k = int(np.sum(answer))
        if not 1 <= k < len(scores) or not np.array_equal(top_k(scores, k), answer):
            continue
        features = cut_features(scores)
        rows.append(features)
        labels.append(np.arange(1, len(scores)) == k)
    if not rows:
        raise ClipMatchError("no validation puzzle has its answer among the best-scored tiles: nothing to fit")
    x, y = np.concatenate(rows), np.concatenate(labels)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < _EPS] = 1.0
    model = LogisticRegression(C=regularisation, max_iter=2000).fit((x - mean) / scale, y)
    selector = Selector(fingerprint, tuple(mean.tolist()), tuple(scale.tolist()), tuple(model.coef_[0].tolist()),
                        float(model.intercept_[0]), source, len(score_lists), 0.0)
    right = sum(np.array_equal(selector.select(s), a) for s, a in zip(score_lists, answers))
    return Selector(**{**asdict(selector), "accuracy": right / len(score_lists)})


def _real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
