"""checkpoint -> verified model bundle (see `clip_match.runtime.bundle` for the layout)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from ..errors import ClipMatchError
from ..fsutil import atomic_dir
from ..model.checkpoint import load_checkpoint
from ..model.config import ModelConfig, load_config
from ..runtime.bundle import (FORMAT, FORMAT_VERSION, MANIFEST_NAME, TOWERS, VOCAB_NAME, check_precision,
                              sha256_file, tower_file_name)
from ..runtime.preprocess import MEAN, STD
from . import verify as parity
from .precision import convert_fp16, quantize_int8
from .towers import OPSET, export_image_tower, export_text_tower

VOCAB_SOURCE = Path(__file__).resolve().parent.parent / "text" / VOCAB_NAME


def parse_precisions(text: str | Sequence[str]) -> tuple[str, ...]:
    """"fp32,int8" or a sequence -> validated, de-duplicated, in the given order."""
    names = [p.strip() for p in (text.split(",") if isinstance(text, str) else text) if p.strip()]
    if not names:
        raise ClipMatchError("no precision given; valid precisions: fp32, fp16, int8")
    return tuple(dict.fromkeys(check_precision(name) for name in names))


def fingerprint(model: torch.nn.Module, config: ModelConfig) -> str:
    """Hash of the architecture and fp32 weights: the same for every precision exported from them."""
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode())
    for key, value in sorted(model.state_dict().items()):
        tensor = value.detach().cpu().contiguous()
        tensor = tensor.float() if tensor.is_floating_point() else tensor
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:20]


def export_bundle(checkpoint_path: str | os.PathLike, config: ModelConfig | str, out_dir: str | os.PathLike,
                  precisions: str | Sequence[str] = ("fp32",), verify: bool = True,
                  overwrite: bool = False) -> Path:
    """Export both towers at each precision into ``out_dir`` (written aside, renamed when complete).

    With ``verify`` each precision is compared with PyTorch fp32 on sample inputs and a
    `ClipMatchError` is raised below `verify.MIN_COSINE`; nothing is written then.
    """
    config = config if isinstance(config, ModelConfig) else load_config(config)
    precisions = parse_precisions(precisions)
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise ClipMatchError(f"{out_dir} already exists (pass --overwrite to replace it)")
    model = load_checkpoint(checkpoint_path, config)
    samples = parity.make_samples(config) if verify else None
    reference = parity.reference_features(model, samples) if verify else None

    with (atomic_dir(out_dir, overwrite=overwrite) as bundle, tempfile.TemporaryDirectory() as scratch,
          tqdm(total=1 + len(precisions), desc="export", unit="step", leave=False) as steps):
        fp32 = {"image": export_image_tower(model, config.image_resolution, Path(scratch) / "image.onnx"),
                "text": export_text_tower(model, config.context_length, Path(scratch) / "text.onnx")}
        steps.update()
        _make_readable(bundle)
        manifest_precisions, verification = {}, {}
        for precision in precisions:
            files = {}
            for tower in TOWERS:
                target = bundle / tower_file_name(tower, precision)
                if precision == "fp32":
                    shutil.copyfile(fp32[tower], target)
                elif precision == "fp16":
                    convert_fp16(fp32[tower], target)
                else:
                    quantize_int8(fp32[tower], target)
                files[tower] = target.name
            if verify:
                result = parity.measure(bundle / files["image"], bundle / files["text"], samples, reference)
                parity.check(precision, result)
                verification[precision] = {k: round(v, 7) for k, v in result.items()}
            manifest_precisions[precision] = files
            steps.update()
        shutil.copyfile(VOCAB_SOURCE, bundle / VOCAB_NAME)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "arch": config.name,
            "config": config.to_dict(),
            "fingerprint": fingerprint(model, config),
            "embed_dim": config.embed_dim,
            "image_resolution": config.image_resolution,
            "context_length": config.context_length,
            "mean": list(MEAN),
            "std": list(STD),
            "opset": OPSET,
            "inputs": {"image": "image float32 (N, 3, R, R)", "text": "input_ids int64 (N, L<=context_length)"},
            "outputs": "features float32 (N, embed_dim), not normalised",
            "precisions": manifest_precisions,
            "verification": verification,
            "vocab": VOCAB_NAME,
            "files": {p.name: sha256_file(p) for p in sorted(bundle.iterdir())},
        }
        (bundle / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                                            encoding="utf-8")
    return out_dir


def _make_readable(directory: Path) -> None:
    """Temporary directories are created 0700; a bundle gets the usual umask permissions."""
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
