"""TSV/JSONL -> LMDB in exactly the layout of cn_clip's ``preprocess/build_lmdb_dataset.py``.

``{lmdb_dir}/{split}/imgs``: key ``str(image_id)`` -> the TSV's base64 text, plus ``num_images``;
``{lmdb_dir}/{split}/pairs``: key ``str(i)`` -> ``pickle.dumps((image_id, text_id, text))``, plus
``num_samples``. cn_clip's own ``LMDBDataset`` reads the result.

Unlike cn_clip's script it checks every line and (with ``verify``) decodes every image,
starts from a map size fitted to the input and grows it when full instead of reserving
1 TiB, and builds under a temporary name that is renamed only when every split is complete.

How the work is shared: the main process maps the images TSV into memory and deals it out in
spans of whole lines (`formats.line_spans`, which only looks for line ends). With verification,
``workers - 1`` forked worker processes and the main process itself parse spans
(`formats.scan_tsv`) and decode every image: a worker reads its span itself and sends back only
the parsed entries (line, id, offsets, problem), so no image data crosses between processes; the
main process takes a span itself whenever every worker is busy and no result is waiting, so no
core idles and no more processes run than there are cores. The main process checks what spans
records (duplicate ids, dangling image ids) and writes one ordered stream, each base64 field
going from the mapped file straight into the LMDB. It writes the pairs while the first images
are being decoded, and a thread per database syncs it to disk as it grows, so little work is
left once the last image is decoded.
"""
from __future__ import annotations

import collections
import contextlib
import gc
import json
import mmap
import multiprocessing
import os
import pickle
import shutil
import signal
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import lmdb
from tqdm import tqdm

from ..errors import ClipMatchError, where
from ..fsutil import atomic_dir, atomic_file
from ..runtime.images import decode_image
from .formats import (ImageEntry, Span, decode_b64, imgs_path, line_spans, map_file, read_chunk, scan_file, scan_jsonl,
                      scan_tsv, sound_entries, texts_path)
from .lmdb_reader import NUM_IMAGES_KEY, NUM_SAMPLES_KEY

REPORT_NAME = "build_report.json"
MIN_MAP_SIZE = 64 << 20
TXN_BYTES = 4 << 20  # per commit: a few large writes; a sync after each, while none is running
TASK_BYTES = 1 << 20  # of the TSV per verification task: ~400 small JPEGs
TEXT_CHUNK_BYTES = 64 << 10  # of the JSONL at a time: each chunk's objects reuse the memory of the last
TASKS_PER_WORKER = 2  # one being decoded, one waiting in the pipe
T = TypeVar("T")


def check_image(b64: bytes, source: str) -> str | None:
    """Fully decode one stored image; return why it is bad, or None if it is fine."""
    try:
        decode_image(decode_b64(b64, source), source)
    except ClipMatchError as error:
        return str(error)
    return None


def scan_images(path: str, span: Span, verify: bool) -> list[ImageEntry]:
    """Task: parse the TSV lines of ``span`` and, with ``verify``, fully decode their images; the
    entry of a bad image carries why it is bad."""
    tsv = Path(path)
    chunk = read_chunk(tsv, span.start, span.stop - span.start, span.first_line)
    entries = scan_tsv(chunk, tsv)[0]
    if not verify:
        return entries
    data = chunk.data
    return [(number, image_id, start, stop, problem or check_image(data[start:stop], where(tsv, number)))
            for number, image_id, start, stop, problem in entries]


class _Workers:
    """Forked processes that run `scan_images` alongside the build process, which runs a task
    itself whenever every worker is busy and no result is ready; results come back in order.

    Each worker has a pipe of its own and holds TASKS_PER_WORKER tasks, so it never waits while
    the build process is busy; taking a worker's result gives it the next task. After the last of
    ``rounds`` calls to `map` the pipes are closed, so the workers exit while the build finishes,
    and a worker also exits when the build process ends, however it ends (its pipe closes then too).
    """

    def __init__(self, count: int, rounds: int):
        context = multiprocessing.get_context("fork")  # (no re-imports: a worker is ready at once)
        self.pipes: list[Connection] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        for _ in range(count):
            here, there = context.Pipe()
            self.pipes.append(here)
            process = context.Process(target=_serve, args=(there, self.pipes), daemon=True)
            process.start()
            there.close()
            self.processes.append(process)
        self.rounds = rounds
        self.collecting = gc.isenabled()  # (as the workers do; the build pauses it for its own work)
        self.jobs: Iterator[tuple[object, tuple]] = iter(())
        # (item, args, the worker's pipe or None when run here, result) in job order
        self.pending: collections.deque[tuple[object, tuple, Connection | None, object]] = collections.deque()

    def map(self, jobs: Iterable[tuple[object, tuple]]) -> Iterator[tuple[object, list[ImageEntry]]]:
        """``(item, scan_images(*args))`` for each ``(item, args)`` of ``jobs``, in order; starts now."""
        self.jobs = iter(jobs)
        for pipe in self.pipes * TASKS_PER_WORKER:
            self._give(pipe)
        return self._results()

    def _give(self, pipe: Connection) -> None:
        job = next(self.jobs, None)
        if job is not None:
            self.pending.append((*job, pipe, None))
            with contextlib.suppress(BrokenPipeError):  # (the worker died: taking the result says so)
                pipe.send(job[1])

    def _results(self) -> Iterator[tuple[object, list[ImageEntry]]]:
        while True:
            if self.pending and (self.pending[0][2] is None or self.pending[0][2].poll()):
                yield self._take()
            elif job := next(self.jobs, None):  # every worker is busy: run a task here
                self.pending.append((*job, None, self._run_here(job[1])))
            elif self.pending:
                yield self._take()  # (waits for it)
            else:
                break
        self.rounds -= 1
        if not self.rounds:
            self._close()

    def _run_here(self, args: tuple) -> list[ImageEntry]:
        """`scan_images` in the build process, with the garbage collector as in a worker."""
        paused = not gc.isenabled()
        if self.collecting:
            gc.enable()
        try:
            return scan_images(*args)
        finally:
            if paused:
                gc.disable()

    def _take(self) -> tuple[object, list[ImageEntry]]:
        """The oldest result, with the next task given to the worker that returned it."""
        item, args, pipe, result = self.pending.popleft()
        if pipe is not None:
            result = self._receive(pipe, args)
            self._give(pipe)
        return item, result

    def _receive(self, pipe: Connection, args: tuple) -> list[ImageEntry]:
        try:
            ok, result = pipe.recv()
        except (EOFError, ConnectionResetError):  # (reset: it died with a task unread)
            process = self.processes[self.pipes.index(pipe)]
            process.join(1)
            path, span, _ = args
            raise ClipMatchError(f"{where(path, span.first_line)}: the worker process checking the images from this "
                                 f"line on died (exit code {process.exitcode})") from None
        if not ok:
            raise result
        return result

    def _close(self) -> None:
        for pipe in self.pipes:
            pipe.close()

    def __enter__(self) -> "_Workers":
        return self

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        """Close the pipes, so the workers exit; after a failure, do not wait for their tasks."""
        self._close()
        for process in self.processes:
            if exc_type is not None:
                process.terminate()
            process.join()


def _serve(pipe: Connection, build_ends: list[Connection]) -> None:
    """Worker process: send back ``(True, scan_images(*args))`` or ``(False, error)`` for each
    ``args`` from ``pipe`` until it closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the build process's to handle
    for end in build_ends:
        end.close()  # (the build process's ends: copies held here would keep the pipes open)
    while True:
        try:
            args = pipe.recv()
        except EOFError:
            return
        try:
            reply = (True, scan_images(*args))
        except Exception as error:  # (raised again in the build process)
            reply = (False, error)
        try:
            pipe.send(reply)
        except OSError:  # the build process has gone
            return


class _Problems:
    """Raise on the first bad record, or with ``skip_bad`` record it and go on."""

    def __init__(self, skip_bad: bool):
        self.skip_bad = skip_bad
        self.skipped: list[dict] = []

    def reporter(self, path: Path, split: str) -> Callable[[str, int], None]:
        """``report(message, line)`` for a bad line of ``path``."""
        return lambda message, line: self.take([{"split": split, "file": path.name, "line": line, "reason": message}])

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
        self.close()

    def close(self) -> None:
        """Wait for the disk thread (raising its error); before `finish`, drop what is pending and close."""
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
            pool = stack.enter_context(_Workers(workers - 1, rounds=len(split_names)))
        stack.enter_context(_collector_paused())  # (after the fork: the workers keep theirs)
        # (the writers are closed, their last data synced, after the report is written, and before the rename)
        with atomic_dir(lmdb_dir, overwrite=overwrite, inputs=[data_dir]) as tmp, contextlib.ExitStack() as writers:
            for split in split_names:
                report["splits"][split] = _build_split(data_dir, split, tmp / split, verify, pool, problems, map_size,
                                                       writers)
            report["skipped"] = problems.skipped
            with atomic_file(tmp / REPORT_NAME, "w", encoding="utf-8") as handle:
                json.dump(report, handle, ensure_ascii=False, indent=1)
    return report


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: the build makes many small objects but no cycles, so
    collecting would only scan memory (and copy the pages it touches, shared with forked workers)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


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
    pool: _Workers | None,
    problems: _Problems,
    map_size: int | None,
    writers: contextlib.ExitStack,
) -> dict:
    """Build one split, its databases left to be closed by ``writers`` (so that their last
    syncs overlap the next split). The pairs are written while the images are being verified,
    as if every image they name will be written; only if one is not are the pairs written again."""
    tsv, jsonl = imgs_path(data_dir, split), texts_path(data_dir, split)
    data = map_file(tsv)
    checked = _checked_images(tsv, data, f"{split} images", verify, pool)  # (decoding starts now)
    text_problems = _Problems(skip_bad=True)  # taken over once the images are known
    skipped_before = len(problems.skipped)
    pairs_size = map_size or max(MIN_MAP_SIZE, 4 * jsonl.stat().st_size)
    pairs = writers.enter_context(_Writer(out / "pairs", pairs_size))
    images = writers.enter_context(_Writer(out / "imgs", map_size or max(MIN_MAP_SIZE, 2 * tsv.stat().st_size)))
    count, texts, named = _write_pairs(jsonl, tsv.name, split, None, pairs, text_problems)
    written = _write_images(checked, data, tsv, split, images, problems)
    skipped_images = len(problems.skipped) - skipped_before
    if named <= written:
        problems.take(text_problems.skipped)
    else:
        pairs.close()
        shutil.rmtree(out / "pairs")
        pairs = writers.enter_context(_Writer(out / "pairs", pairs_size))
        count, texts, _ = _write_pairs(jsonl, tsv.name, split, written, pairs, problems)
    return {"images": len(written), "pairs": count, "texts": len(texts),
            "skipped_images": skipped_images,
            "skipped_pair_lines": len(problems.skipped) - skipped_before - skipped_images}


def _write_images(
    checked: Iterator[tuple[Span, list[ImageEntry]]], data: mmap.mmap | bytes, tsv: Path, split: str, images: "_Writer",
    problems: _Problems,
) -> set[int]:
    """Write the good images of ``tsv`` (from `_checked_images`; ``data`` is the mapped file); return their ids."""
    written: set[int] = set()
    view = memoryview(data)  # values are slices of the mapped file, copied once, by LMDB
    report = problems.reporter(tsv, split)
    for span, entries in checked:
        items = [(str(image_id).encode(), view[span.start + start:span.start + stop])
                 for _, image_id, start, stop, _ in sound_entries(entries, tsv, "image_id", written, report)]
        images.add(items, span.stop - span.start)
    images.finish(NUM_IMAGES_KEY, len(written))
    return written


def _write_pairs(
    jsonl: Path, tsv_name: str, split: str, written: set[int] | None, pairs: "_Writer", problems: _Problems
) -> tuple[int, set[int], set[int]]:
    """Write one pair per (text, image) whose image was written (every image while ``written`` is
    not known yet); return the count, the ids of the texts with a pair and the image ids named."""
    count = 0
    seen: set[int] = set()
    paired: set[int] = set()
    named: set[int] = set()
    scanned = scan_file(jsonl, scan_jsonl, TEXT_CHUNK_BYTES)
    report = problems.reporter(jsonl, split)
    for chunk, entries in _progress(scanned, lambda piece: len(piece[0].data), jsonl, f"{split} texts"):
        items = []
        for number, text_id, text, image_ids, _ in sound_entries(entries, jsonl, "text_id", seen, report):
            named.update(image_ids)
            for image_id in image_ids:
                if written is None or image_id in written:
                    items.append((str(count + len(items)).encode(), pickle.dumps((image_id, text_id, text))))
                    paired.add(text_id)
                else:
                    report(f"{where(jsonl, number)}: image_id {image_id} has no (valid) image in {tsv_name}", number)
        count += len(items)
        pairs.add(items, len(chunk.data))
    pairs.finish(NUM_SAMPLES_KEY, count)
    return count, paired, named


def _checked_images(
    tsv: Path, data: mmap.mmap | bytes, label: str, verify: bool, pool: _Workers | None
) -> Iterator[tuple[Span, list[ImageEntry]]]:
    """``(span, entries)`` for each span of ``tsv`` (mapped as ``data``) in order; the images are
    decoded only with ``verify``, by ``pool`` if given (which starts at once)."""
    share = len(pool.pipes) * TASKS_PER_WORKER + 1 if pool else 1  # (the spans in hand at any time)
    spans = _progress(line_spans(data, TASK_BYTES, share), lambda span: span.stop - span.start, tsv, label)
    jobs = ((span, (str(tsv), span, verify)) for span in spans)
    if pool is None:
        return ((span, scan_images(*args)) for span, args in jobs)
    return pool.map(jobs)


def _progress(pieces: Iterator[T], size: Callable[[T], int], path: Path, label: str) -> Iterator[T]:
    """Pass the pieces of ``path`` through, with a progress bar of their ``size`` on stderr."""
    with tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=label, disable=None, leave=False) as bar:
        for piece in pieces:
            bar.update(size(piece))
            yield piece
