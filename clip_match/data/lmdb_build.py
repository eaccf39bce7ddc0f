"""TSV/JSONL -> LMDB in exactly the layout of cn_clip's ``preprocess/build_lmdb_dataset.py``.

``{lmdb_dir}/{split}/imgs``: key ``str(image_id)`` -> the TSV's base64 text, plus ``num_images``;
``{lmdb_dir}/{split}/pairs``: key ``str(i)`` -> ``pickle.dumps((image_id, text_id, text))``, plus
``num_samples``. cn_clip's own ``LMDBDataset`` reads the result.

Unlike cn_clip's script it checks every line (and, with ``verify``, decodes every image in a
process pool while one ordered stream writes), starts from a map size fitted to the input and
grows it when full instead of reserving 1 TiB, and builds under a temporary name that is
renamed only when every split is complete.
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import json
import os
import pickle
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import lmdb
from tqdm import tqdm

from ..errors import ClipMatchError, where
from ..fsutil import atomic_dir, atomic_file
from .formats import (
    ImageLine,
    decode_b64,
    imgs_path,
    iter_lines,
    parse_image_line,
    parse_text_line,
    texts_path,
)
from .images import decode_image
from .lmdb_reader import NUM_IMAGES_KEY, NUM_SAMPLES_KEY

REPORT_NAME = "build_report.json"
MIN_MAP_SIZE = 64 << 20
TXN_BYTES = 64 << 20  # big transactions: one commit per 64 MiB, not per 1,000 records
CHUNK_IMAGES = 256  # images per task sent to a verification worker


def check_image(b64: bytes, source: str) -> str | None:
    """Fully decode one stored image; return why it is bad, or None if it is fine."""
    try:
        decode_image(decode_b64(b64, source), source)
    except ClipMatchError as error:
        return str(error)
    return None


def _check_chunk(path: str, items: list[tuple[int, bytes]]) -> list[str | None]:
    """Worker task: check a chunk of ``(line, b64)`` items of one TSV file."""
    return [check_image(b64, where(path, line)) for line, b64 in items]


class _Problems:
    """Raise on the first bad record, or with ``skip_bad`` record it and go on."""

    def __init__(self, skip_bad: bool):
        self.skip_bad = skip_bad
        self.skipped: list[dict] = []

    def bad(self, message: str, path: Path, line: int, split: str) -> None:
        if not self.skip_bad:
            raise ClipMatchError(f"{message} (pass --skip-bad to skip bad records and report them)")
        self.skipped.append({"split": split, "file": path.name, "line": line, "reason": message})


class _Writer:
    """Writes one LMDB in large transactions; when the map is full, doubles it and retries."""

    def __init__(self, path: Path, map_size: int):
        path.mkdir(parents=True)
        self.env = lmdb.open(str(path), map_size=map_size, sync=False, metasync=False, meminit=False)
        self.batch: list[tuple[bytes, bytes]] = []
        self.batch_bytes = 0

    def put(self, key: bytes, value: bytes) -> None:
        self.batch.append((key, value))
        self.batch_bytes += len(value)
        if self.batch_bytes >= TXN_BYTES:
            self.flush()

    def flush(self) -> None:
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    txn.cursor().putmulti(self.batch)
                break
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()["map_size"] * 2)
        self.batch, self.batch_bytes = [], 0

    def finish(self, count_key: bytes, count: int) -> None:
        self.put(count_key, str(count).encode())
        self.flush()
        self.env.sync(True)
        self.env.close()


def build_lmdb(
    data_dir: str | os.PathLike,
    splits: str | Sequence[str] = ("train", "valid", "test"),
    lmdb_dir: str | os.PathLike | None = None,
    verify: bool = True,
    skip_bad: bool = False,
    overwrite: bool = False,
    workers: int | None = None,
    *,
    map_size: int | None = None,
) -> dict:
    """Build ``{lmdb_dir}/{split}/{imgs,pairs}`` for each split; return the build report.

    ``lmdb_dir`` defaults to ``{data_dir}/lmdb`` and is replaced as a whole (with ``overwrite``).
    ``workers`` verification processes (default: the usable CPUs, at most 8); ``map_size`` is
    the initial LMDB map size in bytes (default: fitted to the input; it grows as needed).
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ClipMatchError(f"{data_dir}: data directory not found")
    split_names = _split_list(splits)
    for split in split_names:
        for path in (imgs_path(data_dir, split), texts_path(data_dir, split)):
            if not path.is_file():
                raise ClipMatchError(f"{path}: not found (needed for split {split!r})")
    lmdb_dir = Path(lmdb_dir) if lmdb_dir is not None else data_dir / "lmdb"
    with contextlib.suppress(OSError):
        lmdb_dir.rmdir()  # an empty directory holds nothing to protect
    if lmdb_dir.exists() and not overwrite:
        raise ClipMatchError(f"{lmdb_dir}: already exists (pass --overwrite to replace it)")
    workers = workers or min(len(os.sched_getaffinity(0)), 8)
    problems = _Problems(skip_bad)
    report: dict = {"lmdb_dir": str(lmdb_dir), "verified": verify, "splits": {}}
    with contextlib.ExitStack() as stack:
        pool = None
        if verify and workers > 1:
            pool = stack.enter_context(concurrent.futures.ProcessPoolExecutor(workers))
        with atomic_dir(lmdb_dir, overwrite=overwrite) as tmp:
            for split in split_names:
                report["splits"][split] = _build_split(data_dir, split, tmp / split, verify, pool, workers, problems, map_size)
            report["skipped"] = problems.skipped
            with atomic_file(tmp / REPORT_NAME, "w", encoding="utf-8") as handle:
                json.dump(report, handle, ensure_ascii=False, indent=1)
    return report


def _split_list(splits: str | Sequence[str]) -> list[str]:
    names = [s.strip() for s in splits.split(",")] if isinstance(splits, str) else list(splits)
    names = list(dict.fromkeys(n for n in names if n))
    if not names:
        raise ClipMatchError("no splits given (e.g. --splits train,valid,test)")
    return names


def _build_split(
    data_dir: Path,
    split: str,
    out: Path,
    verify: bool,
    pool: concurrent.futures.Executor | None,
    workers: int,
    problems: _Problems,
    map_size: int | None,
) -> dict:
    tsv, jsonl = imgs_path(data_dir, split), texts_path(data_dir, split)
    skipped_before = len(problems.skipped)
    images = _Writer(out / "imgs", map_size or max(MIN_MAP_SIZE, 2 * tsv.stat().st_size))
    records = _parse_images(tsv, split, problems)
    if verify:
        records = _verified(records, tsv, split, problems, pool, workers)
    written: set[int] = set()
    for record in records:
        images.put(str(record.image_id).encode(), record.b64)
        written.add(record.image_id)
    images.finish(NUM_IMAGES_KEY, len(written))
    problems.skipped[skipped_before:] = sorted(problems.skipped[skipped_before:], key=lambda s: s["line"])
    skipped_images = len(problems.skipped) - skipped_before

    pairs = _Writer(out / "pairs", map_size or max(MIN_MAP_SIZE, 4 * jsonl.stat().st_size))
    count = 0
    seen_text_ids: set[int] = set()
    for number, content in _progress(jsonl, f"{split} texts"):
        try:
            text = parse_text_line(content, jsonl, number)
        except ClipMatchError as error:
            problems.bad(str(error), jsonl, number, split)
            continue
        if text.text_id in seen_text_ids:
            problems.bad(f"{where(jsonl, number)}: duplicate text_id {text.text_id}", jsonl, number, split)
            continue
        seen_text_ids.add(text.text_id)
        for image_id in text.image_ids:
            if image_id not in written:
                problems.bad(f"{where(jsonl, number)}: image_id {image_id} has no (valid) image in {tsv.name}", jsonl, number, split)
                continue
            pairs.put(str(count).encode(), pickle.dumps((image_id, text.text_id, text.text)))
            count += 1
    pairs.finish(NUM_SAMPLES_KEY, count)
    return {"images": len(written), "pairs": count, "texts": len(seen_text_ids),
            "skipped_images": skipped_images, "skipped_pair_lines": len(problems.skipped) - skipped_before - skipped_images}


def _progress(path: Path, label: str) -> Iterator[tuple[int, bytes]]:
    """``iter_lines`` with a byte-based progress bar on stderr (no counting pass needed)."""
    with tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=label, disable=None, leave=False) as bar:
        for number, content in iter_lines(path):
            bar.update(len(content) + 1)
            yield number, content


def _parse_images(tsv: Path, split: str, problems: _Problems) -> Iterator[ImageLine]:
    """Structurally valid TSV lines with unique ids (images not decoded here)."""
    seen: set[int] = set()
    for number, content in _progress(tsv, f"{split} images"):
        try:
            record = parse_image_line(content, tsv, number)
        except ClipMatchError as error:
            problems.bad(str(error), tsv, number, split)
            continue
        if record.image_id in seen:
            problems.bad(f"{where(tsv, number)}: duplicate image_id {record.image_id}", tsv, number, split)
            continue
        seen.add(record.image_id)
        yield record


def _verified(
    records: Iterator[ImageLine],
    tsv: Path,
    split: str,
    problems: _Problems,
    pool: concurrent.futures.Executor | None,
    workers: int,
) -> Iterator[ImageLine]:
    """The records whose images decode, in input order; decoding runs in ``pool`` if given."""
    for chunk, verdicts in _checked_chunks(records, str(tsv), pool, workers):
        for record, verdict in zip(chunk, verdicts):
            if verdict is None:
                yield record
            else:
                problems.bad(verdict, tsv, record.line, split)


def _checked_chunks(
    records: Iterable[ImageLine], path: str, pool: concurrent.futures.Executor | None, workers: int
) -> Iterator[tuple[list[ImageLine], list[str | None]]]:
    """Check chunks in parallel with a bounded number in flight (memory stays flat), yield in order."""
    pending: collections.deque = collections.deque()
    for chunk in _chunks(records, CHUNK_IMAGES):
        items = [(r.line, r.b64) for r in chunk]
        if pool is None:
            yield chunk, _check_chunk(path, items)
            continue
        pending.append((chunk, pool.submit(_check_chunk, path, items)))
        if len(pending) >= 4 * workers:
            chunk, future = pending.popleft()
            yield chunk, future.result()
    while pending:
        chunk, future = pending.popleft()
        yield chunk, future.result()


def _chunks(records: Iterable[ImageLine], size: int) -> Iterator[list[ImageLine]]:
    chunk: list[ImageLine] = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
