"""Move labels between the annotation store and Chinese-CLIP's TSV/JSONL training format.

Export hands every labelled image to `clip_match.data.prepare.write_dataset` keyed by its path
relative to IMAGE_DIR, so image ids stay stable across exports and each label becomes one JSONL
line with all its images. Import unpacks an existing dataset's images into DATASET_DIR/images
(named by content hash, so an image in two splits is one file) and attaches its texts as labels.
"""
from __future__ import annotations

import hashlib
import io
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from PIL import Image

from ..data.formats import decode_b64, imgs_path, read_jsonl, read_tsv, texts_path
from ..data.prepare import SPLIT_NAMES, write_dataset
from ..errors import ClipMatchError, where
from ..fsutil import atomic_file
from ..runtime.images import FORMATS, decode_image
from .scan import resolve_inside, scan_images
from .store import DB_NAME, LabelStore, clean_label

IMPORTED_IMAGES = "images"


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
    """Write ``{split}_imgs.tsv`` / ``{split}_texts.jsonl`` for every labelled image; returns counts."""
    store, image_dir = open_store(dataset_dir)
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
