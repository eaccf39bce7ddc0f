"""FAISS index choice, training and search for L2-normalised vectors (inner product = cosine).

The automatic choice follows FAISS's "Guidelines to choose an index" wiki page, scaled to small
machines:

- up to ``EXACT_LIMIT`` (50,000) vectors: ``Flat``, exact brute force (at 1024 dims a query
  scans at most 200 MB, a few ms);
- beyond: ``IVF{K},Flat`` with K the power of two nearest 4·sqrt(n) (the wiki's range is
  4·sqrt(n) to 16·sqrt(n)) but at most ``MAX_LISTS`` (2048), trained on 40·K vectors (the wiki
  says 30·K to 256·K), searched with ``nprobe = max(16, K / 32)`` lists (3% of the data). The cap
  keeps k-means training and assignment of 1M x 1024 vectors to a few minutes on 2 cores; the
  wiki's choice for 1M vectors (IVF65536_HNSW32) needs millions of training vectors.

Any FAISS factory string overrides the choice (e.g. ``HNSW32``, ``IVF4096_HNSW32,Flat``); search
parameters (``nprobe=32``, ``efSearch=128``) are set through `faiss.ParameterSpace`.
"""
from __future__ import annotations

import math
import warnings

import faiss
import numpy as np

from ..errors import ClipMatchError

EXACT_LIMIT = 50_000
MAX_LISTS = 2048
TRAIN_POINTS_PER_LIST = 40


def choose_factory(count: int) -> tuple[str, str]:
    """(factory string, search parameters) for ``count`` vectors, per the module docstring."""
    if count <= EXACT_LIMIT:
        return "Flat", ""
    lists = min(MAX_LISTS, 2 ** round(math.log2(4 * math.sqrt(count))))
    return f"IVF{lists},Flat", f"nprobe={max(16, lists // 32)}"


def new_index(dim: int, factory: str) -> faiss.Index:
    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as error:
        raise ClipMatchError(f"invalid FAISS factory string {factory!r}: {str(error).splitlines()[0]}") from None


def train_if_needed(index: faiss.Index, vectors: np.ndarray, seed: int = 0) -> None:
    """Train on a random sample of ``vectors`` (enough for the index's lists) if untrained."""
    if index.is_trained:
        return
    ivf = _ivf_or_none(index)
    wanted = TRAIN_POINTS_PER_LIST * ivf.nlist if ivf is not None else len(vectors)
    if ivf is not None and len(vectors) < ivf.nlist:
        raise ClipMatchError(
            f"{len(vectors)} candidates are too few to train {ivf.nlist} IVF lists; "
            "use a smaller factory (e.g. Flat) or more candidates")
    sample = vectors
    if len(vectors) > wanted:
        rows = np.sort(np.random.default_rng(seed).choice(len(vectors), wanted, replace=False))
        sample = vectors[rows]
    index.train(np.ascontiguousarray(sample, dtype=np.float32))


def set_search_parameters(index: faiss.Index, parameters: str) -> None:
    """Apply ``"nprobe=64,efSearch=128"``-style parameters (empty: nothing to set)."""
    if not parameters:
        return
    try:
        faiss.ParameterSpace().set_index_parameters(index, parameters)
    except RuntimeError as error:
        raise ClipMatchError(f"invalid FAISS search parameters {parameters!r}: {str(error).splitlines()[0]}") from None


def is_exact(index: faiss.Index) -> bool:
    """True for brute-force indexes, whose scores cover every vector."""
    return isinstance(faiss.downcast_index(index), faiss.IndexFlat)


GPU_MAX_K = 2048  # faiss GPU_MAX_SELECTION_K


def gpu_count() -> int:
    """GPUs usable by this faiss build (0 with faiss-cpu)."""
    return faiss.get_num_gpus() if hasattr(faiss, "StandardGpuResources") else 0


def to_search_device(index: faiss.Index, parameters: str) -> faiss.Index:
    """A GPU copy of ``index`` when faiss-gpu sees a GPU and supports this index type, else ``index``.

    An exact index is searched for all its rows (probabilities over every candidate), and GPU
    FAISS returns at most GPU_MAX_K results per query: larger exact indexes stay on the CPU.
    """
    if gpu_count() == 0 or (is_exact(index) and index.ntotal > GPU_MAX_K):
        return index
    try:
        gpu_index = faiss.index_cpu_to_all_gpus(index)
        if parameters:
            faiss.GpuParameterSpace().set_index_parameters(gpu_index, parameters)
    except RuntimeError as error:
        warnings.warn(f"searching on the CPU: this index type cannot move to the GPU ({str(error).splitlines()[0]})")
        return index
    return gpu_index


def l2_normalised(vectors: np.ndarray) -> np.ndarray:
    """float32 C-contiguous copy with unit rows (zero rows stay zero)."""
    vectors = np.array(vectors, dtype=np.float32, order="C", copy=True)
    if vectors.ndim != 2:
        raise ClipMatchError(f"expected a 2-D array of vectors, got shape {vectors.shape}")
    faiss.normalize_L2(vectors)
    return vectors


def _ivf_or_none(index: faiss.Index):
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None
