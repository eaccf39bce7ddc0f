"""Grid-puzzle accuracy of a model: every tile right, tile precision/recall, latency.

Each puzzle is solved once from its image file (decode, split, encode, score); the same scores
are judged twice: with k known (top-k) and with k unknown (the solver's calibrated rule, or
largest gap), per layout and, when puzzles name their art style ("style"), per style. Latency is
the whole solve, median and 95th percentile.

Calibration (on validation puzzles, never the reported ones) fits the solver's tile crop and
k-unknown rule together: each puzzle is decoded once and encoded once per candidate crop (TILE_CROPS).

Screenshots (``datasets/emoji/generate.py screenshots``) are also scored with the prompt read from
the image (`score_read`): whether the grid was located (tile boxes within 3 px of the line's
``boxes``), whether the target was read (Chinese and English apart; English compared in the singular,
as the reader gives it) or the icon found, and accuracy with the prompt read against the same
puzzles with the prompt given (an icon puzzle's ``example``, else its ``prompt``).
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
from ..runtime.images import open_image
from .prompt import PromptReading, normalise, singular
from .select import Calibration, SelectionRule, calibrate, top_k
from .selector import Selector
from .solver import GridSolver
from .tiles import LAYOUTS, crop_margins

FIELDS = {"image": str, "prompt": str, "layout": str, "k": int, "answer": list}
SCREENSHOT_FIELDS = {"lang": str, "prompt_kind": str, "target": str, "boxes": list}  # what --read-prompt scores
LOCATED_PX = 3  # a tile box this close to the truth on every side is located
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
    example: Path | None = None  # the prompt as an example image, when its line gives one
    screenshot: dict | None = None  # SCREENSHOT_FIELDS (and "icon_box"), when its line has them


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
        for field in ("style", "example"):
            if record.get(field) is not None and not (isinstance(record[field], str) and record[field].strip()):
                raise ClipMatchError(f"{where(path, number)}: field {field!r} must be a non-empty str")
        screenshot = None
        if "prompt_kind" in record:
            for field, kind in SCREENSHOT_FIELDS.items():
                if not isinstance(record.get(field), kind):
                    raise ClipMatchError(f"{where(path, number)}: field {field!r} must be a {kind.__name__}")
            if record["prompt_kind"] not in ("text", "icon"):
                raise ClipMatchError(f"{where(path, number)}: field 'prompt_kind' must be 'text' or 'icon'")
            screenshot = {field: record[field] for field in (*SCREENSHOT_FIELDS, "icon_box") if field in record}
        example = path.parent / record["example"] if record.get("example") else None
        yield PuzzleLine(path.parent / record["image"], record["prompt"], record["layout"], record["k"], answer,
                         record.get("style"), example, screenshot)


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
            scores = solver.scores(crop_margins(tiles, crop), puzzle.example or puzzle.prompt)
            into.seconds.append(cut + time.perf_counter() - start)
            into.scores.append(scores)
            into.answers.append(puzzle.answer)
            into.ks.append(puzzle.k)
            into.layouts.append(puzzle.layout)
            into.styles.append(puzzle.style)
    return scored


@dataclass
class ReadScored:
    """Screenshots solved twice, with the prompt given and read; what the reading found."""

    given: Scored
    read: Scored             # a screenshot whose prompt could not be read has scores None (wrong)
    located: list[bool]      # grid within LOCATED_PX of the truth
    right: list[bool]        # target read (text) or icon found (icon)
    kinds: list[str]         # "zh", "en" or "icon"
    reading_seconds: list[float]
    errors: list[str]        # what the reader said where it failed


def score_read(solver: GridSolver, path: str | os.PathLike, layout: str = "auto",
               pattern: str | None = None) -> ReadScored:
    """Solve each screenshot of ``path`` with the prompt given and with the prompt read (``pattern``:
    a --prompt-pattern); the image is decoded and its grid found once."""
    puzzles = list(read_puzzles(path))
    if not puzzles:
        raise ClipMatchError(f"{path}: no puzzles")
    missing = next((p for p in puzzles if p.screenshot is None), None)
    if missing is not None:
        raise ClipMatchError(f"{path}: reading prompts needs screenshot lines (lang, prompt_kind, target, boxes: "
                             f"datasets/emoji/generate.py screenshots); {missing.image.name} has none")
    out = ReadScored(Scored([], [], [], [], []), Scored([], [], [], [], []), [], [], [], [], [])
    for puzzle in tqdm(puzzles, desc="screenshots", unit="image", disable=None, leave=False):
        truth, given, read, reading, error = puzzle.screenshot, None, None, None, ""
        start = time.perf_counter()
        image = open_image(puzzle.image)
        try:  # (a grid not found, or not the puzzle's, fails both solves of this screenshot, not the evaluation)
            tiles, grid = solver.tiles(image, layout)
            if grid.layout != puzzle.layout:
                raise ClipMatchError(f"found a {grid.layout} grid, puzzles.jsonl says {puzzle.layout}")
        except ClipMatchError as failure:
            tiles, grid, error = [], None, f"{puzzle.image}: {failure}"
        tiles = crop_margins(tiles, solver.tile_crop)
        cut = time.perf_counter() - start
        start = time.perf_counter()
        if grid is not None:
            given = solver.scores(tiles, puzzle.example or puzzle.prompt)
        given_seconds = time.perf_counter() - start
        start = time.perf_counter()
        if grid is not None:
            try:
                reading = solver.read_prompt(image, grid, pattern, str(puzzle.image))
            except ClipMatchError as failure:
                error = str(failure)
        reading_seconds = time.perf_counter() - start
        if reading is not None:
            read = solver.scores(tiles, reading.prompt)
        read_seconds = time.perf_counter() - start
        for scored, scores, seconds in ((out.given, given, cut + given_seconds), (out.read, read, cut + read_seconds)):
            scored.scores.append(scores)
            scored.answers.append(puzzle.answer)
            scored.ks.append(puzzle.k)
            scored.layouts.append(puzzle.layout)
            scored.seconds.append(seconds)
            scored.styles.append(puzzle.style)
        out.located.append(grid is not None and all(
            max(abs(a - b) for a, b in zip(found, box)) <= LOCATED_PX
            for found, box in zip(grid.boxes(), truth["boxes"])))
        kind = "icon" if truth["prompt_kind"] == "icon" else truth["lang"]
        out.kinds.append(kind)
        out.right.append(reading is not None and _read_right(reading, truth, kind))
        out.reading_seconds.append(reading_seconds)
        out.errors.append(error)
    return out


def _read_right(reading: PromptReading, truth: dict, kind: str) -> bool:
    """A text's target equal to the one written (English in the singular); an icon found where it is
    drawn (boxes overlapping by half their union or more, when the line says where)."""
    if kind == "icon":
        if reading.source != "header-icon":
            return False
        if "icon_box" not in truth:
            return True
        (l1, t1, r1, b1), (l2, t2, r2, b2) = reading.box, truth["icon_box"]
        inter = max(0, min(r1, r2) - max(l1, l2)) * max(0, min(b1, b2) - max(t1, t2))
        return inter >= 0.5 * ((r1 - l1) * (b1 - t1) + (r2 - l2) * (b2 - t2) - inter)
    if reading.source != "ocr-text":
        return False
    read, written = normalise(reading.prompt), normalise(truth["target"])
    return read == written if kind == "zh" else singular(read) == singular(written)


def read_report(scored: ReadScored, rule: SelectionRule | Selector, rule_name: str) -> dict:
    """Grid location, prompt reading (per language, icons) and reading time, then `report` for the
    screenshots solved with the prompt given and read."""
    reading: dict = {}
    for kind in dict.fromkeys(sorted(scored.kinds)):
        keep = [i for i, k in enumerate(scored.kinds) if k == kind]
        reading[kind] = {"puzzles": len(keep), "right": float(np.mean([scored.right[i] for i in keep]))}
    ms = np.array(scored.reading_seconds) * 1000
    return {"puzzles": len(scored.kinds), "k_unknown_rule": rule_name,
            "grid_located": float(np.mean(scored.located)), "prompt_read": reading,
            "read_errors": sum(bool(error) for error in scored.errors),
            "reading_ms": {"median": float(np.median(ms)), "p95": float(np.percentile(ms, 95))},
            "given": report(scored.given, rule, rule_name), "read": report(scored.read, rule, rule_name)}


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
    nothing = [np.zeros(len(a), bool) for a in scored.answers]  # (a puzzle without scores: its prompt unread)
    known = [top_k(s, k) if s is not None else none for s, k, none in zip(scored.scores, scored.ks, nothing)]
    unknown = [rule.select(s) if s is not None else none for s, none in zip(scored.scores, nothing)]

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
