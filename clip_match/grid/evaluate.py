"""Grid-puzzle accuracy of a model: every tile right, tile precision/recall, latency.

Each puzzle is solved once from its image file (decode, split, encode, score); the same scores
are judged twice: with k known (top-k) and with k unknown (the solver's calibrated rule, or
largest gap), per layout and, when puzzles name their art style ("style"), per style. Latency is
the whole solve, median and 95th percentile.

Calibration (on validation puzzles, never the reported ones) fits the solver's tile crop and
k-unknown rule together: each puzzle is decoded once and encoded once per candidate crop (TILE_CROPS).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from ..errors import ClipMatchError, where
from ..jsonio import parse_object
from .select import Calibration, SelectionRule, calibrate, top_k
from .selector import Selector
from .solver import GridSolver
from .tiles import LAYOUTS, crop_margins

FIELDS = {"image": str, "prompt": str, "layout": str, "k": int, "answer": list}
NO_STYLE = "-"  # the style row of puzzles without one, in a file where others have one
# Shares of each tile's side to try encoding (centred): puzzle tiles often frame their object more
# loosely than the training images (session 4's demo model, validation puzzles: k unknown 79.1 %
# whole, 80.2-80.8 % at 0.95-0.8).
TILE_CROPS = (1.0, 0.95, 0.9, 0.85, 0.8)


@dataclass(frozen=True)
class PuzzleLine:
    image: Path
    prompt: str
    layout: str
    k: int
    answer: np.ndarray  # boolean mask of the matching tiles, row-major
    style: str | None = None  # the art style the puzzle is drawn in, when its line says


def read_puzzles(path: str | os.PathLike) -> Iterator[PuzzleLine]:
    """Validate and yield the lines of a puzzles.jsonl (images relative to its folder)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ClipMatchError(f"{path}: cannot read: {error}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        record = parse_object(line, where(path, number))
        for field, kind in FIELDS.items():
            if not isinstance(record.get(field), kind) or isinstance(record.get(field), bool):
                raise ClipMatchError(f"{where(path, number)}: field {field!r} must be a {kind.__name__}")
        if record["layout"] not in LAYOUTS:
            raise ClipMatchError(f"{where(path, number)}: field 'layout' must be one of {', '.join(LAYOUTS)}")
        rows, cols = LAYOUTS[record["layout"]]
        if not 1 <= record["k"] <= rows * cols:
            raise ClipMatchError(f"{where(path, number)}: field 'k' must be from 1 to {rows * cols} "
                                 f"(the tiles of a {record['layout']} grid), got {record['k']}")
        answer = np.zeros(rows * cols, bool)
        for cell in record["answer"]:
            if not (isinstance(cell, list) and len(cell) == 2 and all(type(v) is int for v in cell)
                    and 1 <= cell[0] <= rows and 1 <= cell[1] <= cols):
                raise ClipMatchError(f"{where(path, number)}: field 'answer' needs 1-based [row, col] pairs "
                                     f"inside {record['layout']}, got {cell!r}")
            answer[(cell[0] - 1) * cols + cell[1] - 1] = True
        if answer.sum() != record["k"]:
            raise ClipMatchError(f"{where(path, number)}: k={record['k']} but 'answer' has {answer.sum()} tiles")
        style = record.get("style")
        if style is not None and not (isinstance(style, str) and style.strip()):
            raise ClipMatchError(f"{where(path, number)}: field 'style' must be a non-empty str")
        yield PuzzleLine(path.parent / record["image"], record["prompt"], record["layout"], record["k"], answer, style)


@dataclass
class Scored:
    """Scores of every tile of every puzzle, and solve latencies."""

    scores: list[np.ndarray]
    answers: list[np.ndarray]
    ks: list[int]
    layouts: list[str]
    seconds: list[float]
    styles: list[str | None] = field(default_factory=list)  # each puzzle's art style, if its line names one


def score_puzzles(solver: GridSolver, path: str | os.PathLike, layout: str = "auto") -> Scored:
    """Solve each puzzle of ``path`` from its image file (with the solver's tile crop) and keep the tile scores."""
    return score_crops(solver, path, [solver.tile_crop], layout)[solver.tile_crop]


def score_crops(solver: GridSolver, path: str | os.PathLike, tile_crops: Sequence[float],
                layout: str = "auto") -> dict[float, Scored]:
    """The puzzles of ``path`` scored with each tile crop; each image is decoded and cut once. A
    crop's latency is the decoding and cutting plus that crop's encoding and scoring: one solve."""
    puzzles = list(read_puzzles(path))
    if not puzzles:
        raise ClipMatchError(f"{path}: no puzzles")
    scored = {crop: Scored([], [], [], [], []) for crop in tile_crops}
    for puzzle in tqdm(puzzles, desc="puzzles", unit="puzzle", disable=None, leave=False):
        start = time.perf_counter()
        tiles, grid = solver.tiles(puzzle.image, layout)
        cut = time.perf_counter() - start
        if grid.layout != puzzle.layout:
            raise ClipMatchError(f"{puzzle.image}: detected layout {grid.layout}, puzzles.jsonl says {puzzle.layout}")
        for crop, into in scored.items():
            start = time.perf_counter()
            scores = solver.scores(crop_margins(tiles, crop), puzzle.prompt)
            into.seconds.append(cut + time.perf_counter() - start)
            into.scores.append(scores)
            into.answers.append(puzzle.answer)
            into.ks.append(puzzle.k)
            into.layouts.append(puzzle.layout)
            into.styles.append(puzzle.style)
    return scored


def metrics(chosen: list[np.ndarray], answers: list[np.ndarray]) -> dict[str, float]:
    """Puzzle accuracy (every tile right), tile precision and recall."""
    hits = sum(int((c & a).sum()) for c, a in zip(chosen, answers))
    return {
        "puzzle_accuracy": float(np.mean([np.array_equal(c, a) for c, a in zip(chosen, answers)])),
        "tile_precision": hits / max(1, sum(int(c.sum()) for c in chosen)),
        "tile_recall": hits / max(1, sum(int(a.sum()) for a in answers)),
    }


def report(scored: Scored, rule: SelectionRule | Selector, rule_name: str) -> dict:
    """Metrics with k known and k unknown (``rule``), overall and per layout, plus latency; per style
    too (``"styles"``, in order of appearance) when any puzzle names its style."""
    known = [top_k(s, k) for s, k in zip(scored.scores, scored.ks)]
    unknown = [rule.select(s) for s in scored.scores]

    def block(keep: list[int]) -> dict:
        answers = [scored.answers[i] for i in keep]
        return {"puzzles": len(keep),
                "k_known": metrics([known[i] for i in keep], answers),
                "k_unknown": metrics([unknown[i] for i in keep], answers)}

    out: dict = {"puzzles": len(scored.scores), "k_unknown_rule": rule_name}
    for layout in sorted(set(scored.layouts)) + ["all"]:
        out[layout] = block([i for i, name in enumerate(scored.layouts) if layout in ("all", name)])
    if any(style is not None for style in scored.styles):
        styles = [style or NO_STYLE for style in scored.styles]
        out["styles"] = {name: block([i for i, style in enumerate(styles) if style == name])
                         for name in dict.fromkeys(styles)}
    ms = np.array(scored.seconds) * 1000
    out["latency_ms"] = {"median": float(np.median(ms)), "p95": float(np.percentile(ms, 95))}
    return out


def fit_calibration(solver: GridSolver, path: str | os.PathLike, layout: str = "auto",
                    tile_crops: Sequence[float] = TILE_CROPS,
                    source: str | None = None) -> tuple[Calibration, Scored]:
    """Fit the tile crop and the k-unknown rule on the (validation, never reported) puzzles of
    ``path``: the crop whose puzzles are most often exactly right, top-k and calibrated rule
    counted together (ties: the larger crop). ``source`` describes the puzzles in the calibration
    (default: their path). Leaves ``solver`` on that crop; returns the calibration and the puzzles
    as scored with it."""
    fits = []
    for crop, scored in score_crops(solver, path, tile_crops, layout).items():
        rule, accuracy = calibrate(scored.scores, scored.answers)
        known = np.mean([np.array_equal(top_k(s, k), a) for s, k, a in zip(scored.scores, scored.ks, scored.answers)])
        fits.append((accuracy + known, crop, rule, accuracy, scored))
    _, crop, rule, accuracy, scored = max(fits, key=lambda fit: fit[:2])
    solver.tile_crop = crop
    calibration = Calibration(rule, solver.encoder.fingerprint, accuracy, len(scored.scores),
                              source or str(path), crop)
    return calibration, scored
