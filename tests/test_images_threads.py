"""The decompression-bomb guard of `decode_image` holds on many threads at once, whatever the warning
filters say, and leaves the process's warning filters as they were (the server decodes on a pool)."""
from __future__ import annotations

import io
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from clip_match.errors import ClipMatchError
from clip_match.runtime.images import decode_image

LIMIT = 1_000_000


def _png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("action", ["default", "ignore", "error"])
def test_bombs_are_refused_and_images_decoded_from_many_threads(monkeypatch, action):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", LIMIT)
    bomb = _png((1200, 1000))     # 1.2 x the limit: Pillow only warns (from 2 x it refuses by itself)
    normal = _png((64, 48))

    def decode(number: int) -> str:
        try:
            return "%dx%d" % decode_image(bomb if number % 2 else normal, f"image {number}").size
        except ClipMatchError as error:
            return str(error)

    with warnings.catch_warnings(record=True):   # (Pillow's warnings, where shown, kept out of the report)
        warnings.simplefilter(action, Image.DecompressionBombWarning)
        filters = list(warnings.filters)
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(decode, range(400)))
        assert warnings.filters == filters
    for number, answer in enumerate(answers):
        if number % 2:
            # (Pillow's warning, where the filters make it an error, says it first)
            assert answer.startswith(f"image {number}: image too large (decompression bomb guard): ") \
                and "1200000 pixels" in answer, answer
        else:
            assert answer == "64x48"
