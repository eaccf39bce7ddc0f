"""Puzzle mode's inputs: each puzzle image cut into tiles, and the prompts file.

Tiles are found by the grid finder of `clip-match grid` (`clip_match.grid.tiles.find_grid`, screenshots
included), once per file version and asked-for layout (the result is kept in the store). An image without
a grid is listed as skipped with the reason, like a file that is not an image; a prompts file that names
an image outside PUZZLE_DIR or missing from it, holds a malformed line, or gives a layout the image does not
have stops the start with an error naming the line.

Prompts file lines: ``{"image": "0001.png", "prompt": "雨伞"}`` with an optional ``"layout"`` (2x3 or 3x3);
images relative to the file's folder. Other fields, such as eval-grid's ``k`` and ``answer``, are ignored:
the answer is what the annotator marks.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..errors import ClipMatchError, where
from ..grid.tiles import LAYOUTS, check_layout, find_grid
from ..jsonio import parse_object
from ..runtime.images import open_image
from .scan import ScannedImage, resolve_inside, scan_images
from .store import LabelStore, PuzzleGrid, clean_label


@dataclass(frozen=True)
class PromptLine:
    prompt: str
    layout: str | None
    place: str  # file:line, for errors


def read_prompts(path: str | os.PathLike, image_dir: Path) -> dict[str, PromptLine]:
    """Relative image path (under ``image_dir``) -> its prompt line; errors name the line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ClipMatchError(f"{path}: cannot read the prompts file: {error}") from None
    root, base = os.path.realpath(image_dir), os.path.realpath(path.parent)
    prompts: dict[str, PromptLine] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        place = where(path, number)
        record = parse_object(line, place)
        image, prompt, layout = record.get("image"), record.get("prompt"), record.get("layout")
        if not isinstance(image, str) or not image.strip():
            raise ClipMatchError(f"{place}: field 'image' must be an image file name")
        if not isinstance(prompt, str):
            raise ClipMatchError(f"{place}: field 'prompt' must be a string")
        if layout is not None and layout not in LAYOUTS:
            raise ClipMatchError(f"{place}: field 'layout' must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        try:
            prompt = clean_label(prompt)
        except ClipMatchError as error:
            raise ClipMatchError(f"{place}: prompt: {error}") from None
        full = os.path.normpath(os.path.join(base, image))
        if os.path.commonpath([root, full]) != root:
            raise ClipMatchError(f"{place}: image {image!r} is not in {image_dir}")
        relative = os.path.relpath(full, root).replace(os.sep, "/")
        if relative in prompts:
            raise ClipMatchError(f"{place}: image {image!r} has a prompt already, at {prompts[relative].place}")
        prompts[relative] = PromptLine(prompt, layout, place)
    return prompts


def attach_puzzle_dir(store: LabelStore, image_dir: Path, layout: str = "auto",
                      prompts_file: str | os.PathLike | None = None) -> dict:
    """Scan PUZZLE_DIR into ``store`` as puzzles: each image's grid (``layout``, or its prompts line's), images
    without one listed as skipped, prompts from ``prompts_file`` for puzzles that have none; returns counts."""
    if layout != "auto":
        check_layout(layout)
    image_dir = Path(os.path.realpath(image_dir))
    prompts = read_prompts(prompts_file, image_dir) if prompts_file is not None else {}
    result = scan_images(image_dir, exclude=store.dataset_dir, known=store.known_images())
    own = os.path.relpath(os.path.realpath(prompts_file), image_dir).replace(os.sep, "/") if prompts_file else None
    rejects = [(path, reason) for path, reason in result.rejects if path != own]
    listed = {image.path for image in result.images} | {path for path, _ in rejects}
    for relative, line in prompts.items():
        if relative not in listed:
            raise ClipMatchError(f"{line.place}: no image {relative!r} in {image_dir}")

    stored = store.puzzle_grid_keys()
    grids: dict[str, PuzzleGrid] = {}
    puzzles: list[ScannedImage] = []
    for image in tqdm(result.images, desc="finding grids", unit="puzzle", disable=None, leave=False):
        line = prompts.get(image.path)
        wanted = line.layout if line is not None and line.layout else layout
        key = f"{image.size}-{image.mtime_ns}-{wanted}"
        if stored.get(image.path) != key:
            found = _grid(resolve_inside(image_dir, image.path), wanted, key, line)
            if isinstance(found, str):
                rejects.append((image.path, found))
                continue
            grids[image.path] = found
        puzzles.append(image)
    store.sync_scan(puzzles, rejects)
    kept = {image.path for image in puzzles}
    store.sync_puzzles(grids, {path: line.prompt for path, line in prompts.items() if path in kept})
    store.set_meta("image_dir", str(image_dir))
    return {"images": len(puzzles), "skipped": len(rejects), "prompts": len(prompts)}


def _grid(path: Path, layout: str, key: str, line: PromptLine | None) -> PuzzleGrid | str:
    """The puzzle's grid, or why it has none (the image is then skipped). A layout from the prompts file
    that the image does not have, where another layout is found, is an error naming the line."""
    try:
        picture = open_image(path)
    except ClipMatchError as error:  # (the scan read only its header)
        return str(error).removeprefix(f"{path}: ")
    try:
        grid = find_grid(picture, layout)
    except ClipMatchError as error:
        reason = f"no grid found: {error}"
        if line is None or line.layout is None:
            return reason
        try:
            other = find_grid(picture, "auto")
        except ClipMatchError:
            return reason
        raise ClipMatchError(f"{line.place}: layout {layout} disagrees with the image, which shows a "
                             f"{other.layout} grid ({error})") from None
    return PuzzleGrid(key, grid.layout, grid.boxes(), grid.method)
