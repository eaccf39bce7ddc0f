"""`python -m datasets.formulas.measure`: the input-size measurements and the render->real gap."""
from __future__ import annotations

import io

import pytest
from PIL import Image, ImageDraw

from clip_match.data.formats import write_split
from datasets.formulas import measure

FORMULAS = ["x ^ { 2 }", "a + b = c", "\\frac { 1 } { n }"]


def _formula_image(width: int, ink: tuple[int, int]) -> Image.Image:
    image = Image.new("RGB", (width, 40), "white")
    ImageDraw.Draw(image).rectangle([ink[0], 10, ink[1], 30], fill="black")
    return image


@pytest.fixture()
def im2latex(tmp_path):
    root = tmp_path / "im2latex"
    (root / "val").mkdir(parents=True)
    (root / "val.formulas.norm.txt").write_text("\n".join(FORMULAS) + "\n")
    lines = []
    for number, ink in enumerate([(4, 23), (4, 53), (4, 33)]):  # 20, 50 and 30 px of ink
        _formula_image(200, ink).save(root / "val" / f"{number}.png")
        lines.append(f"{number}.png {number}")
    (root / "val.matching.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_inputs_reports_token_coverage_and_symbol_widths(im2latex, capsys):
    measure.measure_inputs(im2latex, every=1)
    out = capsys.readouterr().out
    assert out.startswith("3 distinct formulas;") and "context 52: covers 100.00%" in out
    # ink per visible symbol: 20/2 ("x", "2"), 50/5, 30/3 ("\frac", "1", "n") -> 10 px on a 200 px canvas;
    # squashed to r px wide: 10 * r / 200.
    assert "ink per visible symbol median 10.0 px" in out
    assert "r=64: px per symbol median 3.2" in out and "r=160: px per symbol median 8.0" in out


def test_gap_scores_real_images_of_the_valid_formulas(tiny_bundle, tmp_path, capsys):
    def png(shade: int) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (90, 30), (shade,) * 3).save(buffer, "PNG")
        return buffer.getvalue()

    write_split(tmp_path, "valid", [(10_000_000, png(0))], [(1, FORMULAS[1], [10_000_000])])
    write_split(tmp_path, "test", [(0, png(10)), (1, png(20)), (2, png(30))],
                [(0, FORMULAS[0], [0]), (1, FORMULAS[1], [1, 2])])
    measure.main(["gap", str(tiny_bundle), str(tmp_path)])
    # one candidate (the valid formula), its two real images: always found at rank 1
    assert capsys.readouterr().out.startswith("2 real images of the 1 valid-split formulas, against those 1 "
                                              "candidates: R@1 100.00")
