"""Torch-free preprocessing equals cn_clip's image_transform on the same decoded image."""
from __future__ import annotations

import io
import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image, ImageOps

from clip_match.runtime.images import decode_image, open_image
from clip_match.errors import ClipMatchError
from clip_match.runtime.preprocess import (CONTENT_CONTRAST, MAX_FOLDS, MEAN, STD, Framing, checked_framing,
                                          flatten_light, fold_wide, on_paper, preprocess, trim_to_content)

NUM_IMAGES = 200
RESOLUTIONS = (224, 96, 33)

# Modes to build and the file formats that can store each (None = an in-memory PIL image).
FORMATS = {
    "RGB": (None, "PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"),
    "RGBA": (None, "PNG", "WEBP", "TIFF"),
    "LA": (None, "PNG"),
    "P": (None, "PNG", "GIF", "BMP", "TIFF"),
    "P+transparency": ("PNG", "GIF"),
    "L": (None, "PNG", "JPEG", "BMP", "TIFF", "WEBP"),
    "CMYK": (None, "JPEG", "TIFF"),
    "I;16": (None, "PNG", "TIFF"),
    "1": (None, "PNG", "BMP", "TIFF"),
}
SPECIAL_SIZES = ((4000, 3000), (1, 1), (2, 3), (3, 2), (1, 40), (3000, 7), (9, 2500), (224, 224), (225, 223))


def _pixels(rng: np.random.Generator, width: int, height: int, channels: int) -> np.ndarray:
    """A gradient with noise and a hard edge: content that bicubic resizing really changes."""
    ramp = np.add.outer(np.linspace(0, 100, height), np.linspace(0, 60, width)).astype(np.uint8)
    pixels = rng.integers(0, 96, size=(height, width, channels), dtype=np.uint8)
    pixels += ramp[:, :, None]
    pixels[: height // 2, : width // 3] //= 4
    return pixels


def _make_image(rng: np.random.Generator, mode: str, width: int, height: int) -> Image.Image:
    if mode in ("RGB", "RGBA", "CMYK"):
        channels = len(mode)
        return Image.frombytes(mode, (width, height), _pixels(rng, width, height, channels).tobytes())
    if mode == "LA":
        return Image.frombytes("LA", (width, height), _pixels(rng, width, height, 2).tobytes())
    if mode in ("L", "1"):
        return Image.fromarray(_pixels(rng, width, height, 1)[:, :, 0]).convert(mode)
    if mode == "I;16":
        wide = _pixels(rng, width, height, 1)[:, :, 0].astype("<u2") * 257
        return Image.frombytes("I;16", (width, height), wide.tobytes())
    colors = int(rng.integers(2, 257))
    indices = _pixels(rng, width, height, 1) % colors
    palette = Image.frombytes("P", (width, height), indices.tobytes())
    palette.putpalette(rng.integers(0, 256, size=3 * colors, dtype=np.uint8).tobytes())
    if mode == "P+transparency":
        palette.info["transparency"] = 0
    return palette


def _case(index: int, rng: np.random.Generator, pick: random.Random) -> tuple[str, Image.Image, int]:
    mode = list(FORMATS)[index % len(FORMATS)]
    if index < len(SPECIAL_SIZES):
        width, height = SPECIAL_SIZES[index]
    else:
        width, height = pick.randint(1, 640), pick.randint(1, 640)
    image = _make_image(rng, mode, width, height)
    fmt = pick.choice(FORMATS[mode])
    name = f"case{index}-{mode}-{width}x{height}-{fmt or 'memory'}"
    if fmt is None:
        decoded = open_image(image, name)
    else:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        decoded = decode_image(buffer.getvalue(), name)
    return name, decoded, RESOLUTIONS[index % len(RESOLUTIONS)]


@pytest.fixture(scope="module")
def cases() -> list[tuple[str, Image.Image, int]]:
    rng = np.random.default_rng(7)
    pick = random.Random(7)
    return [_case(index, rng, pick) for index in range(NUM_IMAGES)]


def test_preprocess_matches_cn_clip_image_transform(cases):
    image_transform = pytest.importorskip("cn_clip.clip").image_transform
    transforms = {resolution: image_transform(resolution) for resolution in RESOLUTIONS}
    worst = 0.0
    for name, image, resolution in cases:
        ours = preprocess([image], resolution)
        expected = transforms[resolution](image).numpy()[None]
        assert ours.dtype == np.float32 and ours.shape == expected.shape == (1, 3, resolution, resolution), name
        difference = float(np.abs(ours - expected).max())
        assert difference <= 1e-5, f"{name}: max abs difference {difference}"
        worst = max(worst, difference)
    modes = {image.mode for _, image, _ in cases}
    assert {"RGB", "RGBA", "LA", "P", "L", "CMYK", "1"} <= modes, modes
    assert any(image.size == (4000, 3000) for _, image, _ in cases)


def test_batch_equals_images_one_by_one(cases):
    images = [image for _, image, resolution in cases[:30] if resolution == 96]
    batch = preprocess(images, 96)
    assert batch.shape == (len(images), 3, 96, 96)
    for row, image in zip(batch, images):
        np.testing.assert_array_equal(row, preprocess(image, 96)[0])
    assert preprocess([], 96).shape == (0, 3, 96, 96)
    np.testing.assert_array_equal(preprocess(images[:1], np.int64(96)), batch[:1])
    with ThreadPoolExecutor(2) as pool:  # resized in parallel: the same batch, in order
        np.testing.assert_array_equal(preprocess(images, 96, pool=pool), batch)


def test_exif_rotated_jpeg_comes_out_upright():
    upright = Image.new("RGB", (40, 80), (230, 20, 20))
    upright.paste((20, 20, 230), (0, 40, 40, 80))  # red top half, blue bottom half
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    buffer = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    stored = Image.open(io.BytesIO(buffer.getvalue()))
    assert stored.size == (80, 40)  # what cn_clip's loader sees: the image lies on its side

    decoded = decode_image(buffer.getvalue(), "rotated.jpg")
    assert decoded.size == (40, 80)
    pixels = preprocess([decoded], 32)[0]
    red, blue = pixels[0], pixels[2]
    assert red[:12].mean() > 1.0 > blue[:12].mean()  # top: red
    assert blue[-12:].mean() > 1.0 > red[-12:].mean()  # bottom: blue


def test_custom_mean_and_std():
    image = Image.new("RGB", (3, 3), (255, 0, 128))
    plain = preprocess([image], 4, mean=(0, 0, 0), std=(1, 1, 1))
    np.testing.assert_allclose(plain[0, :, 0, 0], [1.0, 0.0, 128 / 255], rtol=1e-6)
    clip = preprocess([image], 4)
    np.testing.assert_allclose(clip[0, :, 0, 0], (plain[0, :, 0, 0] - np.float32(MEAN)) / np.float32(STD), rtol=1e-6)


def test_bad_input_is_named():
    with pytest.raises(ClipMatchError, match=r"images\[1\]: expected a PIL image, got ndarray"):
        preprocess([Image.new("RGB", (2, 2)), np.zeros((2, 2, 3), np.uint8)], 32)
    with pytest.raises(ClipMatchError, match="resolution"):
        preprocess([Image.new("RGB", (2, 2))], 0)
    with pytest.raises(ClipMatchError, match="mean and std need 3 values"):
        preprocess([Image.new("RGB", (2, 2))], 8, mean=(0.5, 0.5))
    with pytest.raises(ClipMatchError, match="std must not contain zero"):
        preprocess([Image.new("RGB", (2, 2))], 8, std=(0.5, 0.0, 0.5))


def _formula_on(canvas: tuple[int, int], at: tuple[int, int], paper: int = 255) -> Image.Image:
    """A dark 40x12 'formula' with a grey edge, pasted on a plain canvas."""
    image = Image.new("RGB", canvas, (paper,) * 3)
    image.paste((20, 20, 20), (at[0], at[1], at[0] + 40, at[1] + 12))
    image.paste((150, 150, 150), (at[0] - 1, at[1], at[0], at[1] + 12))  # anti-aliased edge: content too
    return image


def test_trim_to_content_crops_to_what_differs_from_the_border_plus_a_margin():
    trimmed = trim_to_content(_formula_on((200, 60), (30, 10)), margin=3)
    assert trimmed.size == (41 + 6, 12 + 6)
    assert trimmed.tobytes() == trim_to_content(_formula_on((90, 40), (5, 20)), margin=3).tobytes()
    dark_paper = trim_to_content(_formula_on((200, 60), (30, 10), paper=235), margin=0)  # a tinted scan
    assert dark_paper.size == (41, 12)
    assert trim_to_content(_formula_on((50, 20), (2, 2)), margin=9).size == (50, 20)  # the margin stops at the edge
    blank = Image.new("L", (30, 20), 255)
    assert trim_to_content(blank, margin=2) is blank
    faint = Image.new("L", (30, 20), 255)
    faint.paste(255 - CONTENT_CONTRAST, (5, 5, 10, 10))  # noise-level marks are not content
    assert trim_to_content(faint, margin=0) is faint


def test_preprocess_trims_before_the_resize_in_every_path():
    images = [_formula_on((200, 60), (30, 10)), _formula_on((120, 90), (60, 40))]
    trimmed = preprocess(images, 32, framing=Framing(2))
    np.testing.assert_array_equal(trimmed[0], trimmed[1])  # one formula, two canvases: one input
    np.testing.assert_array_equal(trimmed[0], preprocess(trim_to_content(images[0], 2), 32)[0])
    assert not np.array_equal(*preprocess(images, 32))  # cn_clip's plain resize sees two canvases
    with ThreadPoolExecutor(2) as pool:
        np.testing.assert_array_equal(preprocess(images, 32, pool=pool, framing=Framing(2)), trimmed)
    folded = preprocess(images, 32, framing=Framing(2, fold=True))
    np.testing.assert_array_equal(folded[0], preprocess(fold_wide(trim_to_content(images[0], 2)), 32)[0])


def test_flatten_light_evens_out_a_shadow_across_the_paper_and_keeps_the_ink():
    drawn = _formula_on((200, 60), (30, 10))
    np.testing.assert_array_equal(np.asarray(flatten_light(drawn)), np.asarray(drawn.convert("L")))  # even light
    light = np.linspace(1.0, 0.4, 200, dtype=np.float32)[None, :, None]  # the light falls off to the right
    shaded = Image.fromarray((np.asarray(drawn, np.float32) * light).astype(np.uint8))
    assert trim_to_content(shaded, 0).size == (200, 60)  # the shadow looks like content
    flat = np.asarray(flatten_light(shaded), np.int16)
    assert np.abs(flat[:5] - 255).max() <= 30 and flat[15, 40] < 60  # paper near white again, ink still dark
    assert trim_to_content(flatten_light(shaded), 0).size == (41, 12)
    dark_mode = ImageOps.invert(drawn)  # light ink on dark paper: flattened the other way round
    assert np.asarray(flatten_light(dark_mode))[:5].max() <= 12 and trim_to_content(flatten_light(dark_mode), 0).size == (41, 12)
    framed = preprocess(shaded, 32, framing=Framing(2, flatten=True))
    np.testing.assert_allclose(framed, preprocess(drawn, 32, framing=Framing(2)), atol=0.25)
    with pytest.raises(ClipMatchError, match="flatten_light must be true or false, and true only with a trim_margin"):
        checked_framing(None, False, "here", flatten=True)


def test_fold_wide_stacks_overlapping_strips_of_every_column_into_a_near_square():
    gradient = np.tile(np.arange(240, dtype=np.uint8), (20, 1))  # 240x20: each column its own grey
    wide = Image.fromarray(np.pad(gradient, 4, constant_values=255)).convert("RGB")  # 248x28 on white paper
    folded = np.asarray(fold_wide(wide))
    strips = [folded[top:top + 28] for top in range(0, folded.shape[0], 28 + 28 // 4)]
    assert len(strips) == 3 and 0.7 < folded.shape[1] / folded.shape[0] < 1.4
    assert (folded[28:28 + 7] == 255).all()  # the gaps between strips are the border colour
    seen = np.concatenate([strip[14, :, 0] for strip in strips])
    assert set(range(240)) <= set(seen.tolist())  # no column lost; neighbours overlap by half the height
    assert (strips[0][:, -14:] == strips[1][:, :14]).all()
    for left_alone in (Image.new("L", (60, 50)), Image.new("L", (20, 60)), Image.new("L", (30, 0))):
        assert fold_wide(left_alone) is left_alone  # near-square, tall and empty images are not folded
    assert fold_wide(Image.new("L", (4000, 10))).height == MAX_FOLDS * 10 + (MAX_FOLDS - 1) * 2  # strips capped



def _transparent(drawn: Image.Image, hidden: int) -> Image.Image:
    """``drawn`` (grey ink on white) as an export with a transparent background: black ink whose
    alpha is the ink's darkness, the fully see-through pixels' colour ``hidden`` (nobody sees it)."""
    alpha = 255 - np.asarray(drawn.convert("L"))
    rgba = np.zeros((*alpha.shape, 4), np.uint8)
    rgba[..., :3] = np.where(alpha[..., None] > 0, 0, hidden)
    rgba[..., 3] = alpha
    return Image.fromarray(rgba, "RGBA")


def test_transparent_images_are_laid_on_paper_before_framing():
    drawn = _formula_on((200, 60), (30, 10))
    framing = Framing(2)
    for hidden in (0, 255):  # black or white under the transparent pixels: the same formula
        exported = _transparent(drawn, hidden)
        assert np.abs(np.asarray(on_paper(exported), np.int16) - np.asarray(drawn, np.int16)).max() <= 1
        np.testing.assert_allclose(preprocess(exported, 32, framing=framing), preprocess(drawn, 32, framing=framing),
                                   atol=0.02)
    assert trim_to_content(_transparent(drawn, 0).convert("RGB"), 0).size == (200, 60)  # alpha dropped: nothing found
    light = _transparent(drawn, 0)
    light.paste((235, 235, 235), (0, 0) + light.size, mask=light.getchannel("A"))  # light ink (a dark-mode export)
    on_black = on_paper(light)
    assert np.asarray(on_black)[0, 0].tolist() == [0, 0, 0] and trim_to_content(on_black, 0).size == (41, 12)
    opaque = Image.new("RGB", (5, 5))
    assert on_paper(opaque) is opaque
