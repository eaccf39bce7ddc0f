"""CN-CLIP models: configurations (torch-free), the factory and checkpoints (torch, loaded on use).

Training side: may import torch and the runtime; the runtime never imports this package.
"""
from __future__ import annotations

import importlib
from typing import Any

from .config import ModelConfig, available_configs, load_config

_LAZY = {
    "create_model": "clip_match.model.factory",
    "load_checkpoint": "clip_match.model.checkpoint",
    "read_state_dict": "clip_match.model.checkpoint",
    "save_slim_checkpoint": "clip_match.model.checkpoint",
}

__all__ = ["ModelConfig", "available_configs", "load_config", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'clip_match.model' has no attribute {name!r}")
