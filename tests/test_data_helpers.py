"""Small generated images and datasets shared by the tests/test_data_*.py modules (no tests here)."""
from __future__ import annotations

import io
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from clip_match.data.formats import encode_b64, write_split


def image_bytes(mode: str = "RGB", size: tuple[int, int] = (24, 16), fmt: str = "JPEG", seed: int = 0) -> bytes:
    """A small noisy image in ``mode`` (RGB, L, P, RGBA, LA, CMYK, I;16), encoded as ``fmt``."""
    rng = np.random.default_rng(seed)
    width, height = size
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, (height, width), dtype=np.uint16))
    else:
        image = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), "RGB")
        image = image.quantize(16) if mode == "P" else image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def bomb_png() -> bytes:
    """A valid-looking PNG whose header claims 30000x30000 pixels (over Pillow's bomb limit)."""
    data = bytearray(image_bytes("L", (8, 8), "PNG"))
    ihdr = 8  # chunk length (4) + type (4) + data (13) + CRC (4) follow the signature
    data[ihdr + 8: ihdr + 16] = (30000).to_bytes(4, "big") * 2
    crc = zlib.crc32(bytes(data[ihdr + 4: ihdr + 21]))
    data[ihdr + 21: ihdr + 25] = crc.to_bytes(4, "big")
    return bytes(data)


def tiny_dataset(data_dir: Path, split: str = "train", n_images: int = 6) -> dict[int, bytes]:
    """Write ``n_images`` JPEGs and three texts (one of them on two images); return id -> bytes."""
    images = {100 + i: image_bytes(seed=i) for i in range(n_images)}
    ids = sorted(images)
    texts = [(1, "一只猫", [ids[0], ids[1]]), (2, "a dog", [ids[2]]), (3, "“红色”的花", ids[3:])]
    write_split(data_dir, split, images.items(), texts)
    return images


def write_lines(path: Path, lines: list[str | bytes], ending: bytes = b"\n") -> None:
    """Write raw lines (to craft bad files byte by byte)."""
    path.write_bytes(b"".join((line if isinstance(line, bytes) else line.encode()) + ending for line in lines))


def tsv_line(image_id: object, data: bytes) -> str:
    return f"{image_id}\t{encode_b64(data)}"
