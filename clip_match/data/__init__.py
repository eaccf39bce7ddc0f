"""Datasets in Chinese-CLIP's formats: prepare TSV/JSONL, build and read LMDB, inspect. Torch-free.

``LMDBReader`` (and its ``Pair``) is the entry point for training code; the rest is reached
through `clip-match prepare | build-lmdb | inspect` or their modules. Images are decoded by
`clip_match.runtime.images`, so training reads exactly the pixels the runtime does.
"""
from .lmdb_reader import LMDBReader, Pair

__all__ = ["LMDBReader", "Pair"]
