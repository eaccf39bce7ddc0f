"""Torch-free encoder: a model bundle's two ONNX towers behind onnxruntime.

Images go through `clip_match.runtime.images.open_image` (strict decoding, EXIF orientation) and
`preprocess` (cn_clip's transform); texts through `normalize_text` and the bundle's WordPiece
vocabulary. Texts are sorted by length and each batch is padded only to its longest text: the
text tower's cost grows with sequence length and short labels need far fewer than 52 tokens.
Outputs are L2-normalised float32, so a dot product is the cosine similarity.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Sequence

import numpy as np
import onnxruntime as ort

from ..checks import positive_batch_size
from ..errors import ClipMatchError
from .bundle import MANIFEST_NAME, Bundle, check_precision
from .images import ImageInput, open_image
from .preprocess import preprocess
from .tokenizer import Tokenizer, normalize_text

DEVICES = ("auto", "cpu", "cuda")
_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"


def _providers(device: str) -> list[str]:
    """onnxruntime providers for ``device``: "auto" takes CUDA when this onnxruntime has it."""
    if device not in DEVICES:
        raise ClipMatchError(f"unknown device {device!r}; valid devices: {', '.join(DEVICES)}")
    available = ort.get_available_providers()
    if device == "cuda" and _CUDA not in available:
        raise ClipMatchError(
            "device 'cuda' requested but this onnxruntime has no CUDAExecutionProvider "
            "(install onnxruntime-gpu, or use device='cpu')"
        )
    if device == "cpu" or _CUDA not in available:
        return [_CPU]
    return [_CUDA, _CPU]


class Encoder:
    """Image and text embeddings from a model bundle. Build with `Encoder.load`."""

    def __init__(self, bundle: Bundle, image_session: ort.InferenceSession, text_session: ort.InferenceSession,
                 precision: str, threads: int | None = None):
        self.bundle = bundle
        self.precision = precision
        self.embed_dim = bundle.embed_dim
        self.fingerprint = bundle.fingerprint
        self.context_length = bundle.context_length
        self.resolution = bundle.resolution
        self.framing = bundle.framing
        self.device = "cuda" if _CUDA in image_session.get_providers() else "cpu"
        self._image_tower = Tower(image_session)
        self._text_tower = Tower(text_session)
        self._tokenizer = Tokenizer(bundle.vocab_path)
        self._mean = tuple(bundle.manifest["mean"])
        self._std = tuple(bundle.manifest["std"])
        # Tiles are resized in parallel (Pillow releases the GIL): 9 tiles to 224 px, 6.7 -> 4.7 ms on 2 cores.
        self._resize_threads = threads or _usable_cpus()
        self._resize_pool: tuple[int, ThreadPoolExecutor] | None = None  # (owning process id, pool)

    @classmethod
    def load(cls, bundle_dir: str | os.PathLike | None = None, device: str = "auto", precision: str | None = None,
             threads: int | None = None) -> Encoder:
        """Open a bundle directory or packaged model ("demo", the default; "formula") on ``device``
        ("auto", "cpu", "cuda").

        ``precision`` defaults to fp16 on CUDA and fp32 on CPU when the bundle has them;
        ``threads`` sets onnxruntime's intra-op threads and the image-resizing threads (default:
        onnxruntime's choice, and one resizing thread per usable CPU).
        """
        bundle = Bundle.load(bundle_dir)
        providers = _providers(device)
        on_cuda = providers[0] == _CUDA
        if precision is None:
            preferred = ("fp16", "fp32", "int8") if on_cuda else ("fp32", "int8", "fp16")
            precision = next(p for p in preferred if p in bundle.precisions)
        check_precision(precision)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # The two towers alternate with Python work (decoding, cutting tiles): a pool that spins after
        # its run keeps a core busy that the next session needs (a 9-tile solve on 2 cores: 28 -> 16 ms
        # median), for about 8 % on back-to-back calls of one session.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        sessions = [
            _session(bundle.tower_path(tower, precision), options, providers) for tower in ("image", "text")
        ]
        _check_shapes(bundle, *sessions)
        return cls(bundle, *sessions, precision=precision, threads=threads)

    def encode_texts(self, texts: str | Sequence[str], batch_size: int = 256) -> np.ndarray:
        """(n, embed_dim) L2-normalised float32 embeddings; texts longer than the context are truncated.

        A text the model cannot read (empty once the tokenizer's dropped characters are gone, or only
        [UNK] tokens) is an error naming it: its vector would be the same for any such text."""
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, Sequence):
            texts = list(texts)
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise ClipMatchError(f"texts[{index}]: expected a str, got {type(text).__name__}")
        ids = self._tokenizer([normalize_text(t) for t in texts], self.context_length)
        self._check_readable(texts, ids)
        lengths = (ids != 0).sum(axis=1)
        order = np.argsort(lengths, kind="stable")
        features = np.empty((len(texts), self.embed_dim), dtype=np.float32)
        for start in range(0, len(order), positive_batch_size(batch_size)):
            rows = order[start:start + batch_size]
            width = self._text_tower.length or int(lengths[rows].max())
            batch = np.zeros((len(rows), width), dtype=ids.dtype)
            batch[:, :min(width, ids.shape[1])] = ids[rows, :width]
            features[rows] = self._text_tower.run(batch)
        return _l2_normalise(features)

    def _check_readable(self, texts: Sequence[str], ids: np.ndarray) -> None:
        tokens = ids[:, 1:]  # after [CLS]
        body = (tokens != 0) & (tokens != self._tokenizer.sep_id)
        unreadable = np.flatnonzero(~(body & (tokens != self._tokenizer.unk_id)).any(axis=1))
        if unreadable.size:
            row = int(unreadable[0])
            text = texts[row] if len(texts[row]) <= 80 else texts[row][:77] + "..."
            reason = ("every token is unknown to the model's vocabulary ([UNK])" if body[row].any() else
                      "nothing is left once the characters the tokenizer drops are gone")
            others = f" (and {unreadable.size - 1} more)" if unreadable.size > 1 else ""
            raise ClipMatchError(f"text {text!r}{others}: {reason}; give words the model knows")

    def count_truncated(self, texts: Sequence[str]) -> int:
        """How many of ``texts`` exceed the context length (`encode_texts` truncates them)."""
        room = self.context_length - 2  # [CLS] and [SEP]
        return sum(len(self._tokenizer.encode(normalize_text(text))) > room for text in texts)

    def encode_images(self, items: ImageInput | Iterable[ImageInput], batch_size: int = 32) -> np.ndarray:
        """(n, embed_dim) L2-normalised float32 embeddings of paths, bytes, PIL images or uint8 arrays.

        An unreadable image raises `ClipMatchError` naming it (its path, or ``images[i]``).
        """
        items = [items] if is_single_image(items) else list(items)
        features = np.empty((len(items), self.embed_dim), dtype=np.float32)
        for start in range(0, len(items), positive_batch_size(batch_size)):
            chunk = items[start:start + batch_size]
            pictures = [open_image(item, input_name(item, start + i)) for i, item in enumerate(chunk)]
            batch = preprocess(pictures, self.resolution, self._mean, self._std, self._resizers(),
                               self.framing)
            features[start:start + len(chunk)] = self._image_tower.run(batch)
        return _l2_normalise(features)

    def _resizers(self) -> ThreadPoolExecutor | None:
        """This process's resizing threads, started on first use (a forked child starts its own: the
        parent's threads do not exist there); None for one thread."""
        if self._resize_threads < 2:
            return None
        if self._resize_pool is None or self._resize_pool[0] != os.getpid():
            self._resize_pool = (os.getpid(), ThreadPoolExecutor(self._resize_threads, "clip_match-resize"))
        return self._resize_pool[1]


class Tower:
    """One ONNX tower, called by its own input name (cn_clip's "image"/"text", or "input_ids" in bundles
    exported before), in pieces of its fixed batch size when it has one (cn_clip's own exports take
    exactly one image, or one text of exactly 52 tokens: ``length``)."""

    def __init__(self, session: ort.InferenceSession):
        self.session = session
        spec = session.get_inputs()[0]
        self.input = spec.name
        self.batch = spec.shape[0] if isinstance(spec.shape[0], int) else None
        self.length = spec.shape[1] if len(spec.shape) == 2 and isinstance(spec.shape[1], int) else None

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.batch is None or len(batch) == self.batch:
            return self.session.run(None, {self.input: batch})[0]
        parts = []
        for start in range(0, len(batch), self.batch):
            part = batch[start:start + self.batch]
            filled = len(part)
            if filled < self.batch:  # the last piece, padded to the fixed size
                part = np.concatenate([part, np.zeros((self.batch - filled, *part.shape[1:]), part.dtype)])
            parts.append(self.session.run(None, {self.input: part})[0][:filled])
        return np.concatenate(parts)


def _usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _check_shapes(bundle: Bundle, image_session: ort.InferenceSession, text_session: ort.InferenceSession) -> None:
    """The towers' fixed sizes (input resolution, embedding width) agree with the manifest."""
    expected = {"image_resolution": bundle.resolution, "embed_dim": bundle.embed_dim}
    image_shape = image_session.get_inputs()[0].shape
    found = {"image_resolution": image_shape[-1], "embed_dim": image_session.get_outputs()[0].shape[-1]}
    text_width = text_session.get_outputs()[0].shape[-1]
    for field, size in found.items():
        if isinstance(size, int) and size != expected[field]:
            raise ClipMatchError(f"{bundle.path / MANIFEST_NAME}: field {field!r} is {expected[field]}, but the image "
                                 f"tower's is {size}")
    if isinstance(text_width, int) and text_width != bundle.embed_dim:
        raise ClipMatchError(f"{bundle.path / MANIFEST_NAME}: field 'embed_dim' is {bundle.embed_dim}, but the text "
                             f"tower's is {text_width}")


def _session(path: os.PathLike, options: ort.SessionOptions, providers: list[str]) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as error:  # onnxruntime raises its own exception types
        raise ClipMatchError(f"{path}: onnxruntime cannot load this model: {str(error).splitlines()[0]}") from None


def input_name(item: object, position: int) -> str:
    """How errors and results name an input: a path by itself, anything else as ``images[position]``."""
    return str(item) if isinstance(item, (str, os.PathLike)) else f"images[{position}]"


def is_single_image(items: object) -> bool:
    return isinstance(items, (str, os.PathLike, bytes, bytearray, memoryview, np.ndarray)) or hasattr(items, "getpixel")


def _l2_normalise(features: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)
