"""TSV/JSONL -> LMDB in exactly the layout of cn_clip's ``preprocess/build_lmdb_dataset.py``.

``{lmdb_dir}/{split}/imgs``: key ``str(image_id)`` -> the TSV's base64 text, plus ``num_images``;
``{lmdb_dir}/{split}/pairs``: key ``str(i)`` -> ``pickle.dumps((image_id, text_id, text))``, plus
``num_samples``. cn_clip's own ``LMDBDataset`` reads the result.

Unlike cn_clip's script it checks every line and (with ``verify``) decodes every image,
starts from a map size fitted to the input and grows it when full instead of reserving
1 TiB, and builds under a temporary name that is renamed only when every split is complete.

How the work is shared: the input files are cut into byte ranges at line boundaries. With
verification, worker processes read and parse a range themselves, decode its images and send
back only ids, offsets and problems; without it (or with one worker) the main process scans
the ranges itself. The main process checks what spans records (duplicate ids, dangling image
ids) and writes one ordered stream, copying each base64 field from the memory-mapped TSV.
"""
from __future__ import annotations

import collections
import contextlib
import json
import mmap
import os
import pickle
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import lmdb
from tqdm import tqdm

from ..errors import ClipMatchError, where
from ..fsutil import atomic_dir, atomic_file
from .formats import decode_b64, imgs_path, iter_lines, parse_image_line, parse_text_line, texts_path
from .images import decode_image
from .lmdb_reader import NUM_IMAGES_KEY, NUM_SAMPLES_KEY

REPORT_NAME = "build_report.json"
MIN_MAP_SIZE = 64 << 20
TXN_BYTES = 8 << 20  # one commit per 8 MiB (not per 1,000 records); writes overlap decoding
RANGE_BYTES = 256 << 10  # input per task
IN_FLIGHT = 64  # tasks queued ahead of the writer

_Span = tuple[int, Optional[int], int]  # (start, stop, first_line) of a byte range of a file
# one scanned TSV line: (line, image_id, b64 start, b64 stop, problem or None)
_ImageEntry = tuple[int, int, int, int, Optional[str]]
# one scanned JSONL line: (line, text_id, [(image_id, pickled pair), ...], problem or None)
_TextEntry = tuple[int, int, list, Optional[str]]


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


def _scan_images(path: str, start: int, stop: int | None, first_line: int, verify: bool) -> list[_ImageEntry]:
    """Task: parse (and with ``verify`` decode) the TSV lines of one byte range."""
    tsv, entries = Path(path), []
    for number, content, offset in iter_lines(tsv, start, stop, first_line):
        try:
            image_id, b64_start, b64_stop = parse_image_line(content, tsv, number)
        except ClipMatchError as error:
            entries.append((number, 0, 0, 0, str(error)))
            continue
        problem = check_image(content[b64_start:b64_stop], where(path, number)) if verify else None
        entries.append((number, image_id, offset + b64_start, offset + b64_stop, problem))
    return entries


def _scan_texts(path: str, start: int, stop: int | None, first_line: int) -> list[_TextEntry]:
    """Task: parse the JSONL lines of one byte range into ready-to-write pickled pairs."""
    jsonl, entries = Path(path), []
    for number, content, _ in iter_lines(jsonl, start, stop, first_line):
        try:
            text_id, text, image_ids = parse_text_line(content, jsonl, number)
        except ClipMatchError as error:
            entries.append((number, 0, [], str(error)))
            continue
        entries.append((number, text_id, [(i, pickle.dumps((i, text_id, text))) for i in image_ids], None))
    return entries


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
        self.path = path
        # writemap halves the CPU cost of writing; syncing once at the end is enough because an
        # interrupted build is thrown away as a whole.
        self.env = lmdb.open(str(path), map_size=map_size, writemap=True, sync=False, metasync=False, meminit=False)
        self.batch: list[tuple[bytes, bytes]] = []
        self.batch_bytes = 0

    def add(self, items: list[tuple[bytes, bytes]], size: int) -> None:
        """Queue ``items`` (about ``size`` bytes); commit once a transaction's worth is queued."""
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

    def __enter__(self) -> "_Writer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        """On failure drop what is pending and close."""
        if exc_info[0] is not None:
            self.batch = []
            self.env.close()

    def finish(self, count_key: bytes, count: int) -> None:
        self.add([(count_key, str(count).encode())], 0)
        self.flush()
        used = (self.env.info()["last_pgno"] + 1) * self.env.stat()["psize"]
        self.env.sync(True)
        self.env.close()
        os.truncate(self.path / "data.mdb", used)  # writemap grew the file to the whole map


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
    tsv, jsonl = imgs_path(data_dir, split), texts_path(data_dir, split)
    skipped_before = len(problems.skipped)
    written = _write_images(tsv, out / "imgs", split, verify, pool, problems, map_size)
    skipped_images = len(problems.skipped) - skipped_before

    with _Writer(out / "pairs", map_size or max(MIN_MAP_SIZE, 4 * jsonl.stat().st_size)) as pairs:
        count, seen = _write_pairs(jsonl, tsv.name, split, written, pairs, pool, problems)
    return {"images": len(written), "pairs": count, "texts": len(seen),
            "skipped_images": skipped_images,
            "skipped_pair_lines": len(problems.skipped) - skipped_before - skipped_images}


def _write_pairs(
    jsonl: Path,
    tsv_name: str,
    split: str,
    written: set[int],
    pairs: "_Writer",
    pool: Executor | None,
    problems: _Problems,
) -> tuple[int, set[int]]:
    """Write one pair per (text, image) whose image was written; return the count and text ids."""
    count = 0
    seen: set[int] = set()
    for entries, size in _scanned(jsonl, f"{split} texts", _scan_texts, (), pool):
        items = []
        for number, text_id, values, problem in entries:
            if problem is not None:
                problems.bad(problem, jsonl, number, split)
            elif text_id in seen:
                problems.bad(f"{where(jsonl, number)}: duplicate text_id {text_id}", jsonl, number, split)
            else:
                seen.add(text_id)
                for image_id, value in values:
                    if image_id in written:
                        items.append((str(count + len(items)).encode(), value))
                    else:
                        message = f"{where(jsonl, number)}: image_id {image_id} has no (valid) image in {tsv_name}"
                        problems.bad(message, jsonl, number, split)
        count += len(items)
        pairs.add(items, size)
    pairs.finish(NUM_SAMPLES_KEY, count)
    return count, seen


def _write_images(
    tsv: Path,
    out: Path,
    split: str,
    verify: bool,
    pool: Executor | None,
    problems: _Problems,
    map_size: int | None,
) -> set[int]:
    """Write the good images of ``tsv``; return their ids."""
    written: set[int] = set()
    with open(tsv, "rb") as handle, _mapped(handle) as data, \
            _Writer(out, map_size or max(MIN_MAP_SIZE, 2 * tsv.stat().st_size)) as images:
        for entries, size in _scanned(tsv, f"{split} images", _scan_images, (verify,), pool):
            images.add(_image_items(entries, data, written, tsv, split, problems), size)
        images.finish(NUM_IMAGES_KEY, len(written))
    return written


def _image_items(
    entries: list[_ImageEntry], data: bytes | mmap.mmap, written: set[int], tsv: Path, split: str, problems: _Problems
) -> list[tuple[bytes, bytes]]:
    """LMDB items for the good images of one range that are not yet written."""
    items = []
    for number, image_id, start, stop, problem in entries:
        if problem is not None:
            problems.bad(problem, tsv, number, split)
        elif image_id in written:
            problems.bad(f"{where(tsv, number)}: duplicate image_id {image_id}", tsv, number, split)
        else:
            items.append((str(image_id).encode(), data[start:stop]))
            written.add(image_id)
    return items


@contextlib.contextmanager
def _mapped(handle) -> Iterator[bytes | mmap.mmap]:
    """The whole file, memory-mapped rather than read (slices of it are bytes)."""
    if os.fstat(handle.fileno()).st_size == 0:
        yield b""
        return
    with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        yield mapped


def _scanned(path: Path, label: str, scan: Callable[..., list], extra: tuple, pool: Executor | None) -> Iterator[tuple[list, int]]:
    """``(entries, range size)`` of ``scan`` for each byte range of ``path``, in file order,
    with a progress bar on stderr."""
    size = path.stat().st_size
    tasks = ((str(path), *span, *extra) for span in _spans(path))
    with tqdm(total=size, unit="B", unit_scale=True, desc=label, disable=None, leave=False) as bar:
        for (_, start, stop, *_), entries in _in_order(scan, tasks, pool):
            span_size = (size if stop is None else stop) - start
            bar.update(span_size)
            yield entries, span_size


def _in_order(task: Callable[..., list], arguments: Iterator[tuple], pool: Executor | None) -> Iterator[tuple[tuple, list]]:
    """``(args, task(*args))`` in order. With a pool, up to IN_FLIGHT tasks run ahead of the
    consumer (tasks and results are small), so workers rarely wait for the writer."""
    if pool is None:
        yield from ((args, task(*args)) for args in arguments)
        return
    pending: collections.deque = collections.deque()
    for args in arguments:
        pending.append((args, pool.submit(task, *args)))
        if len(pending) >= IN_FLIGHT:
            args, future = pending.popleft()
            yield args, future.result()
    while pending:
        args, future = pending.popleft()
        yield args, future.result()


def _spans(path: Path) -> Iterator[_Span]:
    """Cut ``path`` into byte ranges of about RANGE_BYTES that start at line beginnings."""
    size = path.stat().st_size
    if size == 0:
        return
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        start, line = 0, 1
        while start < size:
            newline = data.find(b"\n", min(start + RANGE_BYTES, size) - 1)
            stop = size if newline < 0 else newline + 1
            yield start, (None if stop == size else stop), line
            line += data[start:stop].count(b"\n")
            start = stop
