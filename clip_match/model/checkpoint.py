"""Read official-format CN-CLIP checkpoints and write slim ones that cn_clip's tools load.

Official format: ``{"state_dict": {...}, "epoch": int, "step": int, ...}``; keys may start with
``module.`` (saved from DistributedDataParallel), tensors may be fp16 or fp32, and
``bert.pooler`` keys (unused by CN-CLIP) may be present.
"""
from __future__ import annotations

import copy
import os
import pickle
from pathlib import Path

import torch

from ..errors import ClipMatchError
from ..fsutil import atomic_file
from .config import ModelConfig
from .factory import create_model

_SHOWN = 5  # mismatched keys listed in an error


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The checkpoint's weights with ``module.`` stripped and ``bert.pooler`` dropped (tensors as stored)."""
    return checkpoint_weights(read_checkpoint(Path(path)), path)


def read_checkpoint(path: Path) -> object:
    """The loaded checkpoint file (tensors only: ``weights_only``), or an error naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ClipMatchError(f"{path}: checkpoint not found") from None
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, ValueError) as error:
        raise ClipMatchError(f"{path}: not a readable PyTorch checkpoint: {str(error).splitlines()[0]}") from None


def checkpoint_weights(checkpoint: object, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """`read_state_dict` for a checkpoint already loaded from ``path``."""
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ClipMatchError(f"{path}: expected {{'state_dict': {{name: tensor}}, ...}} (CN-CLIP checkpoint format)")
    return {_strip(key): value for key, value in state.items() if "bert.pooler" not in key}


def load_checkpoint(path: str | os.PathLike, config: ModelConfig) -> torch.nn.Module:
    """An fp32 model of ``config`` with the checkpoint's weights, in eval mode (call ``.train()`` to fine-tune).

    Refuses checkpoints of another architecture with the first missing, unexpected and
    mismatched keys and their shapes, and slim checkpoints trained with another ``trim_margin`` or
    ``fold_wide`` (the weights fit, but the model would see its images cropped differently than in training).
    """
    checkpoint = read_checkpoint(Path(path))
    check_framing(checkpoint, config, path)
    model = create_model(config)
    load_weights(model, checkpoint_weights(checkpoint, path), f"{path} (model {config.name})")
    return model.eval()


def check_framing(checkpoint: object, config: ModelConfig, path: str | os.PathLike) -> None:
    """Refuse ``config`` if the checkpoint records another ``trim_margin``, ``fold_wide`` or ``flatten_light``."""
    recorded = checkpoint.get("model_config") if isinstance(checkpoint, dict) else None
    if isinstance(recorded, dict):
        for name, default in (("trim_margin", None), ("fold_wide", False), ("flatten_light", False)):
            if recorded.get(name, default) != getattr(config, name):
                raise ClipMatchError(f"{path}: trained with {name} {recorded.get(name, default)}, but model "
                                     f"{config.name} has {getattr(config, name)}; use the config it was trained with "
                                     "(its 'model_config')")


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``model`` as fp32, after checking every key and shape."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or mismatched:
        problems = []
        if mismatched:
            problems.append("shape mismatches " + ", ".join(
                f"{k} checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}" for k in mismatched[:_SHOWN]))
        if missing:
            problems.append("missing " + ", ".join(f"{k} {tuple(expected[k].shape)}" for k in missing[:_SHOWN]))
        if unexpected:
            problems.append("unexpected " + ", ".join(f"{k} {tuple(state[k].shape)}" for k in unexpected[:_SHOWN]))
        counts = f"{len(mismatched)} mismatched, {len(missing)} missing, {len(unexpected)} unexpected"
        raise ClipMatchError(f"{source}: incompatible checkpoint ({counts}): " + "; ".join(problems))
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})


def save_slim_checkpoint(model: torch.nn.Module, path: str | os.PathLike, config: ModelConfig,
                         fp16: bool = False, epoch: int = 0, step: int = 0) -> Path:
    """Write weights only (no optimizer), in the official layout that cn_clip's ``create_model``,
    ``extract_features`` and training resume all accept: ``module.``-prefixed keys plus ``epoch``,
    ``step`` and ``name``; ``model_config`` records the full architecture for clip_match.

    ``fp16`` halves exactly what cn_clip's own ``convert_weights`` halves (conv/linear/attention
    weights, BERT, projections) and keeps the rest (batch norm, ``logit_scale``, ...) fp32, as
    official checkpoints are stored.
    """
    model = getattr(model, "module", model)  # DistributedDataParallel wraps the model
    if fp16:
        from cn_clip.clip.model import convert_weights

        model = copy.deepcopy(model).cpu()
        convert_weights(model)
    checkpoint = {"epoch": int(epoch), "step": int(step), "name": config.name,
                  "model_config": config.to_dict(), "state_dict": cn_clip_state(model)}
    path = Path(path)
    with atomic_file(path, "wb") as handle:
        torch.save(checkpoint, handle)
    return path


def cn_clip_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights in cn_clip's layout: every key prefixed with ``module.`` (as saved from DDP)."""
    return {f"module.{key}": value.detach().cpu() for key, value in model.state_dict().items()}


def _strip(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key
