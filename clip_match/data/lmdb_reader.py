"""Read a Chinese-CLIP LMDB split (``imgs/`` + ``pairs/``), whoever wrote it.

Pairs are pickled tuples. Unpickling untrusted data can run arbitrary code, so pairs are
read with an unpickler that refuses to look up any class or function: a plain tuple of
ints and a str needs none, and anything else fails before it can execute.

The LMDB is opened lazily and again in each process, so a reader can be handed to
DataLoader worker processes (fork or spawn).
"""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Iterator, NamedTuple

import lmdb
from PIL import Image

from ..errors import ClipMatchError, where
from ..runtime.images import decode_image
from .formats import decode_b64

NUM_IMAGES_KEY = b"num_images"
NUM_SAMPLES_KEY = b"num_samples"


class Pair(NamedTuple):
    image_id: int
    text_id: int
    text: str


class _NoGlobalsUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: D401 - pickle hook
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def load_pair(data: bytes, source: str) -> Pair:
    """Unpickle one pair without running code; anything but ``(int, int, str)`` is an error."""
    try:
        value = _NoGlobalsUnpickler(io.BytesIO(data)).load()
    except Exception as error:  # any malformed or hostile pickle
        raise ClipMatchError(f"{source}: not a plain (image_id, text_id, text) pickle: {error}") from None
    if not (
        type(value) is tuple
        and len(value) == 3
        and type(value[0]) is int
        and type(value[1]) is int
        and type(value[2]) is str
    ):
        raise ClipMatchError(f"{source}: expected a tuple (int, int, str), got {_describe(value)}")
    return Pair(*value)


def _describe(value: object) -> str:
    if isinstance(value, tuple):
        return "tuple (" + ", ".join(type(v).__name__ for v in value) + ")"
    return type(value).__name__


def _open_env(path: Path) -> lmdb.Environment:
    if not (path / "data.mdb").is_file():
        raise ClipMatchError(f"{path}: not an LMDB directory (no data.mdb)")
    try:
        return lmdb.open(str(path), readonly=True, create=False, lock=False, readahead=False, meminit=False,
                         max_readers=512)
    except lmdb.Error as error:
        raise ClipMatchError(f"{path / 'data.mdb'}: not a readable LMDB database: {error}") from None


def _count(txn: lmdb.Transaction, key: bytes, path: Path) -> int:
    raw = txn.get(key)
    if raw is None:
        raise ClipMatchError(f"{where(path, key=key.decode())}: missing")
    try:
        return int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ClipMatchError(f"{where(path, key=key.decode())}: not an integer: {raw[:40]!r}") from None


class LMDBReader:
    """Random access to one split: ``len(r)``, ``r[i] -> Pair``, images by id."""

    def __init__(self, split_dir: str | os.PathLike):
        self.split_dir = Path(split_dir)
        self.imgs_dir = self.split_dir / "imgs"
        self.pairs_dir = self.split_dir / "pairs"
        for part in (self.imgs_dir, self.pairs_dir):
            if not part.is_dir():
                raise ClipMatchError(f"{self.split_dir}: not an LMDB split (missing {part.name}/)")
        self._pid: int | None = None
        self._envs: tuple[lmdb.Environment, lmdb.Environment] | None = None
        self._txns: tuple[lmdb.Transaction, lmdb.Transaction] | None = None
        imgs, pairs = self._open()
        self._len = _count(pairs, NUM_SAMPLES_KEY, self.pairs_dir)
        self.num_images = _count(imgs, NUM_IMAGES_KEY, self.imgs_dir)

    def _open(self) -> tuple[lmdb.Transaction, lmdb.Transaction]:
        """Return (imgs, pairs) read transactions, opening the LMDBs in this process if needed."""
        if self._txns is None or self._pid != os.getpid():
            self._envs = (_open_env(self.imgs_dir), _open_env(self.pairs_dir))
            self._txns = (self._envs[0].begin(), self._envs[1].begin())
            self._pid = os.getpid()
        return self._txns

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> Pair:
        if not -self._len <= index < self._len:
            raise IndexError(f"pair index {index} out of range for {self._len} pairs")
        key = str(index % self._len)
        data = self._open()[1].get(key.encode())
        if data is None:
            raise ClipMatchError(f"{where(self.pairs_dir, key=key)}: missing pair")
        return load_pair(data, where(self.pairs_dir, key=key))

    def __iter__(self) -> Iterator[Pair]:
        return (self[i] for i in range(self._len))

    def image_b64(self, image_id: int) -> bytes:
        """The stored base64 text for ``image_id``, as written."""
        b64 = self._open()[0].get(str(int(image_id)).encode())
        if b64 is None:
            raise ClipMatchError(f"{where(self.imgs_dir, key=image_id)}: no such image")
        return b64

    def image_bytes(self, image_id: int) -> bytes:
        """The original image file bytes stored for ``image_id``."""
        return decode_b64(self.image_b64(image_id), where(self.imgs_dir, key=image_id))

    def image(self, image_id: int) -> Image.Image:
        """The decoded image (EXIF orientation applied, 16-bit scaled to 8-bit, mode otherwise kept)."""
        return decode_image(self.image_bytes(image_id), where(self.imgs_dir, key=image_id))

    def image_ids(self) -> list[int]:
        """All image ids, in key order."""
        with self._open()[0].cursor() as cursor:
            return [self._image_id(key) for key in cursor.iternext(keys=True, values=False) if key != NUM_IMAGES_KEY]

    def images(self) -> Iterator[tuple[int, bytes]]:
        """Every (image id, stored base64 text), in key order, in one pass over the database."""
        with self._open()[0].cursor() as cursor:
            for key, b64 in cursor.iternext(keys=True, values=True):
                if key != NUM_IMAGES_KEY:
                    yield self._image_id(key), b64

    def _image_id(self, key: bytes) -> int:
        if not key.lstrip(b"-").isdigit():
            raise ClipMatchError(f"{where(self.imgs_dir, key=key.decode('utf-8', 'replace'))}: key is not an integer id")
        return int(key)

    def close(self) -> None:
        if self._txns is not None and self._pid == os.getpid():
            for txn in self._txns:
                txn.abort()
            for env in self._envs or ():
                env.close()
        self._envs = self._txns = self._pid = None

    def __enter__(self) -> "LMDBReader":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict:
        """Pickle without the open handles; the receiving process reopens lazily."""
        state = self.__dict__.copy()
        state.update(_pid=None, _envs=None, _txns=None)
        return state

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass
