"""TSV/JSONL -> LMDB in exactly the layout of cn_clip's ``preprocess/build_lmdb_dataset.py``.

``{lmdb_dir}/{split}/imgs``: key ``str(image_id)`` -> the TSV's base64 text, plus ``num_images``;
``{lmdb_dir}/{split}/pairs``: key ``str(i)`` -> ``pickle.dumps((image_id, text_id, text))``, plus
``num_samples``. cn_clip's own ``LMDBDataset`` reads the result.

Unlike cn_clip's script it checks every line and (with ``verify``) decodes every image,
starts from a map size fitted to the input and grows it when full instead of reserving
1 TiB, and builds under a temporary name that is renamed only when every split is complete.

How the work is shared: the main process reads each file in chunks of whole lines, parses
them (`formats.scan_tsv`, `formats.scan_jsonl`), checks what spans records (duplicate ids,
dangling image ids) and writes one ordered stream, each base64 field going from the chunk
straight into the LMDB. With verification, worker processes are given the same chunks as byte
offsets, read and decode them themselves and send back only the lines whose image is bad, so
no image data crosses between processes. The main process writes the pairs while the first
images are being decoded, and a thread per database syncs it to disk as it grows, so little
work is left once the last image is decoded.
"""
from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import pickle
import shutil
import threading
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, Sequence

import lmdb
from tqdm import tqdm

from ..errors import ClipMatchError, where
from ..fsutil import atomic_dir, atomic_file
from .formats import Chunk, ImageEntry, decode_b64, imgs_path, read_chunk, scan_file, scan_jsonl, scan_tsv, texts_path
from .images import decode_image
from .lmdb_reader import NUM_IMAGES_KEY, NUM_SAMPLES_KEY

REPORT_NAME = "build_report.json"
MIN_MAP_SIZE = 64 << 20
TXN_BYTES = 1 << 20  # one commit per MiB: the chunks' memory is soon reused (and stays in cache)
IN_FLIGHT = 8  # chunks being verified ahead of the writer


def check_image(b64: bytes, source: str) -> str | None:
    """Fully decode one stored image; return why it is bad, or None if it is fine."""
    try:
        decode_image(decode_b64(b64, source), source)
    except ClipMatchError as error:
        return str(error)
    return None


def _exit_with(parent: int) -> None:
    """Worker initializer: end this worker when the build process is gone (even SIGKILLed),
    which ProcessPoolExecutor's workers would not notice."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _bad_images(path: str, start: int, size: int, first_line: int) -> dict[int, str]:
    """Task: decode every image of one chunk; return ``{line: why}`` for the bad ones."""
    chunk = read_chunk(Path(path), start, size, first_line)
    bad = {}
    for number, _, b64_start, b64_stop, problem in scan_tsv(chunk, Path(path))[0]:
        if problem is None:  # (lines bad as text are the main process's to report)
            problem = check_image(chunk.data[b64_start:b64_stop], where(path, number))
            if problem is not None:
                bad[number] = problem
    return bad


class _Problems:
    """Raise on the first bad record, or with ``skip_bad`` record it and go on."""

    def __init__(self, skip_bad: bool):
        self.skip_bad = skip_bad
        self.skipped: list[dict] = []

    def bad(self, message: str, path: Path, line: int, split: str) -> None:
        self.take([{"split": split, "file": path.name, "line": line, "reason": message}])

    def take(self, skipped: list[dict]) -> None:
        """Raise on the first of ``skipped``, or with ``skip_bad`` record them all."""
        if skipped and not self.skip_bad:
            raise ClipMatchError(f"{skipped[0]['reason']} (pass --skip-bad to skip bad records and report them)")
        self.skipped += skipped


class _Writer:
    """Writes one LMDB in transactions of about TXN_BYTES; when the map is full, doubles it and
    retries. A thread syncs to disk after commits, so that the disk writes overlap the build,
    and closes the database at the end (an interrupted build is thrown away as a whole)."""

    def __init__(self, path: Path, map_size: int):
        path.mkdir(parents=True)
        self.env = lmdb.open(str(path), map_size=map_size, sync=False, metasync=False, meminit=False)
        self.batch: list[tuple[bytes, bytes | memoryview]] = []
        self.batch_bytes = 0
        self.disk = ThreadPoolExecutor(1)
        self.syncing: Future | None = None
        self.closing: Future | None = None

    def add(self, items: list[tuple[bytes, bytes | memoryview]], size: int) -> None:
        """Queue ``items`` (about ``size`` bytes of input); commit once a transaction's worth is queued."""
        self.batch += items
        self.batch_bytes += size
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
        if self.syncing is None or self.syncing.done():
            if self.syncing is not None:
                self.syncing.result()  # (raises its error)
            self.syncing = self.disk.submit(self.env.sync, True)

    def finish(self, count_key: bytes, count: int) -> None:
        """Write the count and commit; the disk thread then syncs and closes (joined on exit)."""
        self.add([(count_key, str(count).encode())], 0)
        self.flush()
        self.closing = self.disk.submit(self._sync_and_close)

    def _sync_and_close(self) -> None:
        self.env.sync(True)
        self.env.close()

    def __enter__(self) -> "_Writer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Wait for the disk thread (raising its error); after a failure, drop what is pending and close."""
        self.disk.shutdown(wait=True)
        if self.closing is not None:
            self.closing.result()
        else:
            self.batch = []
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
    ``workers`` processes decode images (default: the usable CPUs, at most 8); ``map_size`` is
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
        if verify and workers > 1:  # parsing alone is cheaper in-process than shipped to workers
            pool = stack.enter_context(ProcessPoolExecutor(workers, initializer=_exit_with, initargs=(os.getpid(),)))
        with atomic_dir(lmdb_dir, overwrite=overwrite, inputs=[data_dir]) as tmp:
            for split in split_names:
                report["splits"][split] = _build_split(data_dir, split, tmp / split, verify, pool, problems, map_size)
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
    pool: Executor | None,
    problems: _Problems,
    map_size: int | None,
) -> dict:
    """Build one split. The pairs are written while the images are being verified, as if every
    image they name will be written; only if one is not are the pairs written again."""
    tsv, jsonl = imgs_path(data_dir, split), texts_path(data_dir, split)
    checked = _checked_images(tsv, f"{split} images", verify, pool)  # (decoding starts now)
    text_problems = _Problems(skip_bad=True)  # taken over once the images are known
    with _Writer(out / "pairs", map_size or max(MIN_MAP_SIZE, 4 * jsonl.stat().st_size)) as pairs:
        count, seen, named = _write_pairs(jsonl, tsv.name, split, None, pairs, text_problems)
    skipped_before = len(problems.skipped)
    with _Writer(out / "imgs", map_size or max(MIN_MAP_SIZE, 2 * tsv.stat().st_size)) as images:
        written = _write_images(checked, tsv, split, images, problems)
    skipped_images = len(problems.skipped) - skipped_before
    if named <= written:
        problems.take(text_problems.skipped)
    else:
        shutil.rmtree(out / "pairs")
        with _Writer(out / "pairs", map_size or max(MIN_MAP_SIZE, 4 * jsonl.stat().st_size)) as pairs:
            count, seen, _ = _write_pairs(jsonl, tsv.name, split, written, pairs, problems)
    return {"images": len(written), "pairs": count, "texts": len(seen),
            "skipped_images": skipped_images,
            "skipped_pair_lines": len(problems.skipped) - skipped_before - skipped_images}


def _write_images(
    checked: Iterator[tuple[Chunk, list[ImageEntry], dict[int, str]]], tsv: Path, split: str, images: "_Writer",
    problems: _Problems,
) -> set[int]:
    """Write the good images of ``tsv`` (from `_checked_images`); return their ids."""
    written: set[int] = set()
    for chunk, entries, bad_images in checked:
        items = []
        view = memoryview(chunk.data)  # values are slices of the chunk, copied once, by LMDB
        for number, image_id, start, stop, problem in entries:
            problem = problem or bad_images.get(number)
            if problem is not None:
                problems.bad(problem, tsv, number, split)
            elif image_id in written:
                problems.bad(f"{where(tsv, number)}: duplicate image_id {image_id}", tsv, number, split)
            else:
                items.append((str(image_id).encode(), view[start:stop]))
                written.add(image_id)
        images.add(items, len(chunk.data))
    images.finish(NUM_IMAGES_KEY, len(written))
    return written


def _write_pairs(
    jsonl: Path, tsv_name: str, split: str, written: set[int] | None, pairs: "_Writer", problems: _Problems
) -> tuple[int, set[int], set[int]]:
    """Write one pair per (text, image) whose image was written (every image while ``written`` is
    not known yet); return the count, the text ids and the image ids named."""
    count = 0
    seen: set[int] = set()
    named: set[int] = set()
    for chunk, entries in _progress(scan_file(jsonl, scan_jsonl), jsonl, f"{split} texts"):
        items = []
        for number, text_id, text, image_ids, problem in entries:
            if problem is not None:
                problems.bad(problem, jsonl, number, split)
            elif text_id in seen:
                problems.bad(f"{where(jsonl, number)}: duplicate text_id {text_id}", jsonl, number, split)
            else:
                seen.add(text_id)
                named.update(image_ids)
                for image_id in image_ids:
                    if written is None or image_id in written:
                        items.append((str(count + len(items)).encode(), pickle.dumps((image_id, text_id, text))))
                    else:
                        message = f"{where(jsonl, number)}: image_id {image_id} has no (valid) image in {tsv_name}"
                        problems.bad(message, jsonl, number, split)
        count += len(items)
        pairs.add(items, len(chunk.data))
    pairs.finish(NUM_SAMPLES_KEY, count)
    return count, seen, named


def _checked_images(
    tsv: Path, label: str, verify: bool, pool: Executor | None
) -> Iterator[tuple[Chunk, list[ImageEntry], dict[int, str]]]:
    """``(chunk, entries, {line: why its image is bad})`` for each chunk of ``tsv`` in order;
    the images are decoded only with ``verify``, by ``pool`` if given (which starts at once)."""
    scanned = _progress(scan_file(tsv, scan_tsv), tsv, label)
    if not verify:
        return ((chunk, entries, {}) for chunk, entries in scanned)
    jobs = (((chunk, entries), (str(tsv), chunk.start, len(chunk.data), chunk.first_line)) for chunk, entries in scanned)
    return ((chunk, entries, bad) for (chunk, entries), bad in _in_order(_bad_images, jobs, pool))


def _progress(scanned: Iterator[tuple[Chunk, list]], path: Path, label: str) -> Iterator[tuple[Chunk, list]]:
    """Pass ``scanned`` through, with a progress bar on stderr."""
    with tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=label, disable=None, leave=False) as bar:
        for chunk, entries in scanned:
            bar.update(len(chunk.data))
            yield chunk, entries


def _in_order(task: Callable[..., dict], jobs: Iterator[tuple[object, tuple]], pool: Executor | None
              ) -> Iterator[tuple[object, dict]]:
    """``(item, task(*args))`` for each ``(item, args)`` in order. With a pool, the first IN_FLIGHT
    tasks are submitted now and then each result taken lets one more start (tasks and results
    are small), so workers rarely wait."""
    if pool is None:
        return ((item, task(*args)) for item, args in jobs)
    pending = collections.deque((item, pool.submit(task, *args)) for item, args in itertools.islice(jobs, IN_FLIGHT))
    return _results(pending, task, jobs, pool)


def _results(pending: collections.deque, task: Callable[..., dict], jobs: Iterator[tuple[object, tuple]],
             pool: Executor) -> Iterator[tuple[object, dict]]:
    """The rest of `_in_order`: taking a result submits the next task."""
    for item, args in jobs:
        pending.append((item, pool.submit(task, *args)))
        oldest, future = pending.popleft()
        yield oldest, future.result()
    yield from ((item, future.result()) for item, future in pending)
