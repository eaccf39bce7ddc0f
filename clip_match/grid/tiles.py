"""Find the tiles of a 2x3 / 3x3 puzzle image from the gap lines between them.

Gap lines are rows (or columns) of one shade across the whole image, judged on the grey
levels (a third of the work of RGB): all their pixels lie within 30 levels (JPEG noise) and
their mean is within 12 levels of the gap shade (the commonest shade shared by flat rows and
flat columns). A grid of n bands along an axis is *supported*
when each of its n - 1 evenly spaced boundaries falls in (or within 12% of a cell of) a gap run;
tiles are the bands between the matched runs. An axis with no gap lines falls back to an equal
split of the image. Layouts are written rows x columns.

A screenshot frames the grid with more: a header with the prompt (often on a tinted bar), buttons
below, page margins. Such an image -- one whose rows of content include a band less than half as
tall as the tallest (a line of text, a row of buttons), judged across the middle half of the image
or across all of it (text at one side) -- is searched for the grid inside it ("gap lines, framed").
*Content bands* are the runs of rows (across the middle half: a margin of the gaps' shade beside
the widget's is not flat across the whole width), then, within the grid's rows, of columns, that are
not flat, each pixel first replaced by the median of it and its two neighbours along the line (JPEG
noise would break a thin gap line). The grid is a run of bands that R (then C) equal, evenly spaced
tiles explain, every band edge on a tile edge; a gap that JPEG blurred away leaves two tiles in one
band, and their edge is placed by the even spacing ("framed, gaps inferred"). A band left out at
least 0.8 of a tile tall (or wide) is taken for more of the grid, and such a reading is refused;
tiles must be within 2:1 of square. When no grid is found in such an image, that is an error:
splitting the whole screenshot would cut tiles out of its header.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import ClipMatchError
from ..runtime.ocr import runs

MIN_TILE = 16          # px: smaller tiles cannot be recognised
_FLAT_RANGE = 30       # grey levels a gap line may span (JPEG noise)
_FLAT_STRICT = 20      # the same, when a screenshot's grid is not found with _FLAT_RANGE
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
    method: str            # "gap lines", "gap lines, framed", "framed, gaps inferred", "equal split" or
                           # "gap lines + equal split"

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
    middle = gray[:, gray.shape[1] // 4:gray.shape[1] - gray.shape[1] // 4]
    if not any(heights and min(heights) < 0.5 * max(heights)
               for heights in ([b - a for a, b in _content_bands(part, 1)] for part in (middle, gray))):
        whole = _whole_grid(gray, layout)
        if whole.method == "gap lines":
            return whole
        grid = _framed_grid(gray, layout)  # (a frame whose text lies outside the middle, on bars as wide as it)
        return grid if grid is not None and grid.method == "gap lines, framed" else whole
    grid = _framed_grid(gray, layout)
    whole = _seen_whole_grid(gray, layout)
    if whole is not None and (grid is None or grid.layout != whole.layout):
        return whole  # a bare puzzle whose tile rows merely looked like bands (a 3x3 read as 2x3 + footer)
    if grid is None:
        raise ClipMatchError(f"image ({image.width}x{image.height}) holds more than a grid (text or buttons around "
                             f"it), but no {'2x3 or 3x3' if layout == 'auto' else layout} grid of tiles was found in "
                             "it; crop the grid out, or give its tiles")
    return grid


def _seen_whole_grid(gray: np.ndarray, layout: str) -> Grid | None:
    """The whole image's grid when its gap lines show every row and column, else None."""
    try:
        whole = _whole_grid(gray, layout)
    except ClipMatchError:
        return None
    return whole if whole.method == "gap lines" else None


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
    """The grid inside a larger image (see the module's docstring), or None. Of the readings found,
    the largest wins (a row of equal buttons reads as a tiny grid); among those of nearly its area,
    one whose every gap was seen, then the squarest tiles. Lines are flat within _FLAT_RANGE grey
    levels (JPEG noise), else, when that finds nothing, within _FLAT_STRICT: tiles of pale, plain
    backgrounds beside pale gaps can look flat at the first, and break a row of tiles in two."""
    width = gray.shape[1]
    for flat_range in (_FLAT_RANGE, _FLAT_STRICT):
        row_bands = _content_bands(gray[:, width // 4:width - width // 4], 1, flat_range)
        found = []
        for name, (rows, cols) in LAYOUTS.items():
            if layout not in ("auto", name):
                continue
            for row_spans, rows_seen in _lattices(row_bands, rows):
                top, bottom = row_spans[0][0], row_spans[-1][1]
                for col_spans, cols_seen in _lattices(_content_bands(gray[top:bottom], 0, flat_range), cols):
                    tile_width = np.mean([b - a for a, b in col_spans])
                    tile_height = np.mean([b - a for a, b in row_spans])
                    if 0.5 <= tile_width / tile_height <= 2:
                        method = "gap lines, framed" if rows_seen and cols_seen else "framed, gaps inferred"
                        area = (bottom - top) * (col_spans[-1][1] - col_spans[0][0])
                        found.append((area, rows_seen and cols_seen, -abs(np.log(tile_width / tile_height)),
                                      Grid(name, row_spans, col_spans, method)))
        if found:
            largest = max(area for area, *_ in found)
            return max((item for item in found if item[0] >= 0.8 * largest), key=lambda item: item[1:3])[3]
    return None


def _content_bands(gray: np.ndarray, axis: int, flat_range: float = _FLAT_RANGE) -> list[Span]:
    """Runs (at least 4 px) of lines that are not flat: rows (``axis`` 1) or columns (``axis`` 0).
    Each pixel is first replaced by the median of it and its two neighbours along the line, so JPEG
    noise does not break a thin gap line, which would join two tiles' bands."""
    padded = np.pad(gray, [(1, 1) if line == axis else (0, 0) for line in (0, 1)], mode="edge")
    before, here, after = ((padded[:, i:i + gray.shape[1]] if axis == 1 else padded[i:i + gray.shape[0]])
                           for i in range(3))
    median = np.maximum(np.minimum(before, here), np.minimum(np.maximum(before, here), after))
    flat = median.max(axis=axis) - median.min(axis=axis) <= flat_range
    return [(a, b) for a, b in runs(~flat) if b - a >= 4]


def _lattices(bands: list[Span], n: int) -> list[tuple[list[Span], bool]]:
    """Every way ``n`` equal, evenly spaced tiles explain a run of consecutive bands: the tile spans and
    whether every gap between them was seen. The spacing is the median gap seen between the run's
    bands (none seen: 0), each band must start and end on tile edges (within 4 % of a tile, at least 3
    px), and no band outside the run may be 0.8 of a tile or more (more of the grid)."""
    out = []
    for first in range(len(bands)):
        for last in range(first, min(len(bands), first + n)):
            run = bands[first:last + 1]
            seen = [b[0] - a[1] for a, b in zip(run, run[1:])]
            gap = float(np.median(seen)) if seen else 0.0
            size = (run[-1][1] - run[0][0] - (n - 1) * gap) / n
            if size < MIN_TILE or (seen and max(seen) > 0.3 * size):
                continue
            starts = run[0][0] + np.arange(n) * (size + gap)
            tolerance = max(3.0, 0.04 * size)
            if any(np.abs(starts - a).min() > tolerance or np.abs(starts + size - b).min() > tolerance for a, b in run):
                continue
            if any(b - a >= 0.8 * size for a, b in bands[:first] + bands[last + 1:]):
                continue
            spans = []
            for start in starts:  # edges a band shows within 2 px of the even spacing keep their place
                a = min((a for a, _ in run), key=lambda a: abs(a - start))
                b = min((b for _, b in run), key=lambda b: abs(b - start - size))
                spans.append((a if abs(a - start) <= 2 else round(start),
                              b if abs(b - start - size) <= 2 else round(start + size)))
            out.append((spans, len(run) == n))
    return out


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


def _inner_runs(gaps: np.ndarray) -> tuple[int, int, list[Span]]:
    """Where the content starts and ends along an axis (past outer margins of gap shade) and the gap
    runs between."""
    gap_runs = runs(gaps)
    start = gap_runs[0][1] if gap_runs and gap_runs[0][0] == 0 else 0
    end = gap_runs[-1][0] if gap_runs and gap_runs[-1][1] == len(gaps) else len(gaps)
    return start, end, [run for run in gap_runs if run[0] > start and run[1] < end]


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
