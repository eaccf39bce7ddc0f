"""Datasets in Chinese-CLIP's formats: prepare TSV/JSONL, build and read LMDB, inspect.

``LMDBReader`` (and its ``Pair``) is the entry point for training code; the rest is reached
through `clip-match prepare | build-lmdb | inspect` or their modules. Imported lazily, so
that ``clip_match.data.images`` (used by the runtime) does not pull in LMDB.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["LMDBReader", "Pair"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("clip_match.data.lmdb_reader"), name)
    raise AttributeError(f"module 'clip_match.data' has no attribute {name!r}")
