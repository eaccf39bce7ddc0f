"""Find the tiles of a 2x3 / 3x3 puzzle image from the gap lines between them.

Gap lines are rows (or columns) of one shade across the whole image, judged on the grey
levels (a third of the work of RGB): all their pixels lie within 30 levels (JPEG noise) and
their mean is within 12 levels of the gap shade (the commonest shade shared by flat rows and
flat columns). A grid of n bands along an axis is *supported*
when each of its n - 1 evenly spaced boundaries falls in (or within 12% of a cell of) a gap run;
tiles are the bands between the matched runs. An axis with no gap lines falls back to an equal
split of the image. Layouts are written rows x columns.

A screenshot often frames the grid with bands above and below it (a header with the prompt, a row
of buttons) that break the even spacing and the flat columns. When the whole image does not show
a grid by its gap lines, the grid is looked for between such bands: the tallest stretch of rows,
bounded by flat rows, whose gap lines show the layout with every gap line inside parting tiles
(method "gap lines, framed"). A band left out that holds a run of content four fifths of a tile
tall or more is taken for more of the grid, and that stretch is refused.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import ClipMatchError

MIN_TILE = 16          # px: smaller tiles cannot be recognised
_FLAT_RANGE = 30       # grey levels a gap line may span (JPEG noise)
_LEVEL_TOL = 12        # distance of a gap line's mean to the gap shade
_TOLERANCE = 0.12      # boundary may miss its gap run by this share of a cell
_MAX_BANDS = 5
LAYOUTS: dict[str, tuple[int, int]] = {"2x3": (2, 3), "3x3": (3, 3)}  # rows x columns

Span = tuple[int, int]


@dataclass(frozen=True)
class Grid:
    layout: str
    rows: list[Span]       # pixel [start, end) of each tile row
    cols: list[Span]
    method: str            # "gap lines", "gap lines, framed", "equal split" or "gap lines + equal split"

    def boxes(self) -> list[tuple[int, int, int, int]]:
        """Tile boxes (left, top, right, bottom), row-major."""
        return [(c0, r0, c1, r1) for r0, r1 in self.rows for c0, c1 in self.cols]


def check_layout(layout: str) -> tuple[int, int]:
    """(rows, columns) of a layout name, or an error listing the valid names."""
    if layout not in LAYOUTS:
        raise ClipMatchError(f"unknown layout {layout!r}; layouts: {', '.join(LAYOUTS)} (rows x columns)")
    return LAYOUTS[layout]


def find_grid(image: Image.Image, layout: str = "auto") -> Grid:
    """Locate the tiles; ``layout`` "auto" detects 2x3 or 3x3. Errors name the detected layout."""
    if layout != "auto":
        check_layout(layout)
    if not image.width or not image.height:
        raise ClipMatchError(f"image ({image.width}x{image.height}) has no pixels")
    gray = np.asarray(image.convert("L"), dtype=np.float32)
    try:
        grid, error = _whole_grid(gray, layout), None
    except ClipMatchError as refusal:
        grid, error = None, refusal
    if grid is None or grid.method != "gap lines":
        framed = _framed_grid(gray, layout)
        if framed is not None:
            return framed
    if error is not None:
        raise error
    return grid


def _whole_grid(gray: np.ndarray, layout: str) -> Grid:
    """The grid that the whole image's gap lines show (equal split on an axis without any)."""
    height, width = gray.shape
    row_gaps, col_gaps = _gap_lines(gray)
    row_options = _supported_bands(row_gaps)  # {n: spans}, only n >= 2
    col_options = _supported_bands(col_gaps)
    detected = _describe(row_options, col_options)

    if layout == "auto":
        candidates = [name for name, (r, c) in LAYOUTS.items()
                      if (not row_options or r in row_options) and (not col_options or c in col_options)]
        if not candidates:
            raise ClipMatchError(f"image ({width}x{height}) looks like a {detected} grid; "
                                 f"supported layouts: {', '.join(LAYOUTS)}")
        layout = min(candidates, key=lambda name: _squareness(name, width, height, row_options, col_options))
    else:
        rows, cols = LAYOUTS[layout]
        if (row_options and rows not in row_options) or (col_options and cols not in col_options):
            raise ClipMatchError(f"image ({width}x{height}) is not a {layout} grid: its gap lines show {detected}")
    rows, cols = LAYOUTS[layout]
    row_spans = row_options.get(rows) or _equal(height, rows)
    col_spans = col_options.get(cols) or _equal(width, cols)
    method = {2: "gap lines", 1: "gap lines + equal split", 0: "equal split"}[(rows in row_options) + (cols in col_options)]
    grid = Grid(layout, row_spans, col_spans, method)
    _check_tile_size(grid, width, height)
    return grid


def _framed_grid(gray: np.ndarray, layout: str) -> Grid | None:
    """The grid inside a larger image: below a header and above a footer (bands of any content), beside
    margins of one shade each. Stretches of rows run from the end of one run of flat rows (across the
    whole width, or across its middle half, where the grid is) or the top, to the start of another or
    the bottom; tallest first, at least a third of the image. Each loses its flat margin columns and
    is searched for the layout by its gap lines: every gap line inside must be a boundary between
    tiles on both axes (a footer's spacer is not). A stretch that leaves out a run of content 0.8 of
    a tile tall or more (more tiles) is refused. None if no stretch shows the layout."""
    height, width = gray.shape
    middle = gray[:, width // 4:width - width // 4]
    flat_rows = middle.max(axis=1) - middle.min(axis=1) <= _FLAT_RANGE
    runs = _runs(flat_rows) + _runs(gray.max(axis=1) - gray.min(axis=1) <= _FLAT_RANGE)
    tops, bottoms = {0, *(end for _, end in runs)}, {height, *(start for start, _ in runs)}
    stretches = sorted(((top, bottom) for top in tops for bottom in bottoms if bottom - top >= height / 3),
                       key=lambda stretch: stretch[0] - stretch[1])
    for top, bottom in stretches:
        part = gray[top:bottom]
        flat_cols = part.max(axis=0) - part.min(axis=0) <= _FLAT_RANGE
        left = int(np.argmin(flat_cols)) if flat_cols[0] else 0
        right = width - int(np.argmin(flat_cols[::-1])) if flat_cols[-1] else width
        if right - left < width / 2:
            continue
        gaps = _gap_lines(part[:, left:right])
        shape = tuple(len(_inner_runs(axis_gaps)[2]) + 1 for axis_gaps in gaps)  # bands if every gap line parts tiles
        name = next((name for name, bands in LAYOUTS.items() if bands == shape and layout in ("auto", name)), None)
        if name is None:
            continue
        (rows, cols), (row_options, col_options) = shape, map(_supported_bands, gaps)
        if rows not in row_options or cols not in col_options:
            continue
        grid = Grid(name, [(a + top, b + top) for a, b in row_options[rows]],
                    [(a + left, b + left) for a, b in col_options[cols]], "gap lines, framed")
        tile_height = min(b - a for a, b in grid.rows)
        left_out = np.concatenate([flat_rows[:grid.rows[0][0]], [True], flat_rows[grid.rows[-1][1]:]])
        if min(min(b - a for a, b in grid.cols), tile_height) < MIN_TILE or any(
                b - a >= 0.8 * tile_height for a, b in _runs(~left_out)):
            continue
        return grid
    return None


def cut_tiles(image: Image.Image, grid: Grid) -> list[Image.Image]:
    return [image.crop(box) for box in grid.boxes()]


def crop_margins(tiles: list[Image.Image], keep: float) -> list[Image.Image]:
    """Each tile's centre, ``keep`` of its width and height (1.0: the tiles as they are)."""
    if not 0 < keep <= 1:
        raise ClipMatchError(f"tile crop must be in (0, 1] (the share of each side kept), got {keep!r}")
    if keep == 1:
        return list(tiles)
    out = []
    for tile in tiles:
        width, height = max(1, round(tile.width * keep)), max(1, round(tile.height * keep))
        left, top = (tile.width - width) // 2, (tile.height - height) // 2
        out.append(tile.crop((left, top, left + width, top + height)))
    return out


def _gap_lines(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of gap rows and gap columns (all False when the image has no flat lines)."""
    stats = []
    for axis in (1, 0):
        spread = gray.max(axis=axis) - gray.min(axis=axis)
        stats.append((gray.mean(axis=axis), spread <= _FLAT_RANGE))
    gap_level = _gap_level(*(mean[flat] for mean, flat in stats))
    if gap_level is None:
        return np.zeros(gray.shape[0], bool), np.zeros(gray.shape[1], bool)
    row_gaps, col_gaps = (flat & (np.abs(mean - gap_level) <= _LEVEL_TOL) for mean, flat in stats)
    return row_gaps, col_gaps


def _gap_level(row_levels: np.ndarray, col_levels: np.ndarray) -> float | None:
    """The shade of the gaps: gap rows and gap columns cross, so prefer a shade flat lines of both
    directions share (a tile row of plain background is flat in one direction only); the most
    common such shade wins. None when no line is flat."""
    levels = np.concatenate([row_levels, col_levels])
    if len(levels) == 0:
        return None
    near_rows, near_cols = _within_tolerance(levels, row_levels), _within_tolerance(levels, col_levels)
    support = (near_rows + near_cols) * ((near_rows > 0) & (near_cols > 0) | (len(row_levels) == 0)
                                         | (len(col_levels) == 0))
    return float(levels[int(np.argmax(support))])


def _within_tolerance(levels: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """For each level, how many of ``pool`` lie within _LEVEL_TOL of it (sorted search: memory linear in
    the image's side, where a table of all pairs grew with its square)."""
    pool = np.sort(pool)
    return np.searchsorted(pool, levels + _LEVEL_TOL, "right") - np.searchsorted(pool, levels - _LEVEL_TOL, "left")


def _runs(mask: np.ndarray) -> list[Span]:
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def _inner_runs(gaps: np.ndarray) -> tuple[int, int, list[Span]]:
    """Where the content starts and ends along an axis (past outer margins of gap shade) and the gap
    runs between."""
    runs = _runs(gaps)
    start = runs[0][1] if runs and runs[0][0] == 0 else 0
    end = runs[-1][0] if runs and runs[-1][1] == len(gaps) else len(gaps)
    return start, end, [run for run in runs if run[0] > start and run[1] < end]


def _supported_bands(gaps: np.ndarray) -> dict[int, list[Span]]:
    """For each band count n >= 2 whose evenly spaced boundaries all meet gap runs: the band spans."""
    start, end, inner = _inner_runs(gaps)
    options = {}
    for n in range(2, _MAX_BANDS + 1):
        cell = (end - start) / n
        chosen = []
        for j in range(1, n):
            boundary = start + j * cell
            near = [run for run in inner if run[0] - _TOLERANCE * cell <= boundary <= run[1] + _TOLERANCE * cell]
            if not near:
                break
            chosen.append(min(near, key=lambda run: abs((run[0] + run[1]) / 2 - boundary)))
        if len(chosen) == n - 1 and len(set(chosen)) == n - 1:
            edges = [start, *[v for run in chosen for v in run], end]
            options[n] = list(zip(edges[::2], edges[1::2]))
    return options


def _equal(length: int, n: int) -> list[Span]:
    cuts = np.linspace(0, length, n + 1).round().astype(int).tolist()
    return list(zip(cuts[:-1], cuts[1:]))


def _squareness(layout: str, width: int, height: int, row_options: dict, col_options: dict) -> float:
    """How far the layout's average tile is from square (0 = square): breaks ties between layouts."""
    rows, cols = LAYOUTS[layout]
    spans_r = row_options.get(rows) or _equal(height, rows)
    spans_c = col_options.get(cols) or _equal(width, cols)
    tile_h = np.mean([b - a for a, b in spans_r])
    tile_w = np.mean([b - a for a, b in spans_c])
    return abs(np.log(tile_w / tile_h))


def _describe(row_options: dict, col_options: dict) -> str:
    """The layout the gap lines suggest (the finest grid they support), e.g. "2x3", or "no gap lines"."""
    if not row_options and not col_options:
        return "no gap lines"
    return f"{max(row_options, default='?')}x{max(col_options, default='?')}"


def _check_tile_size(grid: Grid, width: int, height: int) -> None:
    smallest = min(min(b - a for a, b in grid.rows), min(b - a for a, b in grid.cols))
    if smallest < MIN_TILE:
        raise ClipMatchError(f"image ({width}x{height}) as a {grid.layout} grid ({grid.method}) has tiles "
                             f"{smallest} px wide or high; tiles need at least {MIN_TILE} px")
