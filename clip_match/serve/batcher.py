"""The dynamic batcher: one thread per model bundle owns its encoder and runs the encode jobs of
concurrent requests, several requests' inputs in one encoder call where that changes no result.

Requests decode their images and cut their tiles in a thread pool, then submit `Job`s (the images
or texts of one request for one tower) here. The worker takes the queued jobs first come, first
served, up to ``max_batch`` inputs per tower; while other admitted requests are still preparing
their inputs (`Batcher.preparing`) it waits up to ``max_wait`` after the oldest job for them, so a
lone request is never held back. Jobs of a *merged* tower go through one encoder call; the others
run one call each, with the batch size the in-process API would use, so their results are the
in-process API's bit for bit. A tower is merged only when its output for one input cannot depend on
its batch companions (`clip_match.serve.models.ServedBundle.mergeable`): dynamic int8 quantisation
takes its activation range from the whole batch.

Jobs past their deadline are dropped unencoded; cancelled ones (the request gave up) are skipped.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

from ..runtime.bundle import TOWERS
from ..runtime.encoder import Encoder
from .metrics import Metrics


class DeadlineExceeded(Exception):
    """A job's request ran out of time before its turn at the encoder."""


@dataclass(eq=False)
class Job:
    """One request's inputs for one tower; ``future`` receives their (n, dim) unit vectors."""

    tower: str                 # "image" (PIL images) or "text" (str)
    items: Sequence
    batch_size: int            # what the in-process API passes to the encoder for these inputs
    deadline: float            # time.monotonic() after which the job is dropped
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)


class Batcher:
    """Feeds one `Encoder` from one worker thread; ``merge`` says per tower whether requests share calls."""

    def __init__(self, name: str, encoder: Encoder, merge: dict[str, bool], max_batch: int, max_wait: float,
                 metrics: Metrics):
        self.name = name
        self.encoder = encoder
        self.merge = merge
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._metrics = metrics
        self._queue: deque[Job] = deque()
        self._queued = dict.fromkeys(TOWERS, 0)   # inputs waiting, per tower
        self._preparing = 0                       # admitted requests that will submit soon
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"clip_match-batcher-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @contextmanager
    def preparing(self) -> Iterator[None]:
        """Around a request's decoding and its `submit`: tells the worker that more jobs are coming."""
        with self._cond:
            self._preparing += 1
        try:
            yield
        finally:
            with self._cond:
                self._preparing -= 1
                self._cond.notify()

    def submit(self, job: Job) -> Future:
        with self._cond:
            if self._closed:
                raise RuntimeError(f"batcher {self.name} is closed")
            self._queue.append(job)
            self._queued[job.tower] += len(job.items)
            self._metrics.queue_depth.labels(self.name).set(len(self._queue))
            self._cond.notify()
        return job.future

    def close(self, timeout: float | None = None) -> None:
        """Encode what is queued, then stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ---- the worker thread ----------------------------------------------------------------
    def _run(self) -> None:
        while (jobs := self._take()) is not None:
            for tower in TOWERS:
                group = [job for job in jobs if job.tower == tower and _claim(job)]
                if group:
                    self._encode(tower, group)

    def _take(self) -> list[Job] | None:
        """The next jobs to run (None once closed and drained)."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            if self.merge[self._queue[0].tower]:
                until = self._queue[0].enqueued + self.max_wait
                while (self._preparing and not self._closed and max(self._queued.values()) < self.max_batch
                       and (remaining := until - time.monotonic()) > 0):
                    self._cond.wait(remaining)
            taken, counts = [], dict.fromkeys(TOWERS, 0)
            while self._queue:
                job = self._queue[0]
                if taken and counts[job.tower] + len(job.items) > self.max_batch:
                    break
                taken.append(self._queue.popleft())
                counts[job.tower] += len(job.items)
                self._queued[job.tower] -= len(job.items)
            self._metrics.queue_depth.labels(self.name).set(len(self._queue))
            return taken

    def _encode(self, tower: str, jobs: list[Job]) -> None:
        encode = self.encoder.encode_images if tower == "image" else self.encoder.encode_texts
        if self.merge[tower] and len(jobs) > 1:
            try:
                vectors = self._call(tower, encode, [item for job in jobs for item in job.items], self.max_batch,
                                     len(jobs))
            except Exception:  # one request's fault must not fail the others: run them alone
                for job in jobs:
                    self._alone(tower, encode, job)
                return
            start = 0
            for job in jobs:
                job.future.set_result(np.array(vectors[start:start + len(job.items)]))  # (a fresh array each)
                start += len(job.items)
            return
        for job in jobs:
            self._alone(tower, encode, job)

    def _alone(self, tower: str, encode: Callable[..., np.ndarray], job: Job) -> None:
        try:
            job.future.set_result(self._call(tower, encode, job.items, job.batch_size, 1))
        except Exception as error:  # handed to the request, which answers it
            job.future.set_exception(error)

    def _call(self, tower: str, encode: Callable[..., np.ndarray], items: Sequence, batch_size: int,
              requests: int) -> np.ndarray:
        started = time.perf_counter()
        vectors = encode(items, batch_size=batch_size)
        self._metrics.encoder_seconds.labels(self.name, tower).observe(time.perf_counter() - started)
        self._metrics.batch_inputs.labels(self.name, tower).observe(len(items))
        self._metrics.batch_requests.labels(self.name, tower).observe(requests)
        return vectors


def _claim(job: Job) -> bool:
    """Mark the job running; False (and the job settled) when it was cancelled or is past its deadline."""
    if not job.future.set_running_or_notify_cancel():
        return False
    if time.monotonic() > job.deadline:
        job.future.set_exception(DeadlineExceeded())
        return False
    return True
