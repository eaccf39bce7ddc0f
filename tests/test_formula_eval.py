"""Formula retrieval evaluation of a real (tiny, random-weight) ONNX bundle on a written query split."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from clip_match import cli
from clip_match.data.formats import write_split
from clip_match.errors import ClipMatchError
from clip_match.formulas.evaluate import evaluate_split

FORMULAS = ["x ^ { 2 }", "a + b", "\\frac { 1 } { n }", "\\sum _ { i } " + "a _ { i } + " * 60 + "z"]


def _png(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (90 + shade, 30), (shade, 255 - shade, 128)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture()
def query_dir(tmp_path):
    images = [(10 + i, _png(40 * i)) for i in range(5)]  # formula 0 has two images
    texts = [(100, FORMULAS[0], [10, 14])] + [(100 + t, FORMULAS[t], [10 + t]) for t in range(1, 4)]
    write_split(tmp_path, "test", images, texts)
    return tmp_path, images, texts


def test_evaluate_split_scores_the_query_images(tiny_bundle, query_dir):
    from clip_match import Encoder

    data_dir, images, texts = query_dir
    encoder = Encoder.load(tiny_bundle, device="cpu")
    metrics = evaluate_split(encoder, data_dir)
    assert (metrics["queries"], metrics["candidates"], metrics["candidates_truncated"]) == (5, 4, 1)
    # R@1 by hand: is each image's own formula the most similar candidate?
    image_features = encoder.encode_images([data for _, data in images])
    text_features = encoder.encode_texts([text for _, text, _ in texts])
    formula_of = {image_id: row for row, (_, _, ids) in enumerate(texts) for image_id in ids}
    best = np.argmax(image_features @ text_features.T, axis=1)
    expected = 100 * np.mean([best[row] == formula_of[image_id] for row, (image_id, _) in enumerate(images)])
    assert metrics["i2t_r1"] == pytest.approx(expected)
    assert metrics["i2t_r1"] <= metrics["i2t_r5"] == metrics["i2t_r10"] == 100.0  # 4 candidates: always in top 5
    assert 0 <= metrics["t2i_mean_recall"] <= 100


def test_evaluate_split_names_bad_files(tiny_bundle, query_dir, tmp_path):
    from clip_match import Encoder

    data_dir, images, _ = query_dir
    encoder = Encoder.load(tiny_bundle, device="cpu")
    with pytest.raises(ClipMatchError, match="valid_imgs.tsv: no such file"):
        evaluate_split(encoder, data_dir, split="valid")
    write_split(tmp_path / "bad", "test", images, [(1, "x", [10]), (2, "y", [99])])
    with pytest.raises(ClipMatchError, match=r"test_texts.jsonl:2: image_id 99 is not in"):
        evaluate_split(encoder, tmp_path / "bad")


def test_cli_prints_recalls_and_json(tiny_bundle, query_dir, capsys):
    data_dir = query_dir[0]
    assert cli.main(["eval-retrieval", str(tiny_bundle), str(data_dir), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["queries"] == 5 and "i2t_mean_recall" in metrics
    assert cli.main(["eval-retrieval", str(tiny_bundle), str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "5 query images, 4 candidate formulas" in out and "image->formula: R@1" in out
    assert cli.main(["eval-retrieval", str(tiny_bundle), str(data_dir / "missing")]) == 2
