"""Model assistance for the annotation page, computed off the request path.

One background thread owns the model and works through the items the page asked for last (the one on
screen and the next few) before all the others:

- puzzles: the tiles of each puzzle with a prompt are scored against it (`GridSolver.scores`, the bundle's
  tile crop) and chosen by the bundle's k-unknown rule (`GridSolver.choose`): the page pre-marks that choice;
- images: each image is embedded once; the labels in use are embedded as they appear, and an image's labels
  are ranked by cosine when the page asks (a dot product: request threads never run the model).

Each item also gets a *margin*, how sure the model is, for ``--order uncertain``: the lowest selected tile's
score minus the highest unselected one's (0 when the rule selects all tiles or none), or the top label's cosine
minus the second's. Request threads only read results; the worker runs at a lower CPU priority with one
onnxruntime thread, so navigation never waits for it.
"""
from __future__ import annotations

import bisect
import contextlib
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..errors import ClipMatchError
from ..grid.tiles import crop_margins
from ..runtime.images import open_image
from .scan import resolve_inside
from .store import LabelStore

if TYPE_CHECKING:
    from ..grid.solver import GridSolver

RANKED = 8          # labels ranked per image for the page
IMAGE_BATCH = 16    # images embedded per encoder call
MAX_WANTED = 64


class Assistant:
    """Suggestions for one store; ``status`` says whether a model runs ("on") and why not ("off", "failed")."""

    def __init__(self, store: LabelStore, image_dir: Path, solver: GridSolver | None = None, status: str = "off",
                 message: str = ""):
        self.store, self.image_dir, self.solver = store, image_dir, solver
        self.puzzles = store.mode == "puzzles"
        self.status = {"state": status, "message": message}
        self._lock = threading.Lock()
        self._poke = threading.Event()      # wanted items or the store changed
        self._stale = True                  # the store changed: read prompts / labels again
        self._wanted: list[int] = []
        self._results: dict[int, dict] = {}  # item id -> its latest result (with "seq")
        self._log: list[tuple[int, int]] = []  # (seq, item id), seq ascending
        self._seq = 0
        self._pending = 0
        self._todo: dict[int, tuple] = {}  # the worker's queue: item id -> what scoring it needs
        self._vectors: dict[int, np.ndarray] = {}  # images mode: image id -> embedding
        self._known_labels: list[str] = []  # images mode: the labels in use
        self._label_names: list[str] = []   # ... those the model can embed, the rows of the matrix below
        self._label_matrix = np.zeros((0, 0), np.float32)

    @classmethod
    def start(cls, store: LabelStore, image_dir: Path, bundle: str | None, device: str = "auto",
              precision: str | None = None) -> Assistant:
        """Load the model (one onnxruntime thread) and start the worker; a model that fails to load leaves
        assistance off with the reason, on the console and in ``status``."""
        from ..grid.solver import GridSolver  # (onnxruntime loads only when a model is wanted)

        try:
            solver = GridSolver(bundle, device=device, precision=precision, threads=1)
        except Exception as error:  # noqa: BLE001 - whatever stops the model, labelling goes on without it
            print(f"clip-match annotate: model assistance off: {error}", file=sys.stderr)
            return cls(store, image_dir, status="failed", message=f"model assistance off: {error}")
        encoder = solver.encoder
        assistant = cls(store, image_dir, solver, "on",
                        f"model {encoder.bundle.path.name} ({encoder.fingerprint[:12]}, {encoder.precision})")
        threading.Thread(target=assistant._run, name="assist", daemon=True).start()
        return assistant

    # -- request threads --------------------------------------------------------------------

    def changed(self) -> None:
        """The store changed (a prompt, labels): the worker reads it again."""
        self._stale = True
        self._poke.set()

    def snapshot(self, since: int, wanted: Sequence[int]) -> dict:
        """Results newer than ``since``; ``wanted`` items go first in the worker's queue and, for images,
        come back with their labels ranked."""
        with self._lock:
            if wanted:
                self._wanted = list(wanted)[:MAX_WANTED]
                self._poke.set()
            start = bisect.bisect_right(self._log, (since, sys.maxsize))
            items = [self._results[item] for seq, item in self._log[start:] if self._results[item]["seq"] == seq]
            ranked = {str(item): self._rank(self._vectors[item]) for item in wanted if item in self._vectors}
            return {"status": self.status, "seq": self._seq, "pending": self._pending, "items": items,
                    "ranked": ranked}

    def _rank(self, vector: np.ndarray) -> list[list]:
        if not self._label_names:
            return []
        scores = self._label_matrix @ vector
        order = np.argsort(-scores)[:RANKED]
        return [[self._label_names[i], round(float(scores[i]), 4)] for i in order]

    # -- the worker ---------------------------------------------------------------------------

    def _run(self) -> None:
        with contextlib.suppress(AttributeError, OSError):  # below the request threads (Linux: per thread)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        while True:
            try:
                self._step()
            except Exception:  # a bug: say so, and try again in a while (the page works on without suggestions)
                traceback.print_exc(file=sys.stderr)
                self._stale = True
                time.sleep(5)

    def _step(self) -> None:
        """Score the next item(s): the wanted ones first, else the next in page order; wait when none is left."""
        puzzles = self.puzzles
        if self._stale:
            self._stale = False
            self._todo = self._puzzle_jobs() if puzzles else self._image_jobs()
        todo = self._todo
        with self._lock:
            self._pending = len(todo)
            wanted = [item for item in self._wanted if item in todo]
        if not todo:
            self._poke.wait()
            self._poke.clear()
            return
        chosen = _first(wanted, todo, 1 if puzzles else IMAGE_BATCH)
        jobs = {item: todo.pop(item) for item in chosen}
        try:
            if puzzles:
                self._solve(chosen[0], *jobs[chosen[0]])
            else:
                self._embed(jobs)
        except Exception as error:  # noqa: BLE001 - e.g. an image that no longer decodes: say so, go on
            if not isinstance(error, ClipMatchError):
                traceback.print_exc(file=sys.stderr)
            for item in chosen:  # not tried again (for this prompt)
                self._publish(item, {"error": str(error), **({"prompt": jobs[item][2]} if puzzles else {})})

    def _puzzle_jobs(self) -> dict[int, tuple]:
        """Puzzles with a prompt whose suggestion is missing or was made for another prompt, in page order."""
        with self._lock:
            done = {item: result.get("prompt") for item, result in self._results.items()}
        rows = self.store.state()["images"]
        first = next((i for i, row in enumerate(rows) if row["puzzle"]["answer"] is None and not row["skipped"]), 0)
        return {row["id"]: (row["path"], row["puzzle"]["boxes"], row["puzzle"]["prompt"])
                for row in rows[first:] + rows[:first]
                if row["puzzle"]["prompt"] is not None and done.get(row["id"]) != row["puzzle"]["prompt"]}

    def _solve(self, item: int, path: str, boxes: list, prompt: str) -> None:
        picture = open_image(resolve_inside(self.image_dir, path), name=path)
        tiles = crop_margins([picture.crop(tuple(box)) for box in boxes], self.solver.tile_crop)
        scores = self.solver.scores(tiles, prompt)
        chosen, rule = self.solver.choose(scores)
        picked, others = scores[chosen], scores[~chosen]
        margin = float(picked.min() - others.max()) if len(picked) and len(others) else 0.0
        self._publish(item, {"prompt": prompt, "scores": [round(float(v), 4) for v in scores],
                             "selected": [int(i) + 1 for i in np.flatnonzero(chosen)], "rule": rule,
                             "margin": round(margin, 4)})

    def _image_jobs(self) -> dict[int, tuple]:
        """Images not embedded yet, from the first one not done (what the page shows first); the labels in
        use embedded, and every margin brought up to date when they changed."""
        state = self.store.state()
        names = sorted({name for row in state["images"] for name in row["labels"]})
        if names != self._known_labels:
            self._known_labels = names
            kept, matrix = self._encode_labels(names)
            with self._lock:
                self._label_names, self._label_matrix = kept, matrix
            self._publish_margins(list(self._vectors))
        files = self.store.files()
        first = next((i for i, (_, _, done) in enumerate(files) if not done), 0)
        with self._lock:
            failed = {item for item, result in self._results.items() if "error" in result}
        return {item: (image.path,) for item, image, _ in files[first:] + files[:first]
                if item not in self._vectors and item not in failed}

    def _encode_labels(self, names: list[str]) -> tuple[list[str], np.ndarray]:
        """The labels the text tower takes and their embeddings (one it refuses, e.g. a label made of
        characters it does not know, is left out of the ranking)."""
        encoder = self.solver.encoder
        try:
            return names, encoder.encode_texts(names) if names else np.zeros((0, encoder.embed_dim), np.float32)
        except ClipMatchError:
            kept = []
            for name in names:
                with contextlib.suppress(ClipMatchError):
                    kept.append((name, encoder.encode_texts([name])[0]))
            matrix = np.array([vector for _, vector in kept], np.float32).reshape(-1, encoder.embed_dim)
            return [name for name, _ in kept], matrix

    def _embed(self, jobs: dict[int, tuple]) -> None:
        paths = [resolve_inside(self.image_dir, path) for path, in jobs.values()]
        vectors = self.solver.encoder.encode_images(paths, batch_size=len(paths))
        with self._lock:
            self._vectors.update(zip(jobs, vectors))
        self._publish_margins(list(jobs))

    def _publish_margins(self, items: list[int]) -> None:
        """Top label's cosine minus the second's, for ``items`` (none with fewer than two labels)."""
        if len(self._label_names) < 2 or not items:
            return
        scores = np.stack([self._vectors[item] for item in items]) @ self._label_matrix.T
        top = -np.sort(-scores, axis=1)
        for item, (first, second) in zip(items, top[:, :2]):
            self._publish(item, {"margin": round(float(first - second), 4)})

    def _publish(self, item: int, result: dict) -> None:
        with self._lock:
            self._seq += 1
            self._results[item] = {"id": item, "seq": self._seq, **result}
            self._log.append((self._seq, item))
            if len(self._log) > 2 * len(self._results) + 1000:  # superseded entries: keep the latest per item
                self._log = sorted((result["seq"], item) for item, result in self._results.items())


def _first(wanted: list[int], todo: dict[int, tuple], count: int) -> list[int]:
    """Up to ``count`` items of ``todo``: the wanted ones, then the others in order."""
    picked = wanted[:count]
    for item in todo:
        if len(picked) >= count:
            break
        if item not in picked:
            picked.append(item)
    return picked
