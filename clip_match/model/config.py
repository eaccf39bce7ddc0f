"""Model configurations: cn_clip's official architectures and the small ones shipped here.

A `ModelConfig` is exactly the keyword arguments of cn_clip's ``CLIP`` class plus two input
choices that are part of the model here, so that export, training and the runtime agree on them:
the text context length (a training/tokenising choice in cn_clip) and the image framing:
``trim_margin`` (crop images to their content before the resize; None, the default, is cn_clip's
plain resize), ``fold_wide`` (then stack a wide crop's strips into a near-square) and
``flatten_light`` (first even out the light of a photographed page). This module does not import torch.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checks import is_positive_int
from ..errors import ClipMatchError
from ..runtime.preprocess import Framing, checked_framing

SHIPPED_DIR = Path(__file__).parent / "configs"
TEXT_ACTIVATIONS = ("gelu", "relu", "swish", "gelu_new")  # cn_clip's modeling_bert.ACT2FN

# cn_clip's short model names -> "vision@text" architecture names (its utils._MODEL_INFO).
ALIASES = {
    "RN50": "RN50@RBT3-chinese",
    "ViT-B-16": "ViT-B-16@RoBERTa-wwm-ext-base-chinese",
    "ViT-L-14": "ViT-L-14@RoBERTa-wwm-ext-base-chinese",
    "ViT-L-14-336": "ViT-L-14-336@RoBERTa-wwm-ext-base-chinese",
    "ViT-H-14": "ViT-H-14@RoBERTa-wwm-ext-large-chinese",
}


@dataclass(frozen=True)
class ModelConfig:
    """One CN-CLIP architecture: cn_clip ``CLIP(**clip_kwargs())`` plus ``context_length``."""

    name: str
    embed_dim: int
    image_resolution: int
    vision_layers: int | tuple[int, ...]
    vision_width: int
    vision_patch_size: int | None
    vocab_size: int
    text_attention_probs_dropout_prob: float
    text_hidden_act: str
    text_hidden_dropout_prob: float
    text_hidden_size: int
    text_initializer_range: float
    text_intermediate_size: int
    text_max_position_embeddings: int
    text_num_attention_heads: int
    text_num_hidden_layers: int
    text_type_vocab_size: int
    vision_head_width: int = 64
    context_length: int = 52
    trim_margin: int | None = None
    fold_wide: bool = False
    flatten_light: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.vision_layers, list):
            object.__setattr__(self, "vision_layers", tuple(self.vision_layers))
        self._check_types()
        if not 2 <= self.context_length <= self.text_max_position_embeddings:
            raise ClipMatchError(
                f"model config {self.name}: context_length {self.context_length} must be between 2 and "
                f"text_max_position_embeddings ({self.text_max_position_embeddings})"
            )
        checked_framing(self.trim_margin, self.fold_wide, f"model config {self.name}", self.flatten_light)
        if self.is_resnet and self.image_resolution % 32:
            raise ClipMatchError(
                f"model config {self.name}: image_resolution {self.image_resolution} must be a multiple of 32 "
                "(the ResNet attention pool works on resolution / 32)"
            )

    def _check_types(self) -> None:
        """Every field has a value cn_clip's ``CLIP`` can build (else the error names the field)."""
        def fail(field: str, wanted: str) -> None:
            raise ClipMatchError(f"model config {self.name}: {field} must be {wanted}, got {getattr(self, field)!r}")

        if not isinstance(self.name, str):
            fail("name", "a string")
        for field in ("embed_dim", "image_resolution", "vision_width", "vocab_size", "text_hidden_size",
                      "text_intermediate_size", "text_max_position_embeddings", "text_num_attention_heads",
                      "text_num_hidden_layers", "text_type_vocab_size", "vision_head_width", "context_length"):
            if not is_positive_int(getattr(self, field)):
                fail(field, "a whole number >= 1")
        layers = self.vision_layers
        if not (is_positive_int(layers) or isinstance(layers, tuple) and len(layers) == 4
                and all(map(is_positive_int, layers))):
            fail("vision_layers", "a whole number (ViT) or four of them (ResNet)")
        if self.vision_patch_size is not None and not is_positive_int(self.vision_patch_size) or (
                is_positive_int(layers) and self.vision_patch_size is None):
            fail("vision_patch_size", "a whole number >= 1 for a ViT, null for a ResNet")
        for field in ("text_attention_probs_dropout_prob", "text_hidden_dropout_prob", "text_initializer_range"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                fail(field, "a number from 0 to 1")
        if self.text_hidden_act not in TEXT_ACTIVATIONS:
            fail("text_hidden_act", f"one of {', '.join(TEXT_ACTIVATIONS)}")
        if self.text_hidden_size % self.text_num_attention_heads:
            fail("text_num_attention_heads", f"a divisor of text_hidden_size ({self.text_hidden_size})")

    @property
    def framing(self) -> Framing | None:
        """The steps before the resize (None: cn_clip's plain resize)."""
        return checked_framing(self.trim_margin, self.fold_wide, f"model config {self.name}", self.flatten_light)

    @property
    def is_resnet(self) -> bool:
        return isinstance(self.vision_layers, tuple)

    def clip_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``cn_clip.clip.model.CLIP``."""
        kwargs = self.to_dict()
        for name in ("name", "context_length", "trim_margin", "fold_wide", "flatten_light"):
            kwargs.pop(name, None)
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; ``trim_margin``, ``fold_wide`` and ``flatten_light`` only when set, so the configs
        (and fingerprints) of models that do not use them stay what they were before the options existed."""
        data = dataclasses.asdict(self)
        if self.is_resnet:
            data["vision_layers"] = list(self.vision_layers)
        if self.trim_margin is None:
            del data["trim_margin"]
        for flag in ("fold_wide", "flatten_light"):
            if not data[flag]:
                del data[flag]
        return data

    def with_context_length(self, context_length: int) -> ModelConfig:
        """The same architecture with another text context length (e.g. ~160 for formulas)."""
        return dataclasses.replace(self, context_length=context_length)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> ModelConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        missing = sorted(f.name for f in dataclasses.fields(cls)
                         if f.name not in data and f.default is dataclasses.MISSING)
        if unknown or missing:
            raise ClipMatchError(f"model config {source}: unknown fields {unknown}, missing fields {missing}")
        return cls(**data)


def available_configs() -> list[str]:
    """Names `load_config` accepts besides JSON paths."""
    shipped = sorted(p.stem for p in SHIPPED_DIR.glob("*.json"))
    return shipped + sorted(ALIASES.values())


def load_config(name_or_path: str | Path, context_length: int | None = None) -> ModelConfig:
    """Resolve an official name ("RN50@RBT3-chinese", "RN50"), a shipped name ("tiny", "demo") or a JSON file."""
    text = str(name_or_path)
    name = ALIASES.get(text, text)
    if (SHIPPED_DIR / f"{name}.json").is_file():
        data = {"name": name, **_read_json(SHIPPED_DIR / f"{name}.json")}
    elif "@" in name and not Path(text).is_file():
        data = {"name": name, **_official(name)}
    elif Path(text).is_file():
        data = _read_json(Path(text))
        data.setdefault("name", Path(text).stem)
    else:
        raise ClipMatchError(f"unknown model config {text!r}; known: {', '.join(available_configs())}, or a JSON path")
    config = ModelConfig.from_dict(data, text)
    return config.with_context_length(context_length) if context_length is not None else config


def _official(name: str) -> dict[str, Any]:
    """Merge cn_clip's vision and text JSON configs, as cn_clip's ``create_model`` does (without importing it)."""
    spec = importlib.util.find_spec("cn_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ClipMatchError(f"model {name}: official architectures need cn_clip (pip install 'clip-match[train]')")
    config_dir = Path(next(iter(spec.submodule_search_locations))) / "clip" / "model_configs"
    vision, text = name.split("@", 1)
    data: dict[str, Any] = {}
    for part in (vision, text):
        path = config_dir / f"{part.replace('/', '-')}.json"
        if not path.is_file():
            known = sorted(p.stem for p in config_dir.glob("*.json"))
            raise ClipMatchError(f"model {name}: cn_clip has no config {part!r}; known parts: {', '.join(known)}")
        data.update(_read_json(path))
    if isinstance(data.get("vision_layers"), str):
        data["vision_layers"] = json.loads(data["vision_layers"])
    return data


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ClipMatchError(f"{path}: cannot read model config: {error}") from None
    if not isinstance(data, dict):
        raise ClipMatchError(f"{path}: model config must be a JSON object")
    return data
