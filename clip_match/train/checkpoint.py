"""Training checkpoints: written atomically, resumable exactly, loadable by cn_clip.

A checkpoint holds cn_clip's keys (``state_dict`` with ``module.`` prefixes, ``epoch``,
``step``, ``name``, ``optimizer``), so cn_clip's ``create_model`` and its trainer read it,
plus what an exact resume needs: scheduler and grad-scaler state, every rank's RNG states and
the data position (epoch and batches done in it). Everything is stored as tensors and plain
Python values, so ``torch.load(weights_only=True)`` reads it.
"""
from __future__ import annotations

import errno
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ClipMatchError
from ..fsutil import atomic_file


def rng_state() -> dict[str, Any]:
    """This process's Python, numpy and torch RNG states (CUDA too when in use), as plain lists and numbers."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
             "torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def save(path: str | os.PathLike, checkpoint: dict[str, Any]) -> Path:
    """Write ``checkpoint`` to ``path`` atomically; on failure (disk full) the previous file is intact."""
    path = Path(path)
    try:
        with atomic_file(path, "wb") as handle:
            torch.save(checkpoint, handle)
    except OSError as error:
        reason = "disk full" if error.errno == errno.ENOSPC else error.strerror or str(error)
        raise ClipMatchError(f"{path}: cannot write checkpoint ({reason}); the previous one is kept") from None
    return path


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint (trainer, slim or official) with the safe loader."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ClipMatchError(f"{path}: checkpoint not found") from None
    except Exception as error:  # torch raises several types for corrupt or foreign files
        raise ClipMatchError(f"{path}: not a readable checkpoint: {str(error).splitlines()[0]}") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ClipMatchError(f"{path}: expected a CN-CLIP checkpoint {{'state_dict': ..., ...}}")
    return checkpoint


def all_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())
