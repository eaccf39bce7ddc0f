"""Move labels between the annotation store and Chinese-CLIP's TSV/JSONL training format.

Export hands every labelled image to `clip_match.data.prepare.write_dataset` keyed by its path
relative to IMAGE_DIR, so image ids stay stable across exports and each label becomes one JSONL
line with all its images. Import unpacks an existing dataset's images into DATASET_DIR/images
(named by content hash, so an image in two splits is one file) and attaches its texts as labels.

A puzzle-mode store exports its answered puzzles instead: every tile with a text (the prompt on the
matching tiles, a tile's own labels) becomes a PNG image of the TSV, split by puzzle so that no
puzzle has tiles in two splits, plus the puzzles themselves, with their answers, for `clip-match
eval-grid`: ``puzzles/`` (the images as they are), ``{split}_puzzles.jsonl`` and ``puzzles.jsonl``.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Iterator, Sequence

from PIL import Image

from ..data.formats import decode_b64, imgs_path, read_jsonl, read_tsv, texts_path, write_split
from ..data.prepare import SPLIT_NAMES, deal_splits, write_dataset
from ..errors import ClipMatchError, where
from ..fsutil import atomic_file, ensure_dir
from ..grid.tiles import LAYOUTS
from ..runtime.images import FORMATS, decode_image, open_image
from .scan import resolve_inside, scan_images
from .store import DB_NAME, LabelStore, clean_label

IMPORTED_IMAGES = "images"
PUZZLE_IMAGES = "puzzles"
PUZZLES_FILE = "puzzles.jsonl"
PNG_MODES = ("1", "L", "LA", "P", "RGB", "RGBA")


def open_store(dataset_dir: str | os.PathLike) -> tuple[LabelStore, Path]:
    """An existing annotation store and the IMAGE_DIR it was made for."""
    if not (Path(dataset_dir) / DB_NAME).is_file():
        raise ClipMatchError(f"{dataset_dir}: no annotations here (expected {DB_NAME}; start with `clip-match annotate`)")
    store = LabelStore(dataset_dir)
    image_dir = store.get_meta("image_dir")
    if image_dir is None:
        raise ClipMatchError(f"{store.path}: no image folder recorded")
    return store, Path(image_dir)


def attach_image_dir(store: LabelStore, image_dir: Path) -> dict:
    """Scan ``image_dir`` into ``store`` (skipping the store's own folder); returns counts."""
    image_dir = Path(os.path.realpath(image_dir))
    result = scan_images(image_dir, exclude=store.dataset_dir, known=store.known_images())
    store.sync_scan(result.images, result.rejects)
    store.set_meta("image_dir", str(image_dir))
    return {"images": len(result.images), "skipped": len(result.rejects)}


def export_dataset(
    dataset_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Write ``{split}_imgs.tsv`` / ``{split}_texts.jsonl`` for every labelled image (every answered
    puzzle's tiles in puzzle mode); returns counts."""
    store, image_dir = open_store(dataset_dir)
    if store.mode == "puzzles":
        return export_puzzles(store, image_dir, Path(out_dir), split, seed, overwrite)
    labelled = store.labelled_images()
    if not labelled:
        raise ClipMatchError(f"{dataset_dir}: no labelled images to export")
    missing = store.missing_labelled()
    if missing:
        print(f"warning: {len(missing)} labelled image(s) no longer in {image_dir} are left out, "
              f"e.g. {missing[0]}", file=sys.stderr)
    records = [(path, resolve_inside(image_dir, path), labels) for path, labels in labelled]
    summary = write_dataset(records, out_dir, split=split, seed=seed, overwrite=overwrite)
    summary["missing"] = len(missing)
    return summary


def export_puzzles(store: LabelStore, image_dir: Path, out_dir: Path, split: Sequence[float] = (0.8, 0.1, 0.1),
                   seed: int = 0, overwrite: bool = False) -> dict:
    """The tiles of every answered puzzle with their texts, and the puzzles for eval-grid (see above).

    Puzzles are shuffled with ``seed`` and dealt to the splits; tile image ids number the tiles in puzzle
    path order, text ids the sorted distinct texts, so the same answers always export to the same files.
    Everything is written to a staging folder first and moved into place when complete."""
    puzzles = store.answered_puzzles()
    if not puzzles:
        raise ClipMatchError(f"{store.dataset_dir}: no answered puzzles to export")
    names = [p for s in SPLIT_NAMES for p in (imgs_path(out_dir, s), texts_path(out_dir, s), _puzzles_path(out_dir, s))]
    existing = [p for p in [*names, out_dir / PUZZLES_FILE, out_dir / PUZZLE_IMAGES] if p.exists()]
    if existing and not overwrite:
        raise ClipMatchError(f"{existing[0]}: already exists (pass --overwrite to replace it)")
    missing = store.missing_labelled()
    if missing:
        print(f"warning: {len(missing)} answered puzzle(s) no longer in {image_dir} are left out, e.g. {missing[0]}",
              file=sys.stderr)

    split_of = deal_splits([row["path"] for row in puzzles], split, seed)
    tiles = [(row, number, texts) for row in puzzles for number, texts in _tile_texts(row)]
    text_ids = {text: i for i, text in enumerate(sorted({t for _, _, texts in tiles for t in texts}))}

    ensure_dir(out_dir)
    stage = Path(tempfile.mkdtemp(prefix=".export.", suffix=".tmp", dir=out_dir))
    summary: dict = {"out_dir": str(out_dir), "puzzles": len(puzzles), "images": len(tiles), "texts": len(text_ids),
                     "splits": {}}
    try:
        lines = []
        for row in puzzles:
            target = stage / PUZZLE_IMAGES / row["path"]
            ensure_dir(target.parent)
            try:
                shutil.copyfile(resolve_inside(image_dir, row["path"]), target)
            except OSError as error:
                raise ClipMatchError(f"{image_dir / row['path']}: cannot read: {error.strerror or error}") from None
            lines.append(_puzzle_line(row, split_of[row["path"]]))
        _write_lines(stage / PUZZLES_FILE, lines)
        for name in SPLIT_NAMES:
            chosen = [(image_id, tile) for image_id, tile in enumerate(tiles) if split_of[tile[0]["path"]] == name]
            pairs: dict[str, list[int]] = {}
            for image_id, (_, _, texts) in chosen:
                for text in texts:
                    pairs.setdefault(text, []).append(image_id)
            write_split(stage, name, _tile_images(chosen, image_dir),
                        sorted((text_ids[text], text, ids) for text, ids in pairs.items()))
            _write_lines(_puzzles_path(stage, name), [line for line in lines if line["split"] == name])
            summary["splits"][name] = {"puzzles": sum(line["split"] == name for line in lines), "images": len(chosen),
                                       "texts": len(pairs), "pairs": sum(map(len, pairs.values()))}
        for path in [*names, out_dir / PUZZLES_FILE]:
            os.replace(stage / path.name, path)
        if (out_dir / PUZZLE_IMAGES).exists():
            os.replace(out_dir / PUZZLE_IMAGES, stage / "replaced")
        os.replace(stage / PUZZLE_IMAGES, out_dir / PUZZLE_IMAGES)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    summary["missing"] = len(missing)
    return summary


def _write_lines(path: Path, lines: list[dict]) -> None:
    with atomic_file(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)


def _puzzles_path(data_dir: Path, split: str) -> Path:
    return data_dir / f"{split}_puzzles.jsonl"


def _tile_texts(row: dict) -> Iterator[tuple[int, list[str]]]:
    """(tile number, its texts) of a puzzle row's tiles that have any: the prompt where the tile matches,
    then the tile's own labels."""
    puzzle = row["puzzle"]
    for number in range(1, len(puzzle["boxes"]) + 1):
        texts = ([puzzle["prompt"]] if number in puzzle["answer"] else []) + puzzle["tiles"].get(str(number), [])
        if texts:
            yield number, list(dict.fromkeys(texts))


def _tile_images(chosen: list[tuple[int, tuple]], image_dir: Path) -> Iterator[tuple[int, bytes]]:
    """(image id, PNG bytes) of each chosen tile, each puzzle decoded once."""
    picture, path = None, None
    for image_id, (row, number, _) in chosen:
        if row["path"] != path:
            path = row["path"]
            picture = open_image(resolve_inside(image_dir, path), name=path)
            if picture.mode not in PNG_MODES:  # e.g. a CMYK JPEG
                picture = picture.convert("RGB")
        buffer = io.BytesIO()
        picture.crop(tuple(row["puzzle"]["boxes"][number - 1])).save(buffer, "PNG")
        yield image_id, buffer.getvalue()


def _puzzle_line(row: dict, split: str) -> dict:
    """A puzzles.jsonl line as eval-grid reads it (answer as 1-based [row, col]), with its split."""
    puzzle = row["puzzle"]
    cols = LAYOUTS[puzzle["layout"]][1]
    answer = [[(tile - 1) // cols + 1, (tile - 1) % cols + 1] for tile in puzzle["answer"]]
    return {"image": f"{PUZZLE_IMAGES}/{row['path']}", "prompt": puzzle["prompt"], "layout": puzzle["layout"],
            "k": len(answer), "answer": answer, "split": split}


def import_dataset(data_dir: str | os.PathLike, dataset_dir: str | os.PathLike) -> dict:
    """Unpack a TSV/JSONL dataset into a new DATASET_DIR to keep labelling it; returns counts."""
    data_dir, dataset_dir = Path(data_dir), Path(dataset_dir)
    splits = [s for s in SPLIT_NAMES if imgs_path(data_dir, s).is_file()]
    if not splits:
        raise ClipMatchError(f"{data_dir}: no {{train,valid,test}}_imgs.tsv to import")
    if (dataset_dir / DB_NAME).exists():
        raise ClipMatchError(f"{dataset_dir / DB_NAME}: already exists; import into a new DATASET_DIR")
    image_dir = dataset_dir / IMPORTED_IMAGES
    labels: dict[str, list[str]] = defaultdict(list)
    for split in splits:
        names = {line.image_id: _unpack(line.b64, image_dir, where(imgs_path(data_dir, split), line.line))
                 for line in read_tsv(imgs_path(data_dir, split))}
        if texts_path(data_dir, split).is_file():
            for line in read_jsonl(texts_path(data_dir, split)):
                place = where(texts_path(data_dir, split), line.line)
                try:  # checked before the label store exists, so a bad text leaves no half-made DATASET_DIR
                    text = clean_label(line.text)
                except ClipMatchError as error:
                    raise ClipMatchError(f"{place}: {error}") from None
                for image_id in line.image_ids:
                    if image_id not in names:
                        raise ClipMatchError(f"{place}: image_id {image_id} is not in {imgs_path(data_dir, split).name}")
                    labels[names[image_id]].append(text)
    store = LabelStore(dataset_dir)
    counts = attach_image_dir(store, image_dir)
    labelled = store.import_labels({path: texts for path, texts in labels.items() if texts})
    return {"image_dir": str(image_dir), "images": counts["images"], "labelled": labelled, "splits": splits}


def _unpack(b64: bytes, image_dir: Path, source: str) -> str:
    """Write one TSV image to ``image_dir`` under its content hash; returns the file name.

    The image is fully decoded first, so one the labelling page could not show (corrupt,
    truncated, over the pixel limit) stops the import before the label store exists."""
    data = decode_b64(b64, source)
    decode_image(data, source).close()
    # the format, from the header (decoding may convert)
    with Image.open(io.BytesIO(data), formats=FORMATS) as image:
        extension = (image.format or "img").lower()
    name = f"{hashlib.sha256(data).hexdigest()[:20]}.{'jpg' if extension == 'jpeg' else extension}"
    target = image_dir / name
    if not target.exists():
        with atomic_file(target, "wb") as handle:
            handle.write(data)
    return name
