"""clip_match: image-text matching with Chinese-CLIP, from labelling to grid puzzles.

The public API is small and imported lazily, so `import clip_match` never pulls in torch
(or anything heavy) until a name is actually used.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Encoder": "clip_match.runtime.encoder",
    "LabelIndex": "clip_match.index.label_index",
    "Matcher": "clip_match.query",
    "GridSolver": "clip_match.grid.solver",
    "ClipMatchError": "clip_match.errors",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'clip_match' has no attribute {name!r}")
