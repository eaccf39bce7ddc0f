"""Atomic file and directory writes: build under a temporary name, rename when complete.

Every writer in clip_match goes through these helpers so that an interrupted run (Ctrl+C,
SIGKILL, disk full) never leaves a half-written file or directory under the final name.
Temporary names carry their writer (``.NAME.HOST-PID.XXXX.tmp``): the next write of the same
path removes those whose process is gone, so a killed build leaves nothing behind for long.
`exclusive_lock` keeps a second process out of a directory one process writes for a long time.
"""
from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import IO, Iterable, Iterator

from .errors import ClipMatchError


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:40] or "host"


def _temporary_prefix(path: Path) -> str:
    """``.NAME.HOST-PID.``: whose temporary sibling of ``path`` this is."""
    return f".{path.name}.{_host()}-{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def sweep_stale(path: Path) -> list[Path]:
    """Remove the temporary siblings of ``path`` (``.tmp`` / ``.old``) left by writers on this host
    whose process is gone; returns what was removed. POSIX only (elsewhere nothing is removed)."""
    if os.name != "posix":
        return []
    removed = []
    owner = re.compile(rf"\.{re.escape(path.name)}\.{re.escape(_host())}-(\d+)\.[^/]*\.(tmp|old)")
    for sibling in path.parent.glob(f".{glob.escape(path.name)}.*"):
        match = owner.fullmatch(sibling.name)
        if match is None or _alive(int(match[1])):
            continue
        if sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling, ignore_errors=True)
        else:
            sibling.unlink(missing_ok=True)
        removed.append(sibling)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb", **open_kwargs) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; fsync and rename it over ``path`` on success."""
    path = Path(path)
    if path.is_dir():
        raise ClipMatchError(f"{path} is a directory; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(path)
        fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise ClipMatchError(f"{path}: cannot write here: {error.strerror or error}") from None
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
    try:
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def ensure_dir(path: str | os.PathLike) -> Path:
    """``path`` as an existing directory (made with its parents if needed), or an error naming it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # e.g. a file of that name, or no permission
        raise ClipMatchError(f"{path}: cannot create this directory: {error.strerror or error}") from None
    return path


def check_output_dir(path: str | os.PathLike, overwrite: bool = False,
                     inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """``path`` as a Path, or an error: it exists and ``overwrite`` is not set, or it holds one of the
    run's ``inputs`` (replacing it would delete them). Callers with long work check before it."""
    path = Path(path)
    resolved = path.resolve()
    for item in inputs:
        if Path(item).resolve().is_relative_to(resolved):
            raise ClipMatchError(f"{path} holds the input {item}; choose an output directory outside the inputs")
    if path.exists() and not path.is_dir():
        raise ClipMatchError(f"{path} is a file; give a directory name")
    if path.exists() and not overwrite:
        raise ClipMatchError(f"{path} already exists (pass --overwrite to replace it)")
    return path


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # <fcntl.h>, <linux/fs.h>


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically with Linux's renameat2(RENAME_EXCHANGE); False where the C library
    or the file system lacks it (nothing has moved then)."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, TypeError, AttributeError):  # no C library to open (Windows), no renameat2 (macOS)
        return False
    return renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False,
               inputs: Iterable[str | os.PathLike] = ()) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``path``.

    Refuses what `check_output_dir` refuses. The old directory, if replaced, is removed only after
    the new one is complete; on Linux the two trade places in one step (`_exchange`), elsewhere the
    old one is first moved aside, so a crash at that moment leaves it in a ``.old`` sibling.
    """
    path = check_output_dir(path, overwrite, inputs)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(path)
        tmp = Path(tempfile.mkdtemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=path.parent))
    except OSError as error:
        raise ClipMatchError(f"{path}: cannot write here: {error.strerror or error}") from None
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the usual permissions
    try:
        yield tmp
        if path.exists() and _exchange(tmp, path):
            shutil.rmtree(tmp, ignore_errors=True)  # (now the old directory)
        elif path.exists():
            old = Path(tempfile.mkdtemp(prefix=_temporary_prefix(path), suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` while the block runs (the OS drops it when the
    process dies, however it dies). Held by another process: an error naming its pid, at once.
    Where there is no ``fcntl`` (Windows) the block runs unlocked."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path = Path(path)
    try:
        handle = open(path, "a+", encoding="utf-8")
    except OSError as error:
        raise ClipMatchError(f"{path}: cannot create the lock file: {error.strerror or error}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "a process that did not say its pid"
            raise ClipMatchError(f"{path.parent} is in use by another {what} ({holder}); wait for it to end "
                                 "or stop it, or use another output") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        yield
