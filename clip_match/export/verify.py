"""Parity of exported towers with the PyTorch fp32 model on sample images and texts."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ClipMatchError
from ..model.config import ModelConfig

# Least per-sample cosine to PyTorch fp32 that each precision must reach.
MIN_COSINE = {"fp32": 0.9999, "fp16": 0.999, "int8": 0.99}
_BATCH = 16
CALIBRATION_KEY = "image_calibration_min_cosine"  # int8 image tower on (held-out) calibration images

SAMPLE_TEXTS = (
    "一只橘色的猫趴在窗台上", "a red umbrella in the rain", "雨伞", "", "E = m c ^ { 2 }",
    "北京天安门广场的夜景，灯火通明。", "🐶 dog 小狗", "Ｆｕｌｌ－ｗｉｄｔｈ，标点！",
    "\\frac { a } { b } + \\sqrt { x _ { i } }", "很长的文本" * 40,
)


@dataclass(frozen=True)
class Samples:
    images: np.ndarray  # (N, 3, R, R) float32, normalised like cn_clip's image_transform
    input_ids: np.ndarray  # (M, context_length) int64, cn_clip.clip.tokenize output


def make_samples(config: ModelConfig, count: int = 6, seed: int = 0) -> Samples:
    """Deterministic synthetic images (noise, gradients, blocks) and varied texts, prepared by cn_clip itself."""
    from cn_clip.clip import tokenize
    from cn_clip.clip.utils import image_transform
    from PIL import Image

    rng = np.random.default_rng(seed)
    size = config.image_resolution
    y, x = np.mgrid[0:size * 2, 0:size * 3] / (size * 3)
    pictures = []
    for i in range(count):
        if i % 3 == 0:
            pixels = rng.integers(0, 256, (size * 2, size * 3, 3))
        elif i % 3 == 1:
            pixels = np.stack([x * 255, y * 255, (x + y) * 127], axis=-1) * rng.uniform(0.3, 1.0)
        else:
            pixels = np.kron(rng.integers(0, 256, (4, 6, 3)), np.ones((size // 2, size // 2, 1)))
        pictures.append(Image.fromarray(pixels.astype(np.uint8), "RGB"))
    transform = image_transform(size)
    images = torch.stack([transform(p) for p in pictures]).numpy()
    input_ids = tokenize(list(SAMPLE_TEXTS), context_length=config.context_length).numpy()
    return Samples(images.astype(np.float32), input_ids.astype(np.int64))


def reference_features(model: torch.nn.Module, samples: Samples) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch fp32 features (texts padded to the full context length, as cn_clip does)."""
    model.eval()
    with torch.no_grad():
        texts = model.encode_text(torch.from_numpy(samples.input_ids)).float().numpy()
    return reference_images(model, samples.images), texts


def reference_images(model: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    """PyTorch fp32 image features of preprocessed ``images``, in bounded batches."""
    model.eval()
    with torch.no_grad():
        return np.concatenate([model.encode_image(torch.from_numpy(images[i:i + _BATCH])).float().numpy()
                               for i in range(0, len(images), _BATCH)])


def measure(image_onnx: Path, text_onnx: Path, samples: Samples,
            reference: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    """Least cosine per tower; ONNX runs one batch of all samples and one batch of one (dynamic axes),
    with texts padded only to the longest text (the runtime's padding)."""
    image_session, text_session = _session(image_onnx), _session(text_onnx)
    longest = int((samples.input_ids != 0).sum(axis=1).max())
    ids = samples.input_ids[:, :longest]
    images = np.concatenate([_run(image_session, samples.images), _run(image_session, samples.images[:1])])
    texts = np.concatenate([_run(text_session, ids), _run(text_session, ids[:1, :_length(ids[0])])])
    reference_images = np.concatenate([reference[0], reference[0][:1]])
    reference_texts = np.concatenate([reference[1], reference[1][:1]])
    return {"image_min_cosine": _min_cosine(images, reference_images),
            "text_min_cosine": _min_cosine(texts, reference_texts)}


def measure_images(image_onnx: Path, images: np.ndarray, reference: np.ndarray) -> float:
    """Least cosine of the image tower's features of ``images`` to their PyTorch ``reference``."""
    session = _session(image_onnx)
    features = np.concatenate([_run(session, images[i:i + _BATCH]) for i in range(0, len(images), _BATCH)])
    return _min_cosine(features, reference)


def check(precision: str, result: dict[str, float]) -> None:
    """Fail loudly when a tower is below the precision's threshold."""
    threshold = MIN_COSINE[precision]
    for name, value in result.items():
        if not value >= threshold:  # also catches NaN
            on = " on the calibration folder's images" if name == CALIBRATION_KEY else ""
            raise ClipMatchError(
                f"verification failed: {precision} {name.split('_')[0]} tower cosine to PyTorch fp32{on} is "
                f"{value:.6f}, below {threshold}; the bundle was not written"
            )


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(session, inputs: np.ndarray) -> np.ndarray:
    """The tower's output for its one input, whatever its name (bundles older than cn_clip's names too)."""
    return session.run(None, {session.get_inputs()[0].name: inputs})[0]


def _length(row: np.ndarray) -> int:
    return int((row != 0).sum())


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    cosine = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cosine.min())
