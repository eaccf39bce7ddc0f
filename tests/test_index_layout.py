"""Layout codes (where the ink is) blended into an index: the codes, the blend, the index, query and CLIs."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from clip_match import cli
from clip_match.data.formats import write_split
from clip_match.errors import ClipMatchError
from clip_match.index.examples import read_examples
from clip_match.index.label_index import LabelIndex
from clip_match.formulas.layout_codes import LAYOUT_DIM, deskewed, layout_code, with_layout
from clip_match.query import Matcher

# Three "formulas": ink boxes (x0, y0, x1, y1) on a 100 x 20 canvas, laid out differently.
DRAWINGS = {
    "a + b": [(0, 5, 20, 15), (30, 8, 40, 12), (50, 5, 100, 15)],
    "\\frac { a } { b }": [(30, 0, 70, 8), (20, 9, 80, 11), (30, 12, 70, 20)],
    "x ^ { 2 }": [(0, 6, 60, 20), (65, 0, 80, 7), (85, 8, 100, 20)],
}


def drawing(boxes, scale: float, pad: int, ink: int = 0, paper: int = 255, blur: float = 0.0) -> Image.Image:
    """The boxes drawn at ``scale`` on a canvas with ``pad`` pixels of paper around them."""
    image = Image.new("RGB", (round(100 * scale) + 2 * pad, round(20 * scale) + 2 * pad), (paper,) * 3)
    draw = ImageDraw.Draw(image)
    for x0, y0, x1, y1 in boxes:
        draw.rectangle((pad + x0 * scale, pad + y0 * scale, pad + x1 * scale - 1, pad + y1 * scale - 1), fill=(ink,) * 3)
    return image.filter(ImageFilter.GaussianBlur(blur)) if blur else image


def write_renders(directory, png) -> None:
    """A train split: two renders of each drawing (scale 2 and 3, different padding and ink)."""
    images, texts = [], []
    for number, (text, boxes) in enumerate(DRAWINGS.items()):
        images += [(10 * number, png(drawing(boxes, 2.0, 6, ink=20))), (10 * number + 1, png(drawing(boxes, 3.0, 15)))]
        texts.append((number, text, [10 * number, 10 * number + 1]))
    write_split(directory, "train", images, texts)


@pytest.fixture(scope="module")
def renders(tmp_path_factory, png):
    directory = tmp_path_factory.mktemp("layout_examples")
    write_renders(directory, png)
    return directory


def queries() -> list[Image.Image]:
    """Each drawing as a 'real' image: another scale, grey ink on tinted paper, blurred."""
    return [drawing(boxes, 1.4, 3, ink=70, paper=235, blur=0.8) for boxes in DRAWINGS.values()]


def test_layout_code_survives_scale_padding_ink_and_blur_but_not_another_layout():
    codes = {text: layout_code(drawing(boxes, 2.0, 4)) for text, boxes in DRAWINGS.items()}
    for code in codes.values():
        assert code.shape == (LAYOUT_DIM,) and np.linalg.norm(code) == pytest.approx(1.0, abs=1e-5)
    for query, text in zip(queries(), DRAWINGS):
        similarities = {other: float(layout_code(query) @ code) for other, code in codes.items()}
        assert similarities[text] > 0.9
        assert max(value for other, value in similarities.items() if other != text) < similarities[text] - 0.3
    assert not layout_code(Image.new("RGB", (50, 20), "white")).any()  # blank: zeros, no division by zero


def test_layout_code_of_a_photo_tilted_and_unevenly_lit_is_that_of_the_drawing():
    codes = {text: layout_code(drawing(boxes, 2.0, 4)) for text, boxes in DRAWINGS.items()}
    for text, boxes in DRAWINGS.items():
        page = drawing(boxes, 3.0, 30, ink=40, paper=230).rotate(5, resample=Image.BICUBIC, expand=True,
                                                                  fillcolor=(230, 230, 230))
        light = np.linspace(1.0, 0.5, page.width, dtype=np.float32)[None, :, None]  # a shadow across the page
        photo = Image.fromarray((np.asarray(page, np.float32) * light).astype(np.uint8))
        similarities = {other: float(layout_code(photo) @ code) for other, code in codes.items()}
        assert similarities[text] > 0.85 and max(similarities.values()) == similarities[text], (text, similarities)
    assert deskewed(Image.new("L", (60, 20), 255), 255.0).size == (60, 20)  # nothing to level: unchanged


def test_layout_code_of_a_transparent_export_is_that_of_the_drawing_on_paper():
    drawn = drawing(DRAWINGS["a + b"], 2.0, 4)
    exported = Image.new("RGBA", drawn.size, (0, 0, 0, 0))  # black ink over see-through black
    exported.putalpha(Image.eval(drawn.convert("L"), lambda gray: 255 - gray))
    assert not layout_code(exported.convert("RGB")).any()  # (alpha dropped: black on black)
    assert float(layout_code(exported) @ layout_code(drawn)) > 0.999


def test_with_layout_blends_the_two_cosines_by_weight():
    model = np.eye(2, dtype=np.float32)
    code = np.zeros(LAYOUT_DIM, np.float32)
    code[0] = 1.0
    for weight in (0.0, 0.3, 1.0):
        blended = with_layout(model, [code, None], weight)
        assert blended.shape == (2, 2 + LAYOUT_DIM)
        assert blended[0] @ blended[0] == pytest.approx(1.0)  # (1 - w) * 1 + w * 1
        assert blended[1] @ blended[1] == pytest.approx(1.0 - weight)  # no code: the layout part scores 0
    with pytest.raises(ClipMatchError, match="layout weight must be between 0"):
        with_layout(model, [None, None], 1.5)


def test_read_examples_averages_the_layout_codes_of_each_texts_images(tiny_encoder, renders):
    examples = read_examples(tiny_encoder, renders, "train", progress=False, layouts=True)
    assert sorted(examples.layouts) == sorted(DRAWINGS) == sorted(examples.prototypes)
    boxes = DRAWINGS["a + b"]
    mean = layout_code(drawing(boxes, 2.0, 6, ink=20)) + layout_code(drawing(boxes, 3.0, 15))
    np.testing.assert_allclose(examples.layouts["a + b"], mean / np.linalg.norm(mean), atol=1e-5)


def test_index_scores_blend_model_and_layout_and_survive_save_and_load(tiny_encoder, renders, tmp_path):
    examples = read_examples(tiny_encoder, renders, "train", progress=False, layouts=True)
    weight = 0.6
    index = LabelIndex.build(tiny_encoder, list(DRAWINGS), examples=examples, text_weight=0.0, layout_weight=weight,
                             progress=False)
    assert index.dim == tiny_encoder.embed_dim + LAYOUT_DIM
    matcher = Matcher(tiny_encoder, index)
    images = queries()
    vectors = tiny_encoder.encode_images(images)
    for image, vector, ranking in zip(images, vectors, matcher.rank(images, top_k=3)):
        for hit in ranking.hits:
            expected = ((1 - weight) * float(vector @ examples.prototypes[hit.key])
                        + weight * float(layout_code(image) @ examples.layouts[hit.key]))
            assert hit.score == pytest.approx(expected, abs=1e-4)
    assert [ranking.hits[0].text for ranking in matcher.rank(images, top_k=1)] == list(DRAWINGS)

    index.save(tmp_path / "index")
    loaded = LabelIndex.load(tmp_path / "index", fingerprint=tiny_encoder.fingerprint)
    assert loaded.layout_weight == weight
    paths = []
    for number, image in enumerate(images):
        image.save(tmp_path / f"{number}.png")
        paths.append(tmp_path / f"{number}.png")
    streamed = [ranking.hits[0] for _, ranking in Matcher(tiny_encoder, loaded).iter_rank(paths, top_k=1, batch_size=2)]
    assert [hit.text for hit in streamed] == list(DRAWINGS)

    with pytest.raises(ClipMatchError, match="blends in layout codes.*--examples"):
        loaded.add(tiny_encoder, ["y"], progress=False)  # no example layouts for the new candidate
    manifest_path = tmp_path / "index" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for field, value, message in (("layout_shape", [8, 64], "layout codes of shape"),
                                  ("layout_version", 1, "layout codes of version 1, this clip-match makes version 2"),
                                  ("layout_weight", -1, "layout weight must be between 0")):
        manifest_path.write_text(json.dumps({**manifest, field: value}))
        with pytest.raises(ClipMatchError, match=rf"manifest.json: {message}"):
            LabelIndex.load(tmp_path / "index")


def test_layout_weight_in_the_clis(tiny_bundle, renders, png, tmp_path, capsys):
    (tmp_path / "labels.txt").write_text("\n".join(DRAWINGS) + "\n", encoding="utf-8")
    build = ["index", "build", "--bundle", str(tiny_bundle), "--candidates", str(tmp_path / "labels.txt"), "--latex"]
    assert cli.main([*build, "--out", str(tmp_path / "i"), "--layout-weight", "0.5"]) == 2
    assert "--layout-weight needs --examples" in capsys.readouterr().err
    assert not (tmp_path / "i").exists()
    assert cli.main([*build, "--out", str(tmp_path / "i"), "--examples", str(renders), "--text-weight", "0",
                     "--layout-weight", "0.9"]) == 0
    assert "layout weight 0.9" in capsys.readouterr().out
    query = tmp_path / "query.png"
    queries()[1].save(query)
    assert cli.main(["query", "--latex", "--image", str(query), "--index", str(tmp_path / "i"),
                     "--bundle", str(tiny_bundle), "--top-k", "1", "--json"]) == 0
    assert "\\\\frac { a } { b }" in capsys.readouterr().out

    write_split(tmp_path / "data", "test", [(i, png(image)) for i, image in enumerate(queries())],
                [(number, text, [number]) for number, text in enumerate(DRAWINGS)])
    write_renders(tmp_path / "data", png)
    evaluate = ["eval-retrieval", str(tiny_bundle), str(tmp_path / "data"), "--precision", "fp32", "--json"]
    assert cli.main([*evaluate, "--examples", "train", "--text-weight", "0", "--layout-weight", "1"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert (metrics["layout_weight"], metrics["i2t_r1"], metrics["t2i_r1"]) == (1.0, 100.0, 100.0)
    # A blend is reported beside the model alone and the layout alone (here the same as the blend).
    assert metrics["layout_only"]["i2t_r1"] == 100.0 and 0 <= metrics["model_only"]["i2t_r1"] <= 100
    assert cli.main([*evaluate[:-1], "--examples", "train", "--text-weight", "0", "--layout-weight", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "image->formula, model alone: R@1" in out and "image->formula, layout alone: R@1 100.00" in out
    # Several query splits against the same candidates: one result each, in order.
    write_split(tmp_path / "data", "photos", [(i, png(image.rotate(3, expand=True, fillcolor="white")))
                                              for i, image in enumerate(queries())],
                [(number, text, [number]) for number, text in enumerate(DRAWINGS)])
    assert cli.main([*evaluate, "--examples", "train", "--text-weight", "0", "--layout-weight", "1",
                     "--split", "test,photos"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert [m["split"] for m in both] == ["test", "photos"] and both[0]["i2t_r1"] == metrics["i2t_r1"]
    assert cli.main([*evaluate, "--examples", "train", "--split", "test,train"]) == 2
    assert "must come from another split than the queries ('train')" in capsys.readouterr().err
    # A query split with images of only some formulas, ranked against all of them (--candidates).
    write_split(tmp_path / "data", "some", [(0, png(queries()[1]))], [(1, list(DRAWINGS)[1], [0])])
    assert cli.main([*evaluate, "--examples", "train", "--text-weight", "0", "--layout-weight", "1", "--split", "some",
                     "--candidates", "test"]) == 0
    some = json.loads(capsys.readouterr().out)
    assert (some["queries"], some["candidates"], some["i2t_r1"]) == (1, 3, 100.0)
    write_split(tmp_path / "data", "other", [(0, png(queries()[1]))], [(1, "y = 1", [0])])
    assert cli.main([*evaluate, "--split", "other", "--candidates", "test"]) == 2
    assert "formula 'y = 1' is not a candidate in split 'test'" in capsys.readouterr().err
    assert cli.main([*evaluate, "--layout-weight", "0.5"]) == 2
    assert "a layout weight needs example images" in capsys.readouterr().err


def test_a_layout_index_warns_that_candidates_without_examples_rank_below_the_others(tiny_encoder, renders):
    examples = read_examples(tiny_encoder, renders, "train", progress=False, layouts=True)
    with pytest.warns(UserWarning, match=r"1 of 4 candidate\(s\) have no example images .* at most 0.4 x that "
                                         r"text's cosine, so they usually rank below candidates with examples"):
        LabelIndex.build(tiny_encoder, [*DRAWINGS, "x = 1"], examples=examples, text_weight=0.0, layout_weight=0.6,
                         progress=False)
