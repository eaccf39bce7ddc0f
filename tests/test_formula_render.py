"""Formula renderers (TeX Live batches, mathtext fallback) and the scan-like augmentation."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from clip_match.formulas.evaluate import Formula
from clip_match.formulas.render import get_renderer, render_all, unsafe_reason
from clip_match.formulas.render_mathtext import MathtextRenderer, to_mathtext
from clip_match.formulas.render_tex import tex_available
from clip_match.errors import ClipMatchError
from datasets.formulas.augment import AugmentConfig, PhotoConfig, augment, photograph
from datasets.formulas.build import render_clean

needs_tex = pytest.mark.skipif(not tex_available(), reason="latex/dvipng not installed "
                               "(run datasets/formulas/install_tex.sh)")


def test_to_mathtext_removes_spaces_that_break_scripts():
    assert to_mathtext(r"x ^ { i } + y _ { j }") == "x^{i}+y_{j}"
    assert to_mathtext(r"\frac { 1 } { 2 } \alpha x") == r"\frac{1}{2}\alpha x"  # control word + letter keeps it
    assert to_mathtext(r"a \ b") == r"a\ b"  # control space survives
    assert to_mathtext(r"\mbox { a b } ^ { 2 }") == r"\mbox{ a b }^{2}"  # text mode keeps its spaces
    assert to_mathtext(r"\{ a \} _ { 1 }") == r"\{a\}_{1}"  # escaped braces are not groups
    assert to_mathtext(r"\Big ( x \Big ) \le 1") == r"(x)\leq1"  # commands mathtext lacks


def test_mathtext_draws_spaced_superscripts_as_superscripts():
    spaced, plain, compact = MathtextRenderer(dpi=100)(["x ^ { i }", "x i", "x^{i}"])
    assert np.array_equal(np.asarray(spaced.image), np.asarray(compact.image))
    assert spaced.image.size != plain.image.size  # unfixed, mathtext draws "x ^ { i }" exactly like "x i"


def test_mathtext_reports_what_it_cannot_draw():
    ok, array = MathtextRenderer(dpi=100)([r"\frac { a } { b }", r"\begin{array}{cc} a & b \\ \end{array}"])
    assert ok.image is not None and ok.image.mode == "L" and ok.error is None
    assert array.image is None and array.error.startswith("mathtext:")


def test_unsafe_commands_are_refused():
    assert unsafe_reason(r"\input { /etc/passwd }") == r"refused command \input"
    assert unsafe_reason(r"\def \x { y }") == r"refused command \def"
    assert unsafe_reason(r"\inputnorm x") is None and unsafe_reason(r"\frac { a } { b }") is None


@needs_tex
def test_tex_batch_survives_bad_formulas_and_keeps_pages_aligned():
    formulas = [r"x ^ { 2 }", r"\undefinedcommand y", r"\frac { a } { b }", r"{ x", r"\input { /etc/passwd }",
                r"\sum _ { i = 1 } ^ { n } i"]
    renderer = get_renderer("tex", dpi=100)
    batch = render_all(formulas, renderer, batch_size=len(formulas), progress=False)
    assert [r.image is not None for r in batch] == [True, False, True, False, False, True]
    assert "Undefined control sequence" in batch[1].error
    assert batch[4].error == r"refused command \input"
    for formula, result in zip(formulas, batch):
        if result.image is not None:  # each page belongs to its own formula
            alone = renderer([formula])[0].image
            assert np.array_equal(np.asarray(alone), np.asarray(result.image)), formula


@needs_tex
def test_tex_renders_grayscale_black_on_white_tight():
    (result,) = get_renderer("tex", dpi=100)([r"E = m c ^ { 2 }"])
    pixels = np.asarray(result.image)
    assert result.image.mode == "L" and pixels.min() < 50 and pixels.max() == 255
    assert pixels[:, 0].min() < 255 and pixels[:, -1].min() < 255  # ink touches the left and right edges


@needs_tex
def test_tex_fonts_typeset_the_same_formula_differently():
    formula = r"\alpha + \sum _ { i } x _ { i } ^ { 2 }"
    images = {font: get_renderer(f"tex:{font}", dpi=100)([formula])[0].image for font in ("cm", "palatino", "euler")}
    assert all(image is not None for image in images.values())
    pixels = {font: np.asarray(image).tobytes() for font, image in images.items()}
    assert len(set(pixels.values())) == 3
    (plain,) = get_renderer("tex", dpi=100)([formula])
    assert np.asarray(plain.image).tobytes() == pixels["cm"]  # "tex" is "tex:cm"
    assert "mathpazo" in get_renderer("tex:palatino").settings["preamble"]  # (render caches key on it)
    with pytest.raises(ClipMatchError, match="unknown TeX font 'comic'"):
        get_renderer("tex:comic")


def test_mathtext_fonts_and_the_default_render_cache_key():
    default, serif = MathtextRenderer(dpi=100), MathtextRenderer(dpi=100, font="dejavuserif")
    assert "font" not in default.settings and serif.settings["font"] == "dejavuserif"
    (a,), (b,) = default(["x + y"]), serif(["x + y"])
    assert np.asarray(a.image).tobytes() != np.asarray(b.image).tobytes()
    with pytest.raises(ClipMatchError, match="unknown mathtext font"):
        get_renderer("mathtext:comic")
    with pytest.raises(ClipMatchError, match="unknown renderer 'word:cm'"):
        get_renderer("word:cm")


def _render() -> Image.Image:
    image = Image.new("L", (300, 60), 255)
    image.paste(0, (20, 10, 280, 50))
    return image


def test_augment_is_seeded_and_varied():
    config = AugmentConfig()
    render = _render()
    first = augment(render, config, seed=0, fid=7, copy=0)
    assert first == augment(render, config, seed=0, fid=7, copy=0)
    others = {augment(render, config, seed=s, fid=f, copy=c) for s, f, c in [(1, 7, 0), (0, 8, 0), (0, 7, 1)]}
    assert first not in others and len(others) == 3
    image = Image.open(io.BytesIO(first))
    assert image.mode == "RGB" and image.format in ("PNG", "JPEG")


def test_augment_applies_its_ranges():
    render = _render()
    plain = AugmentConfig(bold_probability=0, ink_gamma=(1, 1), scale=(0.5, 0.5), pad=(10, 10), extra_width=0, extra_height=0,
                          rotate_degrees=0, blur_radius=(0, 0), noise_std=(0, 0), tint=0, jpeg_probability=0)
    image = Image.open(io.BytesIO(augment(render, plain, 0, 0, 0)))
    assert image.format == "PNG" and image.size == (150 + 20, 30 + 20)
    pixels = np.asarray(image)
    assert (pixels[:10] == 255).all() and (pixels[20:30, 30:130] == 0).all()
    jpeg = AugmentConfig(jpeg_probability=1.0, jpeg_quality=(50, 50))
    assert Image.open(io.BytesIO(augment(render, jpeg, 0, 0, 0))).format == "JPEG"
    tinted = Image.open(io.BytesIO(augment(render, AugmentConfig(tint=0.5, rotate_degrees=0, noise_std=(0, 0),
                                                                   jpeg_probability=0), 0, 0, 0)))
    assert np.asarray(tinted)[0, 0].min() < 255  # background no longer pure white


def test_photograph_is_seeded_and_looks_like_a_photo():
    printed = _render().convert("RGB")
    first = photograph(printed, np.random.default_rng([3, 1]))
    assert np.array_equal(np.asarray(first), np.asarray(photograph(printed, np.random.default_rng([3, 1]))))
    assert not np.array_equal(np.asarray(first), np.asarray(photograph(printed, np.random.default_rng([3, 2]))))
    # Even light and no texture, noise or blur leave paper white and ink black; the default is uneven.
    flat = PhotoConfig(margin=(0.5, 0.5), perspective=0, rotate_degrees=0, shading=(0, 0), light_tint=0, grain=(0, 0),
                       downscale=(1, 1), blur_radius=(0, 0), noise_std=(0, 0))
    clean = np.asarray(photograph(printed, np.random.default_rng(0), flat).convert("L"))
    assert clean.shape == (60 + 2 * 32, 300 + 2 * 32) and clean[0, 0] == 255 and clean[62, 162] == 0
    paper = np.asarray(first.convert("L"), dtype=np.float32)
    corners = [paper[:5, :5].mean(), paper[:5, -5:].mean(), paper[-5:, :5].mean(), paper[-5:, -5:].mean()]
    assert max(corners) - min(corners) > 5  # the light falls off across the paper
    always = AugmentConfig(photo_probability=1.0)
    assert Image.open(io.BytesIO(augment(_render(), always, 0, 0, 0))).format == "JPEG"


@needs_tex
def test_training_renders_typeset_the_source_and_fall_back_to_the_normalised_text():
    sized = Formula(0, r"( \frac { a } { b } )", source=r"\left( \frac { a } { b } \right)")
    broken = Formula(1, "x", source=r"\hspace { 1 c m } x")  # im2markup's tokens break the unit
    renders = {}
    for from_source in (True, False):
        rendered, failures = render_clean([sized, broken], "tex", 100, 10, False, from_source)
        assert not failures and [f.fid for f, _ in rendered] == [0, 1]
        renders[from_source] = [Image.open(io.BytesIO(png)) for _, png in rendered]
    sized_paren, plain_paren = (_paren_rows(renders[flag][0]) for flag in (True, False))
    assert sized_paren > 1.3 * plain_paren  # \left( grows with the fraction; a plain ( does not
    assert np.array_equal(np.asarray(renders[True][1]), np.asarray(renders[False][1]))


def _paren_rows(image: Image.Image) -> int:
    """How many rows have ink in the first 4 columns: the height of an opening parenthesis."""
    return int((np.asarray(image)[:, :4] < 128).any(axis=1).sum())
