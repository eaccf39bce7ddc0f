"""Shared pytest setup. Fixtures that several test modules use live here."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image, ImageDraw

# Keep tests deterministic and polite on a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """Slim checkpoint (official CN-CLIP format) of the shipped "tiny" config, random weights, seed 0."""
    import torch

    from clip_match.model import create_model, load_config, save_slim_checkpoint

    config = load_config("tiny")
    torch.manual_seed(0)
    model = create_model(config)
    return save_slim_checkpoint(model, tmp_path_factory.mktemp("tiny_checkpoint") / "tiny.pt", config)


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint, tmp_path_factory):
    """Verified model bundle (fp32 + int8) exported from `tiny_checkpoint`."""
    from clip_match.export import export_bundle

    return export_bundle(tiny_checkpoint, "tiny", tmp_path_factory.mktemp("tiny_bundle") / "bundle",
                         precisions=("fp32", "int8"))


@pytest.fixture(scope="session")
def tiny_encoder(tiny_bundle):
    """`tiny_bundle` opened in fp32 on one CPU thread."""
    from clip_match.runtime.encoder import Encoder

    return Encoder.load(tiny_bundle, device="cpu", precision="fp32", threads=1)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def png():
    """``png(image) -> PNG file bytes``."""
    return _png


def _synthetic_images(count: int, seed: int) -> list[Image.Image]:
    """Gradients with a filled ellipse and noise, of varied sizes: stand-ins for photos."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        height, width = (int(v) for v in rng.integers(48, 120, 2))
        y, x = np.mgrid[0:height, 0:width] / max(height, width)
        pixels = np.stack([x, y, 1 - x], axis=-1) * rng.uniform(60, 255, 3) + rng.normal(0, 10, (height, width, 3))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        box = sorted(rng.integers(0, width, 2)) + sorted(rng.integers(0, height, 2))
        ImageDraw.Draw(image).ellipse([box[0], box[2], box[1] + 1, box[3] + 1],
                                      fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        images.append(image)
    return images


@pytest.fixture(scope="session")
def synthetic_images():
    """``synthetic_images(count, seed) -> list of PIL images``."""
    return _synthetic_images


@pytest.fixture(scope="session")
def calibration_dir(tmp_path_factory):
    """An int8 calibration folder: 12 readable images (PNG and JPEG, one in a sub-folder), one
    corrupt image and one text file."""
    directory = tmp_path_factory.mktemp("calibration")
    (directory / "sub").mkdir()
    for index, image in enumerate(_synthetic_images(12, seed=1)):
        image.save(directory / ("sub" if index == 0 else "") / f"{index}.{'png' if index % 2 else 'jpg'}")
    (directory / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (directory / "notes.txt").write_text("not an image")
    return directory
