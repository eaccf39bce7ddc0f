"""Datasets in Chinese-CLIP's formats: prepare TSV/JSONL, build and read LMDB, inspect.

``LMDBReader`` is the entry point for training code; the rest is reached through the
`clip-match prepare | build-lmdb | inspect` commands or their modules.
"""
from .lmdb_reader import LMDBReader, Pair

__all__ = ["LMDBReader", "Pair"]
