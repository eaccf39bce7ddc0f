"""Carry trained weights to another image resolution, so a model trained cheaply at a small input
size can go on training at a larger one instead of starting over.

Only the image tower's attention-pool positional embedding depends on the resolution (one row per
cell of the final ``resolution / 32`` feature grid, plus the pooled token); every convolution is
size-free. The grid rows are resized bicubically, as CLIP does when it changes resolution.

`clip-match resize` (`clip_match.commands.resize`) runs it from the command line.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import ClipMatchError
from .checkpoint import check_framing, checkpoint_weights, load_weights, read_checkpoint, save_slim_checkpoint
from .config import ModelConfig
from .factory import create_model

POSITIONAL_EMBEDDING = "visual.attnpool.positional_embedding"


def resize_positional_embedding(embedding: torch.Tensor, grid: int) -> torch.Tensor:
    """Resize a ``(1 + g*g, width)`` attention-pool positional embedding to ``(1 + grid*grid, width)``."""
    pooled, cells = embedding[:1], embedding[1:]
    side = math.isqrt(len(cells))
    if side * side != len(cells):
        raise ClipMatchError(f"{POSITIONAL_EMBEDDING}: {len(cells)} grid rows are not a square grid")
    if side == grid:
        return embedding.clone()
    image = cells.reshape(side, side, -1).permute(2, 0, 1).unsqueeze(0)
    resized = F.interpolate(image.float(), size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat([pooled, resized[0].permute(1, 2, 0).reshape(grid * grid, -1).to(embedding.dtype)])


def resize_checkpoint(source: Path, target: ModelConfig, out: Path) -> Path:
    """Write ``source``'s weights as a slim checkpoint of ``target`` (same model but the resolution)."""
    checkpoint = read_checkpoint(source)
    check_framing(checkpoint, target, source)  # the same model but its resolution
    state = checkpoint_weights(checkpoint, source)
    if not target.is_resnet:
        raise ClipMatchError(f"{target.name}: only ResNet image towers are supported (ViT has no attention pool)")
    if POSITIONAL_EMBEDDING not in state:
        raise ClipMatchError(f"{source}: no {POSITIONAL_EMBEDDING}; not a ResNet CN-CLIP checkpoint")
    state[POSITIONAL_EMBEDDING] = resize_positional_embedding(state[POSITIONAL_EMBEDDING],
                                                              target.image_resolution // 32)
    model = create_model(target)
    load_weights(model, state, f"{source} resized to {target.name}")  # every other shape must match
    return save_slim_checkpoint(model, out, target)
