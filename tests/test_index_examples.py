"""Candidates with example images: prototypes from a TSV/JSONL split, mixing, the index and its CLI."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from clip_match import cli
from clip_match.data.formats import imgs_path, write_split
from clip_match.errors import ClipMatchError
from clip_match.index.examples import fuse, read_examples
from clip_match.index.label_index import LabelIndex

TEXTS = ["猫", "狗", "雨伞"]


@pytest.fixture(scope="module")
def example_dir(tmp_path_factory, synthetic_images, png):
    """A train split: 猫 has images 0 and 1, 狗 image 2, 雨伞 none; image 3 belongs to no text."""
    directory = tmp_path_factory.mktemp("examples")
    images = [(i, png(image)) for i, image in enumerate(synthetic_images(4, seed=21))]
    write_split(directory, "train", images, [(1, "猫", [0, 1]), (2, "狗", [2])])
    return directory


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def test_prototypes_are_normalised_means_of_each_texts_images(tiny_encoder, example_dir, synthetic_images):
    prototypes = read_examples(tiny_encoder, example_dir, "train", batch_size=1, progress=False).prototypes
    images = tiny_encoder.encode_images(synthetic_images(4, seed=21))
    assert sorted(prototypes) == ["狗", "猫"]
    np.testing.assert_allclose(prototypes["猫"], unit(images[0] + images[1]), atol=1e-5)
    np.testing.assert_allclose(prototypes["狗"], images[2], atol=1e-5)
    keyed = read_examples(tiny_encoder, example_dir, "train", key=lambda text: f"<{text}>", progress=False)
    assert sorted(keyed.prototypes) == ["<狗>", "<猫>"] and keyed.layouts is None


def test_fuse_mixes_by_text_weight() -> None:
    text = np.eye(3, dtype=np.float32)
    prototype = np.array([0, 0, 1], np.float32)
    np.testing.assert_allclose(fuse(text, [prototype, None, prototype], 1.0), text)
    np.testing.assert_allclose(fuse(text, [prototype, None, prototype], 0.0), [prototype, text[1], prototype])
    np.testing.assert_allclose(fuse(text, [prototype, None, None], 0.5)[0], unit(np.array([1, 0, 1.0])), atol=1e-6)
    for bad in (-0.1, 1.5, True, "0.5"):
        with pytest.raises(ClipMatchError, match="text weight must be between 0"):
            fuse(text, [None] * 3, bad)


def test_bad_example_splits_name_the_file_or_line(tiny_encoder, example_dir, tmp_path) -> None:
    with pytest.raises(ClipMatchError, match=r"valid_imgs.tsv: no such file"):
        read_examples(tiny_encoder, example_dir, "valid", progress=False)
    write_split(tmp_path, "train", [(5, b"not an image")], [(1, "猫", [5])])
    with pytest.raises(ClipMatchError, match=r"train_imgs.tsv:1: not an image"):
        read_examples(tiny_encoder, tmp_path, "train", progress=False)
    write_split(tmp_path, "other", [(5, b"x")], [(1, "猫", [6])])
    with pytest.raises(ClipMatchError, match="none of its images is paired with a text"):
        read_examples(tiny_encoder, tmp_path, "other", progress=False)


def test_index_with_examples_ranks_an_example_image_first_and_keeps_its_weight(tiny_encoder, example_dir,
                                                                               synthetic_images, tmp_path):
    examples = read_examples(tiny_encoder, example_dir, "train", progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        index = LabelIndex.build(tiny_encoder, TEXTS, examples=examples, text_weight=0.0, progress=False)
    assert any("1 of 3 candidate(s) have no example images" in str(w.message) for w in caught)
    dog = tiny_encoder.encode_images(synthetic_images(4, seed=21)[2])
    assert index.search(dog, top_k=1)[0].hits[0].text == "狗"
    assert index.search(dog, top_k=3)[0].hits[0].score == pytest.approx(1.0, abs=1e-5)

    index.save(tmp_path / "index")
    loaded = LabelIndex.load(tmp_path / "index", fingerprint=tiny_encoder.fingerprint)
    assert loaded.text_weight == 0.0
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    manifest["text_weight"] = 2
    (tmp_path / "index" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ClipMatchError, match=r"manifest.json: text weight must be between 0"):
        LabelIndex.load(tmp_path / "index")

    plain = LabelIndex.build(tiny_encoder, TEXTS, progress=False)
    assert plain.text_weight == 1.0
    assert plain.search(dog, top_k=3)[0].hits[0].score < 0.999  # text vectors only: no exact match
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the candidate without examples)
        mixed = LabelIndex.build(tiny_encoder, TEXTS, examples=examples, progress=False)
    assert mixed.text_weight == 0.5  # as `clip-match index build --examples` without --text-weight
    with pytest.raises(ClipMatchError, match="keeps text vectors only .* example images would change nothing"):
        plain.add(tiny_encoder, ["一只鸟"], examples=examples, progress=False)


def test_index_build_cli_with_examples(tiny_bundle, example_dir, tmp_path, capsys):
    (tmp_path / "labels.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    common = ["index", "build", "--bundle", str(tiny_bundle), "--candidates", str(tmp_path / "labels.txt"),
              "--examples", str(example_dir)]
    assert cli.main([*common, "--out", str(tmp_path / "i"), "--text-weight", "0.25"]) == 0
    assert "3 candidates" in capsys.readouterr().out
    assert LabelIndex.load(tmp_path / "i").text_weight == 0.25

    assert cli.main([*common, "--out", str(tmp_path / "j"), "--text-weight", "2"]) == 2
    assert "text weight must be between 0" in capsys.readouterr().err
    assert cli.main([*common, "--out", str(tmp_path / "k"), "--examples-split", "valid"]) == 2
    assert "valid_imgs.tsv: no such file" in capsys.readouterr().err
    assert not (tmp_path / "j").exists() and not (tmp_path / "k").exists()


def test_eval_retrieval_with_examples(tiny_bundle, synthetic_images, png, tmp_path, capsys):
    images = [png(image) for image in synthetic_images(3, seed=22)]
    write_split(tmp_path, "test", enumerate(images), [(7, "x ^ { 2 }", [0]), (8, "y", [1]), (9, "z", [2])])
    write_split(tmp_path, "train", [(10 + i, data) for i, data in enumerate(images)],
                [(7, "x ^ { 2 }", [10]), (8, "y", [11]), (9, "z", [12])])
    base = ["eval-retrieval", str(tiny_bundle), str(tmp_path), "--precision", "fp32", "--json"]
    assert cli.main([*base, "--examples", "train", "--text-weight", "0"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert (metrics["candidates_with_examples"], metrics["text_weight"], metrics["i2t_r1"]) == (3, 0.0, 100.0)

    assert cli.main([*base, "--examples", "test"]) == 2
    assert "another split than the queries" in capsys.readouterr().err
    assert imgs_path(tmp_path, "test").is_file()
