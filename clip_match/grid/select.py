"""Choosing the matching tiles from their scores (cosine similarity to the prompt).

- ``k`` known: the k best tiles.
- ``threshold`` given: every tile scoring at least that (always at least the best one).
- neither: a rule calibrated on generated validation puzzles of the same model
  (`calibrate`), stored as ``grid_calibration.json`` in the bundle (listed in its manifest):
    * ``gap``: cut the sorted scores at their largest drop (no parameter; the default when a
      bundle has no calibration),
    * ``threshold``: scores >= value,
    * ``relative``: scores >= median + value * (best - median), scale-free across prompts.
  Calibration finds, for each kind, the value with the most puzzles exactly right (exactly:
  each puzzle is right on an interval of values) and keeps the best kind; ties go to the
  simpler kind (listed first).

A calibration also holds the model's tile crop: the share of each tile's side (centred) that is
encoded, chosen with the rule on the same validation puzzles (`clip_match.grid.evaluate.fit_calibration`);
it applies whether k is known or not.
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

CALIBRATION_NAME = "grid_calibration.json"
KINDS = ("gap", "relative", "threshold")


@dataclass(frozen=True)
class SelectionRule:
    kind: str = "gap"
    value: float = 0.0

    def select(self, scores: np.ndarray) -> np.ndarray:
        """Boolean mask of the chosen tiles; never empty."""
        scores = np.asarray(scores, dtype=np.float64)
        if self.kind == "gap":
            ordered = np.sort(scores)[::-1]
            cut = int(np.argmax(ordered[:-1] - ordered[1:]))
            return scores >= ordered[cut]
        if self.kind == "threshold":
            return by_threshold(scores, self.value)
        if self.kind == "relative":
            best, middle = scores.max(), np.median(scores)
            return scores >= middle + self.value * (best - middle)
        raise ClipMatchError(f"unknown selection rule {self.kind!r}; rules: {', '.join(KINDS)}")


@dataclass(frozen=True)
class Calibration:
    """A k-unknown rule fitted to one model (``fingerprint``) on named validation puzzles."""

    rule: SelectionRule
    fingerprint: str
    accuracy: float       # share of validation puzzles exactly right with this rule
    puzzles: int
    source: str           # what the validation puzzles were (path, seed)
    tile_crop: float = 1.0  # share of each tile's side encoded, centred (1.0: the whole tile)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the calibration; into a bundle directory, it is also listed (sha256) in its manifest."""
        return write_file(path, (json.dumps(asdict(self), ensure_ascii=False, indent=2) + "\n").encode("utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Calibration:
        """Read and check a calibration file; every fault names the file and field."""
        try:
            record = json.loads(Path(path).read_text(encoding="utf-8"))
            if not isinstance(record, dict) or not isinstance(record.get("rule"), dict):
                raise ValueError("expected an object with a 'rule' object")
            calibration = cls(SelectionRule(**record.pop("rule")), **record)
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise ClipMatchError(f"{path}: not a readable grid calibration: {error}") from None
        rule = calibration.rule
        if rule.kind not in KINDS:
            raise ClipMatchError(f"{path}: field 'rule.kind' must be one of {', '.join(KINDS)}, got {rule.kind!r}")
        low = -1.0 if rule.kind == "threshold" else -math.inf  # (a cosine; a relative cut may lie far below the median)
        if rule.kind != "gap" and not _real_in(rule.value, low, 1.0):
            raise ClipMatchError(f"{path}: field 'rule.value' must be a number from {low:g} to 1, got {rule.value!r}")
        for field, kind in (("fingerprint", str), ("source", str), ("puzzles", int)):
            if not isinstance(getattr(calibration, field), kind):
                raise ClipMatchError(f"{path}: field {field!r} must be a {kind.__name__}")
        if not _real_in(calibration.accuracy, 0.0, 1.0):
            raise ClipMatchError(f"{path}: field 'accuracy' must be a number from 0 to 1, got {calibration.accuracy!r}")
        if not _real_in(calibration.tile_crop, 0.0, 1.0) or calibration.tile_crop == 0:
            raise ClipMatchError(f"{path}: field 'tile_crop' must be a number in (0, 1], got {calibration.tile_crop!r}")
        return calibration


def check_threshold(threshold: object) -> float:
    """A tile-score threshold (a cosine: -1 to 1) as a float, or an error."""
    if not _real_in(threshold, -1.0, 1.0):
        raise ClipMatchError(f"threshold must be a cosine from -1 to 1, got {threshold!r}")
    return float(threshold)


def _real_in(value: object, low: float, high: float) -> bool:
    """Whether ``value`` is a real number (not a bool, not NaN) in [low, high]."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(value) and low <= float(value) <= high


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    n = len(scores)
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= n:
        raise ClipMatchError(f"k must be an integer from 1 to {n} (the number of tiles), got {k!r}")
    chosen = np.zeros(n, bool)
    chosen[np.argsort(-np.asarray(scores), kind="stable")[:k]] = True
    return chosen


def by_threshold(scores: np.ndarray, threshold: float) -> np.ndarray:
    scores = np.asarray(scores)
    return (scores >= threshold) | (scores == scores.max())


def calibrate(score_lists: Sequence[np.ndarray], answers: Sequence[np.ndarray]) -> tuple[SelectionRule, float]:
    """The rule (kind and value) that gets most puzzles exactly right; returns it and its accuracy."""
    if not score_lists:
        raise ClipMatchError("calibration needs at least one puzzle")
    answers = [np.asarray(a, bool) for a in answers]
    results = [(float(np.mean([np.array_equal(SelectionRule("gap").select(s), a)
                               for s, a in zip(score_lists, answers)])), SelectionRule("gap"))]
    for kind in ("relative", "threshold"):
        value, accuracy = _best_cut([_rule_values(kind, s) for s in score_lists], answers)
        results.append((accuracy, SelectionRule(kind, value)))
    best_accuracy, best_rule = max(results, key=lambda item: (item[0], -KINDS.index(item[1].kind)))
    return best_rule, best_accuracy


def _rule_values(kind: str, scores: np.ndarray) -> np.ndarray:
    """What a rule of ``kind`` compares with its value: the score, or its place between median and best."""
    scores = np.asarray(scores, dtype=np.float64)
    if kind == "threshold":
        return scores
    best, middle = scores.max(), np.median(scores)
    return (scores - middle) / max(best - middle, 1e-12)


def _best_cut(values: Sequence[np.ndarray], answers: Sequence[np.ndarray]) -> tuple[float, float]:
    """The cut t (select values >= t) right for most puzzles, and that share.

    A puzzle is right for t in (highest non-answer, lowest answer]; when its one answer is the
    best tile the upper end is open (both rules always keep the best tile). The cut is the
    middle of the best gap.
    """
    lows = np.array([v[~a].max() if (~a).any() else -np.inf for v, a in zip(values, answers)])
    highs = np.array([v[a].min() for v, a in zip(values, answers)])
    highs[(np.array([a.sum() for a in answers]) == 1) & (highs > lows)] = np.inf
    solvable = lows < highs
    lows, highs = np.sort(lows[solvable]), np.sort(highs[solvable])
    # the largest value closes the open ends: a cut above every non-answer is a candidate too
    ends = np.unique(np.concatenate([lows, highs, [max(float(v.max()) for v in values)]]))
    ends = ends[np.isfinite(ends)]
    if len(ends) < 2:
        return (float(ends[0]) if len(ends) else 0.0), float(solvable.mean())
    cuts = (ends[:-1] + ends[1:]) / 2
    right = np.searchsorted(lows, cuts, "left") - np.searchsorted(highs, cuts, "left")
    best = int(np.argmax(right))
    return float(cuts[best]), float(right[best] / len(values))
