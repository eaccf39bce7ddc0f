"""Clean formula renders kept on disk by content, so that a formula is typeset once.

`clip-match index add` and rebuilds of an index meet the same formulas again; TeX costs ~2 ms a
formula in a batch and ~150 ms for each formula that breaks a batch. An entry's name is the
sha256 of the LaTeX typeset, the renderer's settings and `CACHE_VERSION`, so any change to one of
them is a miss, never a stale image. A failure is kept as well (its error text): a formula that
broke TeX breaks it the next time too; delete the folder to try again after installing packages.
Entries appear whole (written beside, then renamed), so builds can share a cache.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from PIL import Image, UnidentifiedImageError

from ..errors import ClipMatchError
from .render import Rendered, Renderer

CACHE_VERSION = 1  # raise when a renderer's output changes in a way its settings do not show


def cache_key(formula: str, renderer: Renderer) -> str:
    payload = json.dumps({"version": CACHE_VERSION, "formula": formula, **renderer.settings}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class RenderCache:
    """``directory/ab/abcd….png`` (a clean render) or ``….failed`` (why it failed), by `cache_key`."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def get(self, key: str) -> Rendered | None:
        """The cached result, or None when there is none (or the file is unreadable or empty, as a crash
        can leave it: render it again)."""
        failed = self._path(key, ".failed")
        error = failed.read_text(encoding="utf-8", errors="replace") if failed.is_file() else ""
        if error:
            return Rendered(None, error)
        try:
            with Image.open(self._path(key, ".png")) as image:
                return Rendered(image.convert("L"))
        except (FileNotFoundError, UnidentifiedImageError, OSError):
            return None

    def put(self, key: str, rendered: Rendered) -> None:
        if rendered.image is None:
            _replace(self._path(key, ".failed"), (rendered.error or "failed").encode("utf-8"))
            return
        buffer = io.BytesIO()
        rendered.image.save(buffer, "PNG", compress_level=1)
        _replace(self._path(key, ".png"), buffer.getvalue())

    def _path(self, key: str, suffix: str) -> Path:
        return self.directory / key[:2] / f"{key}{suffix}"


def _replace(path: Path, data: bytes) -> None:
    """Write ``path`` through a temporary sibling and a rename, so that readers never see half a file.
    Not fsynced (~5 ms a file here, more than TeX takes): after a crash an entry may be empty or
    cut short, and `RenderCache.get` renders it again."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise ClipMatchError(f"{path.parent}: cannot write the render cache here: {error.strerror or error}") from None
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class Typeset:
    """One formula's render (``image`` and its cache ``key``), or, with ``image`` None, the
    renderer's ``errors`` for each text tried."""

    image: Image.Image | None
    key: str = ""
    errors: tuple[str, ...] = ()


@dataclass
class TypesetCounts:
    typeset: int = 0      # renderer runs now (a formula retried with its normalised text counts twice)
    from_cache: int = 0


def typeset(formulas: Sequence[Sequence[str]], renderer: Renderer, cache: RenderCache,
            counts: TypesetCounts) -> list[Typeset]:
    """Render each formula by ``renderer``, trying its texts in turn (the LaTeX as written, then
    normalised: some sources break where the normalised tokens do not), cache first. The renderer
    sees all of an attempt's misses in one call (one LaTeX document): give ~200 at a time."""
    results: list[Typeset | None] = [None] * len(formulas)
    errors: list[list[str]] = [[] for _ in formulas]
    for attempt in range(max(map(len, formulas), default=0)):
        pending = [i for i, texts in enumerate(formulas) if results[i] is None and attempt < len(texts)]
        keys = {i: cache_key(formulas[i][attempt], renderer) for i in pending}
        found = {i: cache.get(keys[i]) for i in pending}
        misses = [i for i in pending if found[i] is None]
        counts.from_cache += len(pending) - len(misses)
        counts.typeset += len(misses)
        if misses:
            for i, rendered in zip(misses, renderer([formulas[i][attempt] for i in misses])):
                cache.put(keys[i], rendered)
                found[i] = rendered
        for i in pending:
            if found[i].image is not None:
                results[i] = Typeset(found[i].image, keys[i])
            else:
                errors[i].append(found[i].error or f"{renderer.name} failed")
    return [result or Typeset(None, errors=tuple(error)) for result, error in zip(results, errors)]
