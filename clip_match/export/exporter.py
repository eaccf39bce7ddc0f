"""checkpoint -> verified model bundle (see `clip_match.runtime.bundle` for the layout)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from ..errors import ClipMatchError
from ..fsutil import atomic_dir
from ..model.checkpoint import load_checkpoint
from ..model.config import ModelConfig, load_config
from ..runtime.bundle import (FORMAT, FORMAT_VERSION, MANIFEST_NAME, TOWERS, VOCAB_NAME, Bundle, check_precision,
                              sha256_file, tower_file_name)
from ..runtime.preprocess import MEAN, STD
from ..runtime.tokenizer import VOCAB_PATH
from . import verify as parity
from .calibration import CalibrationImages, load_calibration_images
from .precision import QUANTIZED_OPS, convert_fp16, quantize_int8, quantize_int8_static
from .towers import OPSET, export_image_tower, export_text_tower

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
                  overwrite: bool = False, calibration_images: str | os.PathLike | None = None) -> Path:
    """Export both towers at each precision into ``out_dir`` (written aside, renamed when complete).

    With ``calibration_images`` (a folder) the int8 image tower is quantised statically,
    calibrated on a seeded sample of it (`calibration`); without, int8 convolutions stay fp32.
    With ``verify`` each precision is compared with PyTorch fp32 on sample inputs (and the
    static int8 image tower also on held-out calibration images), and a `ClipMatchError` is
    raised below `verify.MIN_COSINE`; nothing is written then.
    """
    config = config if isinstance(config, ModelConfig) else load_config(config)
    precisions = parse_precisions(precisions)
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise ClipMatchError(f"{out_dir} already exists (pass --overwrite to replace it)")
    calibration = _calibration(calibration_images, precisions, config)
    model = load_checkpoint(checkpoint_path, config)
    samples = parity.make_samples(config) if verify else None
    reference = parity.reference_features(model, samples) if verify else None
    calibration_reference = (parity.reference_images(model, calibration.verification)
                             if verify and calibration else None)

    inputs = [checkpoint_path] + ([calibration_images] if calibration_images else [])
    with (atomic_dir(out_dir, overwrite=overwrite, inputs=inputs) as bundle, tempfile.TemporaryDirectory() as scratch,
          tqdm(total=1 + len(precisions), desc="export", unit="step", disable=None, leave=False) as steps):
        fp32 = {"image": export_image_tower(model, config.image_resolution, Path(scratch) / "image.onnx"),
                "text": export_text_tower(model, config.context_length, Path(scratch) / "text.onnx")}
        steps.update()
        manifest_precisions, verification = {}, {}
        for precision in precisions:
            files = {}
            for tower in TOWERS:
                target = bundle / tower_file_name(tower, precision)
                if precision == "fp32":
                    shutil.copyfile(fp32[tower], target)
                elif precision == "fp16":
                    convert_fp16(fp32[tower], target)
                elif tower == "image" and calibration:
                    quantize_int8_static(fp32[tower], target, calibration.calibration)
                else:
                    quantize_int8(fp32[tower], target)
                files[tower] = target.name
            if verify:
                result = parity.measure(bundle / files["image"], bundle / files["text"], samples, reference)
                if precision == "int8" and calibration:
                    result[parity.CALIBRATION_KEY] = parity.measure_images(
                        bundle / files["image"], calibration.verification, calibration_reference)
                parity.check(precision, result)
                verification[precision] = {k: round(v, 7) for k, v in result.items()}
            manifest_precisions[precision] = files
            steps.update()
        shutil.copyfile(VOCAB_PATH, bundle / VOCAB_NAME)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "arch": config.name,
            "config": config.to_dict(),
            "fingerprint": fingerprint(model, config),
            "embed_dim": config.embed_dim,
            "image_resolution": config.image_resolution,
            "context_length": config.context_length,
            "trim_margin": config.trim_margin,
            "fold_wide": config.fold_wide,
            **({"flatten_light": True} if config.flatten_light else {}),
            "mean": list(MEAN),
            "std": list(STD),
            "opset": OPSET,
            "inputs": {"image": "image float32 (N, 3, R, R)", "text": "text int64 (N, L<=context_length)"},
            "outputs": {"image": "unnorm_image_features float32 (N, embed_dim)",
                        "text": "unnorm_text_features float32 (N, embed_dim)"},
            "precisions": manifest_precisions,
            "verification": verification,
            "vocab": VOCAB_NAME,
            "files": {p.name: sha256_file(p) for p in sorted(bundle.iterdir())},
        }
        if "int8" in precisions:
            manifest["quantization"] = {"int8": _quantization(calibration)}
        (bundle / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                                            encoding="utf-8")
    return out_dir


def _calibration(directory: str | os.PathLike | None, precisions: tuple[str, ...],
                 config: ModelConfig) -> CalibrationImages | None:
    """The calibration images for a static int8 image tower, or None (with a note when int8 is asked for)."""
    if directory is None:
        if "int8" in precisions:
            print("note: int8 without calibration images: the image tower's convolutions stay fp32 (dynamic "
                  "quantisation of MatMul/Gemm/Gather only); pass --calibration-images DIR "
                  "(calibration_images=) for the fast, statically quantised int8 image tower", file=sys.stderr)
        return None
    if "int8" not in precisions:
        raise ClipMatchError(f"calibration images ({directory}) are only used for int8; add int8 to the precisions")
    return load_calibration_images(directory, config.image_resolution, framing=config.framing)


def _quantization(calibration: CalibrationImages | None) -> dict:
    """How each int8 tower was quantised, for the manifest."""
    dynamic = {"method": "dynamic", "ops": QUANTIZED_OPS, "weights": "int8 per tensor",
               "activations": "uint8, range per batch at run time"}
    if calibration is None:
        return {"image": {**dynamic, "note": "convolutions stay fp32"}, "text": dynamic}
    static = {"method": "static", "format": "QDQ", "weights": "int8 per channel",
              "activations": "uint8, min/max calibrated", **calibration.summary()}
    return {"image": static, "text": dynamic}


CN_CLIP_TOWER_NAMES = {"image": "img", "text": "txt"}


def write_cn_clip_files(bundle_dir: str | os.PathLike, prefix: str | os.PathLike,
                        towers: Sequence[str] = TOWERS) -> list[Path]:
    """Place the bundle's fp32/fp16 towers where cn_clip's deployment guide looks for them,
    ``{prefix}.{img|txt}.{fp32|fp16}.onnx`` (hard links where the filesystem allows, else copies;
    each replaced atomically). The bundle stays the source of truth; these are its files by cn_clip's names."""
    bundle = Bundle.load(bundle_dir)
    written = []
    for tower in towers:
        for precision in ("fp32", "fp16"):
            if precision not in bundle.precisions:
                continue
            source = bundle.tower_path(tower, precision)
            target = Path(f"{prefix}.{CN_CLIP_TOWER_NAMES[tower]}.{precision}.onnx")
            temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            try:
                temporary.unlink(missing_ok=True)
                try:
                    os.link(source, temporary)
                except OSError:  # another filesystem, or no hard links: a copy
                    shutil.copyfile(source, temporary)
                os.replace(temporary, target)
            except OSError as error:
                temporary.unlink(missing_ok=True)
                raise ClipMatchError(f"{target}: cannot write: {error.strerror or error}") from None
            written.append(target)
    return written
