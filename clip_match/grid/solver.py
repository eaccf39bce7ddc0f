"""`GridSolver`: which tiles of a 2x3 / 3x3 puzzle match a text (or an example image).

The puzzle image is cut at its gap lines (equal split where there are none), each tile is cropped
to its centre as the bundle's calibration says (``tile_crop``; whole tiles without one), all tiles
are encoded in one image-encoder call, and each tile is scored by cosine similarity to the
prompt. Coordinates are 1-based ``[row, col]`` in row-major order (``zero_based=True`` for
0-based). Without a prompt, a screenshot's own prompt is read (`clip_match.grid.prompt`: the text
above or below the grid through the vendored OCR model, or an icon there). Torch-free.
"""
from __future__ import annotations

import os
import re
import threading
import warnings
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from PIL import Image

from ..errors import ClipMatchError
from ..runtime.encoder import Encoder
from ..runtime.images import ImageInput, open_image
from ..runtime.tokenizer import strip_invisible
from .prompt import PromptReader, PromptReading, TimedPattern, compile_pattern
from .select import CALIBRATION_NAME, Calibration, SelectionRule, by_threshold, check_threshold, top_k
from .selector import SELECTOR_NAME, Selector
from .tiles import LAYOUTS, MIN_TILE, Grid, check_layout, crop_margins, cut_tiles, find_grid

K_UNKNOWN = ("auto", "selector", "rule")
TILE_COUNTS = {rows * cols: name for name, (rows, cols) in LAYOUTS.items()}  # 6 -> "2x3", 9 -> "3x3"


@dataclass(frozen=True)
class GridResult:
    layout: str
    coordinates: list[list[int]]   # chosen tiles, [row, col], row-major
    scores: list[float]            # every tile's cosine similarity to the prompt, row-major
    selected: list[bool]           # every tile's choice, row-major
    rule: str                      # how tiles were chosen, e.g. "top-2", "threshold 0.3", "calibrated gap"
    split: str                     # how the tiles were found: "gap lines", "gap lines, framed" (inside a
                                   # screenshot), "equal split", "gap lines + equal split" or "tiles given"
    zero_based: bool = False
    tile_crop: float = 1.0         # share of each tile's side that was encoded (centred)
    prompt_source: str = "given"   # "given", or read from the screenshot: "ocr-text" or "header-icon"
    prompt: str | None = None      # the target read (None when given, or an icon)
    prompt_read: str | None = None  # the text read around the grid, lines joined by newlines ("" for an icon)
    prompt_box: list[int] | None = None  # the icon's (left, top, right, bottom) in the screenshot

    def to_dict(self) -> dict:
        return asdict(self)

    def positions(self) -> list[list[int]]:
        """Every tile's [row, col] (row-major, in this result's base); `coordinates` are the selected ones."""
        return tile_positions(self.layout, self.zero_based)


def tile_positions(layout: str, zero_based: bool = False) -> list[list[int]]:
    rows, cols = LAYOUTS[layout]
    base = 0 if zero_based else 1
    return [[i // cols + base, i % cols + base] for i in range(rows * cols)]


class GridSolver:
    """Solve grid puzzles with one model bundle (None = the bundled demo model)."""

    def __init__(self, bundle: str | os.PathLike | None = None, device: str = "auto", precision: str | None = None,
                 threads: int | None = None, calibration: str | os.PathLike | None = None,
                 selector: str | os.PathLike | None = None, k_unknown: str = "auto",
                 bundle_calibration: bool = True):
        """``calibration`` / ``selector``: a grid calibration or selector file to use instead of the bundle's
        (``grid_calibration.json``, ``grid_selector.json``); ``bundle_calibration=False`` leaves the bundle's
        out (e.g. while fitting new ones). ``k_unknown`` chooses the k-unknown rule: "selector" (the learned
        selector), "rule" (the calibrated rule, else the largest gap) or "auto" (the selector when there is one)."""
        if k_unknown not in K_UNKNOWN:
            raise ClipMatchError(f"k_unknown must be one of {', '.join(K_UNKNOWN)}, got {k_unknown!r}")
        self.encoder = Encoder.load(bundle, device=device, precision=precision, threads=threads)
        use_bundle = bundle_calibration
        self.calibration = self._load(Calibration, calibration, CALIBRATION_NAME, use_bundle)
        self.selector = self._load(Selector, selector, SELECTOR_NAME, use_bundle) if k_unknown != "rule" else None
        if k_unknown == "selector" and self.selector is None:
            raise ClipMatchError(f"k_unknown='selector': {self.encoder.bundle.path} has no {SELECTOR_NAME}; fit one with "
                                 "`clip-match eval-grid VALID --fit-selector BUNDLE/grid_selector.json`")
        self.tile_crop = self.calibration.tile_crop if self.calibration else 1.0  # share of each tile's side encoded
        self.ocr_threads = threads or 1  # the prompt reader's: one thread reads a line in 10-30 ms
        self._prompts: PromptReader | None = None
        self._prompts_lock = threading.Lock()  # a server's first requests must not each load the OCR model

    def _load(self, kind: type, path: str | os.PathLike | None, name: str, use_bundle: bool):
        """A grid calibration or selector for this model: ``path``, else the bundle's file ``name``, else none."""
        if path is None:
            path = self.encoder.bundle.optional_file(name) if use_bundle else None
            if path is None:
                return None
        loaded = kind.load(path)
        if loaded.fingerprint != self.encoder.fingerprint:
            raise ClipMatchError(f"{path}: calibrated for model {loaded.fingerprint[:12]}, "
                                 f"not this bundle's {self.encoder.fingerprint[:12]}")
        return loaded

    def solve(self, image_or_tiles: ImageInput | Sequence[ImageInput], prompt: str | ImageInput | None = None,
              layout: str = "auto", k: int | None = None, threshold: float | None = None,
              zero_based: bool = False, prompt_pattern: str | re.Pattern | TimedPattern | None = None) -> GridResult:
        """Score every tile (cropped to ``tile_crop``) against ``prompt`` (a str is a text; a path,
        bytes, PIL image or array is an example image, encoded whole; None: read from the screenshot,
        with ``prompt_pattern``'s one named group as the target when given) and choose: top-``k`` if
        given, else ``threshold``, else the calibrated rule."""
        reading = None
        if prompt is None:
            if isinstance(image_or_tiles, (list, tuple)):
                raise ClipMatchError("reading the prompt needs the whole screenshot, not its tiles; give the prompt "
                                     "(--text or --example)")
            label = _label(image_or_tiles, "puzzle image")
            image_or_tiles = _open(image_or_tiles, label)
            tiles, grid = self._cut(image_or_tiles, label, layout)
            reading = self.read_prompt(image_or_tiles, grid, prompt_pattern, label)
            prompt = reading.prompt
        elif prompt_pattern is not None:
            raise ClipMatchError("a prompt pattern (--prompt-pattern) applies when the prompt is read from the "
                                 "screenshot, not with a prompt given")
        else:
            tiles, grid = self.tiles(image_or_tiles, layout)
        scores = self.scores(crop_margins(tiles, self.tile_crop), prompt)
        return self.result(scores, grid, k, threshold, zero_based, reading)

    def result(self, scores: np.ndarray, grid: Grid, k: int | None = None, threshold: float | None = None,
               zero_based: bool = False, reading: PromptReading | None = None) -> GridResult:
        """The answer for tiles of ``grid`` that scored ``scores``: the tiles chosen (`choose`), and the
        prompt ``reading`` when the prompt was read. Public for the server, which encodes in its batcher."""
        chosen, rule = self.choose(scores, k, threshold)
        positions = tile_positions(grid.layout, zero_based)
        coordinates = [positions[i] for i in np.flatnonzero(chosen).tolist()]
        read = {} if reading is None else {
            "prompt_source": reading.source, "prompt": reading.prompt if isinstance(reading.prompt, str) else None,
            "prompt_read": reading.text, "prompt_box": list(reading.box) if reading.box else None}
        return GridResult(grid.layout, coordinates, scores.tolist(), chosen.tolist(), rule, grid.method, zero_based,
                          self.tile_crop, **read)

    def read_prompt(self, image: Image.Image, grid: Grid, pattern: str | re.Pattern | TimedPattern | None = None,
                    label: str = "puzzle image") -> PromptReading:
        """The prompt of a screenshot whose tiles ``grid`` holds (the OCR model loads on first use);
        errors name ``label``."""
        with self._prompts_lock:
            if self._prompts is None:
                self._prompts = PromptReader(self.ocr_threads)
        compiled = compile_pattern(pattern) if isinstance(pattern, str) else pattern
        try:
            return self._prompts.read(image, grid, compiled)
        except ClipMatchError as error:
            raise type(error)(f"{label}: {error}") from None

    def tiles(self, image_or_tiles: ImageInput | Sequence[ImageInput], layout: str = "auto") -> tuple[list, Grid]:
        """The tile images (row-major) and the grid they came from."""
        if isinstance(image_or_tiles, (list, tuple)):
            count = len(image_or_tiles)
            if count not in TILE_COUNTS:
                raise ClipMatchError(f"got {count} tile images; a 2x3 grid needs 6 and a 3x3 grid 9")
            if layout not in ("auto", TILE_COUNTS[count]):
                check_layout(layout)
                raise ClipMatchError(f"got {count} tile images, which make a {TILE_COUNTS[count]} grid, not {layout}")
            tiles = [_open(tile, f"tiles[{i}]") for i, tile in enumerate(image_or_tiles)]
            for i, tile in enumerate(tiles):
                if min(tile.size) < MIN_TILE:
                    raise ClipMatchError(f"tiles[{i}] is {tile.width}x{tile.height} px; tiles need at least {MIN_TILE} px")
            return tiles, Grid(TILE_COUNTS[count], [], [], "tiles given")
        return self._cut(_open(image_or_tiles, "puzzle image"), _label(image_or_tiles, "puzzle image"), layout)

    def _cut(self, image: Image.Image, label: str, layout: str) -> tuple[list, Grid]:
        try:
            grid = find_grid(image, layout)
            return cut_tiles(image, grid), grid
        except ClipMatchError as error:  # the grid's faults, said of the image they are in
            raise ClipMatchError(f"{label}: {error}") from None

    def scores(self, tiles: list[Image.Image], prompt: str | ImageInput) -> np.ndarray:
        """Cosine similarity of each tile to the prompt; all tiles go through one encoder call."""
        if isinstance(prompt, str):
            for message in self.check_text(prompt):
                warnings.warn(message, stacklevel=3)
            query = self.encoder.encode_texts([prompt.strip()])[0]
            tile_features = self.encoder.encode_images(tiles, batch_size=len(tiles))
        else:
            example = _open(prompt, "example image")
            features = self.encoder.encode_images([*tiles, example], batch_size=len(tiles) + 1)
            tile_features, query = features[:-1], features[-1]
        return tile_features @ query

    def check_text(self, text: str) -> list[str]:
        """A text prompt's warnings (truncated to the context length); an empty one is an error. Public
        for the server, which answers the warnings instead of issuing them."""
        if not strip_invisible(text).strip():
            raise ClipMatchError("the prompt is empty: give a text such as '雨伞' or an example image")
        if self.encoder.count_truncated([text]):
            return [f"the prompt exceeds the context length of {self.encoder.context_length} tokens and was truncated"]
        return []

    def choose(self, scores: np.ndarray, k: int | None = None, threshold: float | None = None) -> tuple[np.ndarray, str]:
        """The chosen-tile mask and the rule's name."""
        if k is not None:
            return top_k(scores, k), f"top-{k}"
        if threshold is not None:
            return by_threshold(scores, check_threshold(threshold)), f"threshold {float(threshold):g}"
        rule, name = self.k_unknown_rule()
        return rule.select(scores), name

    def k_unknown_rule(self) -> tuple[Selector | SelectionRule, str]:
        """What chooses the tiles when k is not known, and its name: the learned selector, else the
        calibrated rule, else the largest gap."""
        if self.selector is not None:
            return self.selector, "learned selector"
        if self.calibration is not None:
            rule = self.calibration.rule
            return rule, f"calibrated {rule.kind}" + (f" {rule.value:g}" if rule.kind != "gap" else "")
        return SelectionRule("gap"), "largest gap (uncalibrated)"


def _open(item: ImageInput, label: str) -> Image.Image:
    """Load an image input; paths name themselves in errors, other inputs are called ``label``."""
    return open_image(item, name=None if isinstance(item, (str, os.PathLike)) else label)


def _label(item: ImageInput, label: str) -> str:
    return str(item) if isinstance(item, (str, os.PathLike)) else label
