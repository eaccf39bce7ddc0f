"""Annotation state in SQLite inside DATASET_DIR: images, labels, skips and an undo log.

Every thread reads through its own connection (SQLite connections must not cross threads);
changes go through one shared write connection, one at a time, each inside a savepoint, so two
browser tabs or many request threads never interleave half-made changes and a failing change
undoes only itself. WAL mode lets readers run while a writer commits; ``synchronous=FULL`` makes
each answered request durable, so a crash or a closed browser loses nothing that was acknowledged.
A commit (an fsync, ~4 ms here) covers every change made while writers were waiting for the
one before it (group commit): concurrent writers wait for one or two fsyncs, not one each.

In puzzle mode each image is a puzzle: its grid (found once per file and layout), a prompt, the
saved answer (the matching tiles) and labels of single tiles.

Each write bumps a global ``version``; images remember the version that last changed them, so
a tab can ask for just what changed since it last looked. Undo is per client (per tab): a tab's
Ctrl+Z reverts that tab's last action, never another tab's.
"""
from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from ..errors import ClipMatchError
from ..fsutil import ensure_dir
from .scan import ScannedImage, natural_key

DB_NAME = "annotations.sqlite"
SCHEMA_VERSION = 1
MAX_LABEL_CHARS = 200
MAX_BATCH = 64  # changes one commit may wait for

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    present INTEGER NOT NULL DEFAULT 1,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    format TEXT NOT NULL,
    skipped INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS images_version ON images (version);
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    last_used INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS image_labels (
    image_id INTEGER NOT NULL REFERENCES images (id),
    label_id INTEGER NOT NULL REFERENCES labels (id),
    PRIMARY KEY (image_id, label_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS image_labels_label ON image_labels (label_id);
CREATE TABLE IF NOT EXISTS actions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    client TEXT NOT NULL,
    kind TEXT NOT NULL,
    image_id INTEGER,
    data TEXT NOT NULL,
    undone INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS actions_client ON actions (client, undone, seq);
CREATE TABLE IF NOT EXISTS rejects (path TEXT PRIMARY KEY, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS puzzles (
    image_id INTEGER PRIMARY KEY REFERENCES images (id),
    grid_key TEXT NOT NULL,      -- file size, mtime and asked-for layout the grid was found for
    layout TEXT NOT NULL,
    boxes TEXT NOT NULL,         -- JSON [[left, top, right, bottom], ...], row-major
    split TEXT NOT NULL,         -- how the grid finder found the tiles
    prompt TEXT,                 -- NULL until given (prompts file or typed)
    answer TEXT                  -- JSON sorted tile numbers (1-based, reading order); NULL until saved
);
CREATE TABLE IF NOT EXISTS tile_labels (
    image_id INTEGER NOT NULL REFERENCES images (id),
    tile INTEGER NOT NULL,
    label_id INTEGER NOT NULL REFERENCES labels (id),
    PRIMARY KEY (image_id, tile, label_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tile_labels_label ON tile_labels (label_id);
"""


@dataclass(frozen=True)
class PuzzleGrid:
    """Where a puzzle's tiles are: ``key`` names the file version and asked-for layout it was found for."""

    key: str
    layout: str
    boxes: list[tuple[int, int, int, int]]  # (left, top, right, bottom), row-major
    split: str


class Conflict(ClipMatchError):
    """The change cannot be made in the current state (e.g. undoing a rename whose old name is taken)."""


def clean_label(name: object) -> str:
    """Trim and collapse whitespace; refuse empty, invalid-Unicode, over-long or control-character labels."""
    if not isinstance(name, str):
        raise ClipMatchError(f"label must be a string, got {type(name).__name__}")
    text = " ".join(name.split())
    if not text:
        raise ClipMatchError("label is empty")
    try:  # a lone surrogate (JSON's "\ud800") cannot be stored as UTF-8
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ClipMatchError(f"label is not valid Unicode: lone surrogate at character {error.start + 1}") from None
    if len(text) > MAX_LABEL_CHARS:
        raise ClipMatchError(f"label is longer than {MAX_LABEL_CHARS} characters: {text[:40]}...")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise ClipMatchError(f"label contains control characters: {text!r}")
    return text


class _Batch:
    """The changes that one commit makes durable, and the writers waiting for it."""

    def __init__(self) -> None:
        self.members = 0
        self.committed = threading.Event()
        self.error: sqlite3.Error | None = None


class LabelStore:
    """The annotation database of one DATASET_DIR, shared by all threads of the server."""

    def __init__(self, dataset_dir: str | Path):
        self.dataset_dir = ensure_dir(dataset_dir)
        self.path = self.dataset_dir / DB_NAME
        self._local = threading.local()
        self._write_lock = threading.Lock()  # held while a change runs or a commit is made
        self._writer: sqlite3.Connection | None = None
        self._batch = _Batch()
        self._arrivals = threading.Lock()
        self._arriving = 0  # writers waiting for the write lock: the last of them commits
        conn = self.connection()
        conn.executescript(_SCHEMA)
        found = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if found is None:
            with self._transaction() as conn:
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?), ('version', 0)", (SCHEMA_VERSION,))
        elif found[0] != SCHEMA_VERSION:
            raise ClipMatchError(f"{self.path}: annotation schema {found[0]}, this clip-match reads {SCHEMA_VERSION}")

    # -- connections and transactions ------------------------------------------------------

    def connection(self) -> sqlite3.Connection:
        """This thread's connection for reading (opened on first use)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def _connect(self, shared: bool = False) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=not shared)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as error:
            raise ClipMatchError(f"{self.path}: cannot open annotation database: {error}") from None
        return conn

    def close_thread_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One change, durable when this returns: made in a savepoint of the open write transaction,
        which the last writer in line commits for every change that joined it (group commit)."""
        with self._arrivals:
            self._arriving += 1
        with self._write_lock:
            with self._arrivals:
                self._arriving -= 1
            if self._writer is None:
                self._writer = self._connect(shared=True)
            conn, batch = self._writer, self._batch
            if not conn.in_transaction:
                conn.execute("BEGIN IMMEDIATE")
            conn.execute("SAVEPOINT change")
            try:
                yield conn
                conn.execute("RELEASE change")
                batch.members += 1
            except BaseException:
                conn.execute("ROLLBACK TO change")
                conn.execute("RELEASE change")
                raise
            finally:
                if not self._arriving or batch.members >= MAX_BATCH:
                    self._commit(conn, batch)
        batch.committed.wait()
        if batch.error is not None:
            raise ClipMatchError(f"{self.path}: the change was not saved: {batch.error}")

    def _commit(self, conn: sqlite3.Connection, batch: _Batch) -> None:
        self._batch = _Batch()
        try:
            conn.execute("COMMIT" if batch.members else "ROLLBACK")
        except sqlite3.Error as error:
            batch.error = error
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        batch.committed.set()

    @contextlib.contextmanager
    def _change(self) -> Iterator[tuple[sqlite3.Connection, int]]:
        """A write transaction with a fresh version number.

        Labels no image uses any more keep their row (undo refers to labels by id) but are not
        shown, suggested or exported.
        """
        with self._transaction() as conn:
            version = conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'version' RETURNING value").fetchone()[0]
            yield conn, version

    # -- scanning ---------------------------------------------------------------------------

    def get_meta(self, key: str) -> object:
        row = self.connection().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: object) -> None:
        with self._transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def use_mode(self, mode: str) -> None:
        """Label whole images or puzzles here; a folder keeps the mode it was started in."""
        current = self.get_meta("mode")
        if current is None and self.connection().execute("SELECT 1 FROM images LIMIT 1").fetchone():
            current = "images"  # made before puzzle mode existed
        if current not in (None, mode):
            held, remedy = ("puzzle answers", "drop --puzzles") if current == "puzzles" else (
                "image labels", "puzzles need their own")
            raise ClipMatchError(f"{self.dataset_dir} holds {held}; {remedy} or choose another --out folder")
        if current is None:
            self.set_meta("mode", mode)

    @property
    def mode(self) -> str:
        return self.get_meta("mode") or "images"

    def known_images(self) -> dict[str, ScannedImage]:
        rows = self.connection().execute("SELECT path, size, mtime_ns, width, height, format FROM images")
        return {row[0]: ScannedImage(*row) for row in rows}

    def sync_scan(self, images: Iterable[ScannedImage], rejects: Iterable[tuple[str, str]]) -> None:
        """Record a scan: new files are added, changed ones updated, vanished ones hidden (labels kept)."""
        with self._change() as (conn, version):
            conn.execute("UPDATE images SET present = 0")
            conn.executemany(
                "INSERT INTO images (path, size, mtime_ns, width, height, format, version) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (path) DO UPDATE SET present = 1, size = excluded.size, mtime_ns = excluded.mtime_ns, "
                "width = excluded.width, height = excluded.height, format = excluded.format, version = excluded.version",
                [(i.path, i.size, i.mtime_ns, i.width, i.height, i.format, version) for i in images],
            )
            conn.execute("DELETE FROM rejects")
            conn.executemany("INSERT OR REPLACE INTO rejects VALUES (?, ?)", list(rejects))

    def rejects(self) -> list[dict]:
        rows = self.connection().execute("SELECT path, reason FROM rejects").fetchall()
        return [{"path": path, "reason": reason} for path, reason in sorted(rows, key=lambda r: natural_key(r[0]))]

    # -- reading ----------------------------------------------------------------------------

    def image(self, image_id: int) -> ScannedImage | None:
        """The file record of a present image, or None."""
        row = self.connection().execute(
            "SELECT path, size, mtime_ns, width, height, format FROM images WHERE id = ? AND present = 1", (image_id,)
        ).fetchone()
        return None if row is None else ScannedImage(*row)

    def files(self) -> list[tuple[int, ScannedImage, bool]]:
        """(id, file record, done) of every present image in natural path order; done: labelled, answered or skipped."""
        rows = self.connection().execute(
            "SELECT id, path, size, mtime_ns, width, height, format, "
            "skipped OR EXISTS (SELECT 1 FROM image_labels il WHERE il.image_id = images.id) "
            "OR EXISTS (SELECT 1 FROM puzzles p WHERE p.image_id = images.id AND p.answer IS NOT NULL) "
            "FROM images WHERE present = 1"
        ).fetchall()
        rows.sort(key=lambda row: natural_key(row[1]))
        return [(row[0], ScannedImage(*row[1:7]), bool(row[7])) for row in rows]

    def state(self, since: int = 0) -> dict:
        """Present images changed after version ``since`` (all when 0, in natural path order) and the labels
        used after it, with their counts (a tab polls every few seconds: only what changed travels)."""
        conn = self.connection()
        conn.execute("BEGIN")  # one consistent snapshot for the reads
        try:
            version = conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0]
            rows = self._rows(conn, "i.present = 1 AND i.version > ?", (since,))
            labels = conn.execute(
                "SELECT l.name, l.last_used, COUNT(*) FROM labels l JOIN (SELECT image_id, label_id FROM image_labels "
                "UNION ALL SELECT image_id, label_id FROM tile_labels) il ON il.label_id = l.id "
                "JOIN images i ON i.id = il.image_id AND i.present = 1 WHERE l.last_used > ? GROUP BY l.id", (since,)
            ).fetchall()
        finally:
            conn.execute("COMMIT")
        return {
            "version": version,
            "images": sorted(rows, key=lambda row: natural_key(row["path"])),
            "labels": [{"name": n, "last_used": u, "count": c} for n, u, c in labels],
        }

    @staticmethod
    def _rows(conn: sqlite3.Connection, condition: str, args: tuple) -> list[dict]:
        """The page's rows of the images matching ``condition`` (on ``images i``), puzzles with their fields."""
        labels_of: dict[int, list[str]] = {}
        for image_id, name in conn.execute(
            "SELECT il.image_id, l.name FROM image_labels il JOIN labels l ON l.id = il.label_id "
            f"JOIN images i ON i.id = il.image_id WHERE {condition} ORDER BY l.name", args,
        ):
            labels_of.setdefault(image_id, []).append(name)
        tiles_of: dict[int, dict[str, list[str]]] = {}
        for image_id, tile, name in conn.execute(
            "SELECT tl.image_id, tl.tile, l.name FROM tile_labels tl JOIN labels l ON l.id = tl.label_id "
            f"JOIN images i ON i.id = tl.image_id WHERE {condition} ORDER BY l.name", args,
        ):
            tiles_of.setdefault(image_id, {}).setdefault(str(tile), []).append(name)
        rows = []
        for image_id, path, mtime, skipped, width, height, layout, boxes, split, prompt, answer in conn.execute(
            "SELECT i.id, i.path, i.mtime_ns, i.skipped, i.width, i.height, p.layout, p.boxes, p.split, p.prompt, "
            f"p.answer FROM images i LEFT JOIN puzzles p ON p.image_id = i.id WHERE {condition}", args,
        ):
            row = {"id": image_id, "path": path, "v": f"{mtime:x}", "skipped": bool(skipped),
                   "labels": labels_of.get(image_id, [])}
            if layout is not None:
                row["puzzle"] = {"layout": layout, "size": [width, height], "boxes": json.loads(boxes), "split": split,
                                 "prompt": prompt, "answer": None if answer is None else json.loads(answer),
                                 "tiles": tiles_of.get(image_id, {})}
            rows.append(row)
        return rows

    def labelled_images(self) -> list[tuple[str, list[str]]]:
        """(relative path, label names) of every present, unskipped image with at least one label, in path order."""
        conn = self.connection()
        rows = conn.execute(
            "SELECT i.path, l.name FROM images i JOIN image_labels il ON il.image_id = i.id "
            "JOIN labels l ON l.id = il.label_id WHERE i.present = 1 AND i.skipped = 0 ORDER BY l.name"
        ).fetchall()
        grouped: dict[str, list[str]] = {}
        for path, name in rows:
            grouped.setdefault(path, []).append(name)
        return sorted(grouped.items(), key=lambda item: natural_key(item[0]))

    def missing_labelled(self) -> list[str]:
        """Labelled images and answered puzzles whose files are gone from IMAGE_DIR."""
        rows = self.connection().execute(
            "SELECT DISTINCT i.path FROM images i WHERE i.present = 0 AND (i.id IN (SELECT image_id FROM image_labels) "
            "OR i.id IN (SELECT image_id FROM puzzles WHERE answer IS NOT NULL))"
        ).fetchall()
        return sorted((row[0] for row in rows), key=natural_key)

    def answered_puzzles(self) -> list[dict]:
        """The page's rows of every present, unskipped puzzle with a saved answer, in path order."""
        rows = self._rows(self.connection(), "i.present = 1 AND i.skipped = 0 AND i.id IN "
                                             "(SELECT image_id FROM puzzles WHERE answer IS NOT NULL)", ())
        return sorted(rows, key=lambda row: natural_key(row["path"]))

    def puzzle_grid_keys(self) -> dict[str, str]:
        """Relative path -> the key of the grid stored for it."""
        return dict(self.connection().execute(
            "SELECT i.path, p.grid_key FROM puzzles p JOIN images i ON i.id = p.image_id"))

    def sync_puzzles(self, grids: Mapping[str, PuzzleGrid], prompts: Mapping[str, str]) -> None:
        """Store newly found grids of present puzzles (a saved answer and tile labels are kept while the layout
        stays) and give prompts to puzzles that have none yet (a prompt set in the page is kept)."""
        with self._change() as (conn, version):
            ids = dict(conn.execute("SELECT path, id FROM images WHERE present = 1"))
            touched = []
            for path, grid in grids.items():
                # (all right-hand sides read the old row: answer survives only an unchanged layout)
                if conn.execute(
                    "INSERT INTO puzzles (image_id, grid_key, layout, boxes, split) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (image_id) DO UPDATE SET grid_key = excluded.grid_key, boxes = excluded.boxes, "
                    "split = excluded.split, answer = CASE WHEN layout = excluded.layout THEN answer END, "
                    "layout = excluded.layout WHERE grid_key != excluded.grid_key",
                    (ids[path], grid.key, grid.layout, json.dumps(grid.boxes), grid.split),
                ).rowcount:
                    conn.execute("DELETE FROM tile_labels WHERE image_id = ? AND tile > ?",
                                 (ids[path], len(grid.boxes)))
                    touched.append(ids[path])
            for path, prompt in prompts.items():
                if conn.execute("UPDATE puzzles SET prompt = ? WHERE image_id = ? AND prompt IS NULL",
                                (clean_label(prompt), ids[path])).rowcount:
                    touched.append(ids[path])
            self._touch(conn, touched, version)

    # -- changes ----------------------------------------------------------------------------

    def change_labels(self, client: str, image_id: int, add: Iterable[str] = (), remove: Iterable[str] = (),
                      tile: int | None = None) -> dict:
        """Add and remove labels of one image (or of one tile of a puzzle, numbered from 1 in reading order)
        as one undoable action; returns the image's new row."""
        add = list(dict.fromkeys(clean_label(name) for name in add))
        remove = [name for name in dict.fromkeys(clean_label(name) for name in remove) if name not in add]
        with self._change() as (conn, version):
            self._require_image(conn, image_id)
            if tile is not None:
                self._check_tiles(conn, image_id, [tile])
            added = [label for label in (self._label(conn, name, version) for name in add)
                     if self._attach(conn, image_id, label, tile)]
            removed = [label for label in (self._label_id(conn, name) for name in remove)
                       if label is not None and self._detach(conn, image_id, label, tile)]
            if added or removed:
                self._touch(conn, [image_id], version)
                data = {"added": added, "removed": removed} | ({} if tile is None else {"tile": tile})
                self._log(conn, client, "labels", image_id, data)
        return self.image_row(image_id)

    def save_puzzle(self, client: str, image_id: int, prompt: object = None, answer: object = None) -> dict:
        """Set a puzzle's prompt and/or its answer (the matching tiles, numbered from 1 in reading order) as
        one undoable action; returns the puzzle's new row."""
        prompt = None if prompt is None else clean_label(prompt)
        with self._change() as (conn, version):
            self._require_image(conn, image_id)
            before = conn.execute("SELECT prompt, answer FROM puzzles WHERE image_id = ?", (image_id,)).fetchone()
            if before is None:
                raise ClipMatchError(f"image {image_id} is not a puzzle")
            after = (prompt or before[0], before[1] if answer is None
                     else json.dumps(self._check_tiles(conn, image_id, answer)))
            if answer is not None and after[0] is None:
                raise ClipMatchError("this puzzle has no prompt yet: give the prompt with its answer")
            if after != tuple(before):
                conn.execute("UPDATE puzzles SET prompt = ?, answer = ? WHERE image_id = ?", (*after, image_id))
                self._touch(conn, [image_id], version)
                self._log(conn, client, "puzzle", image_id, {"before": list(before), "after": list(after)})
        return self.image_row(image_id)

    def set_skipped(self, client: str, image_id: int, skipped: bool) -> dict:
        with self._change() as (conn, version):
            before = self._require_image(conn, image_id)
            if before != skipped:
                conn.execute("UPDATE images SET skipped = ? WHERE id = ?", (int(skipped), image_id))
                self._touch(conn, [image_id], version)
                self._log(conn, client, "skip", image_id, {"skipped": skipped})
        return self.image_row(image_id)

    def rename_label(self, client: str, old: str, new: str) -> dict:
        """Rename ``old`` everywhere; if ``new`` is already in use, merge ``old`` into it."""
        old, new = clean_label(old), clean_label(new)
        with self._change() as (conn, version):
            old_id = self._label_id(conn, old)
            images = [] if old_id is None else self._images_with(conn, old_id)
            if not images:
                raise ClipMatchError(f"no label named {old!r}")
            if old == new:
                return {"kind": "rename", "images": len(images)}
            new_id = self._label_id(conn, new)
            if new_id is None:
                conn.execute("UPDATE labels SET name = ?, last_used = ? WHERE id = ?", (new, version, old_id))
                self._log(conn, client, "rename", None, {"label": old_id, "from": old, "to": new})
                kind = "rename"
            else:
                had_new = set(self._images_with(conn, new_id))
                self._label(conn, new, version)
                conn.execute("INSERT OR IGNORE INTO image_labels SELECT image_id, ? FROM image_labels WHERE label_id = ?",
                             (new_id, old_id))
                conn.execute("DELETE FROM image_labels WHERE label_id = ?", (old_id,))
                moved = [image for image in images if image not in had_new]
                self._log(conn, client, "merge", None, {"source": old_id, "target": new_id, "images": images,
                                                        "moved": moved})
                kind = "merge" if had_new else "rename"
            self._touch(conn, images, version)
        return {"kind": kind, "images": len(images)}

    def undo(self, client: str) -> dict | None:
        """Revert ``client``'s last action not yet undone; returns what was undone (with label names), or None."""
        conflict = None
        with self._change() as (conn, version):
            row = conn.execute(
                "SELECT seq, kind, image_id, data FROM actions WHERE client = ? AND undone = 0 ORDER BY seq DESC LIMIT 1",
                (client,),
            ).fetchone()
            if row is None:
                return None
            seq, kind, image_id, data = row
            data = json.loads(data)
            try:
                touched = self._revert(conn, kind, image_id, data)
            except Conflict as error:  # cannot be reverted any more: drop it so the next Ctrl+Z goes on
                conflict, touched = error, []
            conn.execute("UPDATE actions SET undone = 1 WHERE seq = ?", (seq,))
            self._touch(conn, touched, version)
            described = self._describe(conn, kind, image_id, data)
        if conflict is not None:
            raise conflict
        return described

    def import_labels(self, labels_by_path: Mapping[str, Iterable[str]]) -> int:
        """Attach labels to images by relative path (not undoable); returns how many images got labels."""
        with self._change() as (conn, version):
            ids = dict(conn.execute("SELECT path, id FROM images WHERE present = 1"))
            for path, names in labels_by_path.items():
                if path not in ids:
                    raise ClipMatchError(f"{path}: not an image of this dataset")
                for name in names:
                    self._attach(conn, ids[path], self._label(conn, clean_label(name), version))
            self._touch(conn, [ids[path] for path in labels_by_path], version)
        return len(labels_by_path)

    def image_row(self, image_id: int) -> dict:
        rows = self._rows(self.connection(), "i.id = ?", (image_id,))
        if not rows:
            raise ClipMatchError(f"no image with id {image_id}")
        return rows[0]

    # -- helpers ------------------------------------------------------------------------------

    def _revert(self, conn: sqlite3.Connection, kind: str, image_id: int | None, data: dict) -> list[int]:
        """Apply the inverse of one logged action (labels by id, so renames since do not matter)."""
        if kind == "labels":
            for label in data["added"]:
                self._detach(conn, image_id, label, data.get("tile"))
            for label in data["removed"]:
                self._attach(conn, image_id, label, data.get("tile"))
            return [image_id]
        if kind == "puzzle":
            conn.execute("UPDATE puzzles SET prompt = ?, answer = ? WHERE image_id = ?", (*data["before"], image_id))
            return [image_id]
        if kind == "skip":
            conn.execute("UPDATE images SET skipped = ? WHERE id = ?", (int(not data["skipped"]), image_id))
            return [image_id]
        if kind == "rename":
            holder = self._label_id(conn, data["from"])
            if holder is not None and holder != data["label"]:
                raise Conflict(f"cannot undo the rename: a label named {data['from']!r} exists again")
            conn.execute("UPDATE labels SET name = ? WHERE id = ?", (data["from"], data["label"]))
            return self._images_with(conn, data["label"])
        if kind == "merge":
            for image in data["images"]:
                self._attach(conn, image, data["source"])
            for image in data["moved"]:
                self._detach(conn, image, data["target"])
            return data["images"]
        raise ClipMatchError(f"unknown action kind {kind!r} in {self.path}")

    def _describe(self, conn: sqlite3.Connection, kind: str, image_id: int | None, data: dict) -> dict:
        """An undone action in label names, for the page to show."""
        name = functools.partial(self._name, conn)
        if kind == "labels":
            return {"kind": kind, "image_id": image_id, "added": [name(l) for l in data["added"]],
                    "removed": [name(l) for l in data["removed"]]} | {k: v for k, v in data.items() if k == "tile"}
        if kind == "puzzle":
            prompt, answer = data["after"]
            return {"kind": kind, "image_id": image_id, "prompt": prompt, "answer": answer and json.loads(answer)}
        if kind == "skip":
            return {"kind": kind, "image_id": image_id, "skipped": data["skipped"]}
        if kind == "rename":
            return {"kind": kind, "image_id": None, "from": data["from"], "to": data["to"]}
        return {"kind": kind, "image_id": None, "from": name(data["source"]), "to": name(data["target"])}

    @staticmethod
    def _require_image(conn: sqlite3.Connection, image_id: int) -> bool:
        row = conn.execute("SELECT skipped FROM images WHERE id = ? AND present = 1", (image_id,)).fetchone()
        if row is None:
            raise ClipMatchError(f"no image with id {image_id}")
        return bool(row[0])

    @staticmethod
    def _check_tiles(conn: sqlite3.Connection, image_id: int, tiles: object) -> list[int]:
        """``tiles`` as sorted distinct tile numbers of this puzzle, or an error naming the grid."""
        row = conn.execute("SELECT layout, boxes FROM puzzles WHERE image_id = ?", (image_id,)).fetchone()
        if row is None:
            raise ClipMatchError(f"image {image_id} is not a puzzle")
        count = len(json.loads(row[1]))
        if not isinstance(tiles, list) or not tiles:
            raise ClipMatchError("the answer must be a non-empty list of tile numbers (skip a puzzle without one)")
        for tile in tiles:
            if type(tile) is not int or not 1 <= tile <= count:
                raise ClipMatchError(f"tile {tile!r} is outside the {row[0]} grid (tiles 1-{count})")
        return sorted(set(tiles))

    @staticmethod
    def _label_id(conn: sqlite3.Connection, name: str) -> int | None:
        row = conn.execute("SELECT id FROM labels WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    @staticmethod
    def _name(conn: sqlite3.Connection, label_id: int) -> str:
        return conn.execute("SELECT name FROM labels WHERE id = ?", (label_id,)).fetchone()[0]

    @staticmethod
    def _label(conn: sqlite3.Connection, name: str, version: int) -> int:
        """The id of label ``name`` (created if new), marked as used now."""
        return conn.execute("INSERT INTO labels (name, last_used) VALUES (?, ?) ON CONFLICT (name) "
                            "DO UPDATE SET last_used = excluded.last_used RETURNING id", (name, version)).fetchone()[0]

    @staticmethod
    def _images_with(conn: sqlite3.Connection, label_id: int) -> list[int]:
        return [row[0] for row in conn.execute("SELECT image_id FROM image_labels WHERE label_id = ?", (label_id,))]

    @staticmethod
    def _attach(conn: sqlite3.Connection, image_id: int, label_id: int, tile: int | None = None) -> bool:
        if tile is None:
            return conn.execute("INSERT OR IGNORE INTO image_labels VALUES (?, ?)", (image_id, label_id)).rowcount == 1
        return conn.execute("INSERT OR IGNORE INTO tile_labels VALUES (?, ?, ?)",
                            (image_id, tile, label_id)).rowcount == 1

    @staticmethod
    def _detach(conn: sqlite3.Connection, image_id: int, label_id: int, tile: int | None = None) -> bool:
        if tile is None:
            return conn.execute("DELETE FROM image_labels WHERE image_id = ? AND label_id = ?",
                                (image_id, label_id)).rowcount == 1
        return conn.execute("DELETE FROM tile_labels WHERE image_id = ? AND tile = ? AND label_id = ?",
                            (image_id, tile, label_id)).rowcount == 1

    @staticmethod
    def _touch(conn: sqlite3.Connection, image_ids: Iterable[int], version: int) -> None:
        conn.executemany("UPDATE images SET version = ? WHERE id = ?", [(version, i) for i in image_ids])

    @staticmethod
    def _log(conn: sqlite3.Connection, client: str, kind: str, image_id: int | None, data: dict) -> None:
        conn.execute("INSERT INTO actions (client, kind, image_id, data) VALUES (?, ?, ?, ?)",
                     (client, kind, image_id, json.dumps(data, ensure_ascii=False)))
