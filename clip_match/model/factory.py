"""Build CN-CLIP models with cn_clip's own ``CLIP`` class, in fp32 and without cn_clip's prints."""
from __future__ import annotations

import torch

from .config import ModelConfig, load_config


def create_model(config: ModelConfig | str) -> torch.nn.Module:
    """A randomly initialised fp32 cn_clip ``CLIP`` for ``config`` (a `ModelConfig` or a name for `load_config`).

    cn_clip's own ``create_model`` prints to stdout and converts to fp16; this builds the same
    class directly, so weights stay fp32 (CPU training and export need them) and stdout stays clean.
    """
    from cn_clip.clip.model import CLIP

    if not isinstance(config, ModelConfig):
        config = load_config(config)
    return CLIP(**config.clip_kwargs())
