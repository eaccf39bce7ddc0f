"""Matcher and the `clip-match index` / `clip-match query` commands on the tiny exported bundle."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from clip_match import Encoder, LabelIndex, Matcher
from clip_match.cli import main
from clip_match.errors import ClipMatchError


@pytest.fixture(scope="module")
def encoder(tiny_bundle) -> Encoder:
    return Encoder.load(tiny_bundle, device="cpu")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG but not really")
    (folder / "notes.txt").write_text("not an image, skipped by suffix")
    return folder


LABELS = ["猫", "狗", "a red apple", "A Red  Apple", "一辆自行车", "sunset over the sea"]


@pytest.fixture(scope="module")
def index_dir(tiny_bundle, tmp_path_factory):
    candidates = tmp_path_factory.mktemp("candidates") / "labels.txt"
    candidates.write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    out = tmp_path_factory.mktemp("index") / "idx"
    assert main(["index", "build", "--bundle", str(tiny_bundle), "--candidates", str(candidates),
                 "--out", str(out)]) == 0
    return out


def test_matcher_rank_matches_brute_force(encoder, index_dir, images) -> None:
    paths = sorted(images.glob("[0-9].png"))
    matcher = Matcher(encoder, index_dir)
    rankings = matcher.rank(paths, top_k=3)
    texts = [c.text for c in matcher.index.candidates]
    assert len(texts) == 5  # "A Red  Apple" collapses onto "a red apple"
    scores = encoder.encode_images(paths) @ encoder.encode_texts([c.lower() for c in texts]).T
    for row, ranking in zip(scores, rankings):
        assert [hit.text for hit in ranking.hits] == [texts[i] for i in np.argsort(-row)[:3]]
        np.testing.assert_allclose([hit.score for hit in ranking.hits], np.sort(row)[::-1][:3], atol=1e-5)
        assert ranking.softmax_scope == "all" and ranking.softmax_over == 5
    image_ranking = matcher.rank_images("猫", paths, top_k=10)
    assert len(image_ranking.hits) == 4 and image_ranking.hits[0].score >= image_ranking.hits[-1].score
    assert abs(sum(hit.probability for hit in image_ranking.hits) - 1) < 1e-5


def test_query_json_schema_and_bad_image(index_dir, tiny_bundle, images, capsys) -> None:
    status = main(["query", "--bundle", str(tiny_bundle), "--index", str(index_dir), "--image", str(images),
                   "--top-k", "2", "--json"])
    out, err = capsys.readouterr()
    assert status == 1
    assert "broken.png" in err and "error" in err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["image"] for r in records] == [str(images / f"{i}.png") for i in range(4)]
    for record in records:
        assert set(record) == {"image", "results", "softmax"}
        assert record["softmax"] == {"scope": "all", "over": 5}
        assert [hit["rank"] for hit in record["results"]] == [1, 2]
        for hit in record["results"]:
            assert set(hit) == {"rank", "id", "text", "key", "score", "probability", "metadata"}
            assert -1 <= hit["score"] <= 1 and 0 <= hit["probability"] <= 1
        assert record["results"][0]["score"] >= record["results"][1]["score"]


def test_query_table_clips_top_k(index_dir, tiny_bundle, images, capsys) -> None:
    assert main(["query", "--bundle", str(tiny_bundle), "--index", str(index_dir), "--image",
                 str(images / "0.png"), "--top-k", "50"]) == 0
    out, err = capsys.readouterr()
    assert "--top-k 50 is more than the 5 candidates; showing 5" in err
    assert out.splitlines()[0] == str(images / "0.png") and len(out.splitlines()) == 6


def test_query_text_ranks_images(tiny_bundle, images, capsys) -> None:
    status = main(["query", "--bundle", str(tiny_bundle), "--text", "一只猫", "--images", str(images), "--json"])
    out, err = capsys.readouterr()
    assert status == 1 and "broken.png" in err
    record = json.loads(out)
    assert record["text"] == "一只猫" and record["softmax"] == {"scope": "all", "over": 4}
    assert sorted(hit["image"] for hit in record["results"]) == [str(images / f"{i}.png") for i in range(4)]


def test_index_from_another_bundle_is_refused(index_dir, tiny_bundle, tmp_path, images, capsys) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    for item in index_dir.iterdir():
        (foreign / item.name).write_bytes(item.read_bytes())
    manifest = json.loads((foreign / "manifest.json").read_text())
    manifest["bundle_fingerprint"] = "another-model"
    (foreign / "manifest.json").write_text(json.dumps(manifest))
    assert main(["query", "--bundle", str(tiny_bundle), "--index", str(foreign), "--image",
                 str(images / "0.png")]) == 2
    assert "built with model bundle another-model" in capsys.readouterr().err


def test_build_errors_and_warnings(tiny_bundle, encoder, tmp_path, capsys) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    assert main(["index", "build", "--bundle", str(tiny_bundle), "--candidates", str(empty),
                 "--out", str(tmp_path / "x")]) == 2
    assert "empty.txt: no candidates" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    long_text = " ".join(["word"] * (encoder.context_length + 5))
    with pytest.warns(UserWarning, match=r"^2 candidate\(s\) exceed the context length"):
        index = LabelIndex.build(encoder, [long_text, long_text + " more", "short"], progress=False)
    assert len(index) == 3
    assert len(LabelIndex.build(tiny_bundle, ["猫", "狗"], progress=False)) == 2  # a bundle path works too
    with pytest.raises(ClipMatchError, match="no candidates"):
        LabelIndex.build(encoder, [], progress=False)


def test_latex_index_and_add(tiny_bundle, images, tmp_path, capsys) -> None:
    formulas = tmp_path / "formulas.jsonl"
    rows = [{"id": "a", "text": r"\left( x^2 \right)", "source": "test"}, {"id": "b", "text": "( x ^ { 2 } )"},
            {"id": "c", "text": r"\frac{1}{2}"}]
    formulas.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "latex_idx"
    assert main(["index", "build", "--bundle", str(tiny_bundle), "--candidates", str(formulas), "--out", str(out),
                 "--latex"]) == 0
    more = tmp_path / "more.txt"
    more.write_text("\\frac 1 2\nE = mc^2\n")
    assert main(["index", "add", "--bundle", str(tiny_bundle), "--index", str(out), "--candidates", str(more)]) == 0
    capsys.readouterr()
    index = LabelIndex.load(out)
    assert index.latex and [c.id for c in index.candidates] == ["a", "c", "E = mc^2"]
    assert index.candidates[0].metadata == {"source": "test"}
    keys = [json.loads(line)["key"] for line in (out / "candidates.jsonl").read_text().splitlines()]
    assert keys == ["( x ^ { 2 } )", r"\frac { 1 } { 2 }", "E = m c ^ { 2 }"]

    assert main(["query", "--bundle", str(tiny_bundle), "--index", str(out), "--image", str(images / "0.png"),
                 "--latex", "--top-k", "3"]) == 0
    printed = capsys.readouterr().out
    assert "( x ^ { 2 } )" in printed and r"\left(" not in printed  # the table shows normalised LaTeX
    assert main(["query", "--bundle", str(tiny_bundle), "--index", str(out), "--image", str(images / "0.png"),
                 "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["results"]
    assert {(h["text"], h["key"]) for h in hits} >= {(r"\left( x^2 \right)", "( x ^ { 2 } )")}


def test_query_latex_refuses_a_plain_index(index_dir, tiny_bundle, images, capsys) -> None:
    assert main(["query", "--bundle", str(tiny_bundle), "--index", str(index_dir), "--image", str(images / "0.png"),
                 "--latex"]) == 2
    assert "was built without --latex" in capsys.readouterr().err


def test_matcher_without_index_refuses_rank(encoder, images) -> None:
    with pytest.raises(ClipMatchError, match="no candidate index"):
        Matcher(encoder).rank([images / "0.png"])


def test_query_folders_expand_recursively_skipping_hidden_ones(index_dir, tiny_bundle, images, tmp_path,
                                                               capsys) -> None:
    for folder in ("猫", "狗/大", ".thumbnails"):
        (tmp_path / folder).mkdir(parents=True)
    Image.open(images / "0.png").save(tmp_path / "猫" / "a.png")
    Image.open(images / "1.png").save(tmp_path / "狗" / "大" / "b.png")
    Image.open(images / "2.png").save(tmp_path / ".thumbnails" / "c.png")
    assert main(["query", "--bundle", str(tiny_bundle), "--index", str(index_dir), "--image", str(tmp_path),
                 "--json"]) == 0
    assert [json.loads(line)["image"] for line in capsys.readouterr().out.splitlines()] == [
        str(tmp_path / "狗" / "大" / "b.png"), str(tmp_path / "猫" / "a.png")]


def test_index_build_refuses_a_bad_batch_size_and_an_output_that_holds_its_input(tiny_bundle, tmp_path,
                                                                                   capsys) -> None:
    candidates = tmp_path / "out" / "labels.txt"
    candidates.parent.mkdir()
    candidates.write_text("猫\n狗\n", encoding="utf-8")
    build = ["index", "build", "--bundle", str(tiny_bundle), "--candidates", str(candidates)]
    assert main([*build, "--out", str(tmp_path / "i"), "--batch-size", "-3"]) == 2
    assert "batch_size must be a positive integer, got -3" in capsys.readouterr().err
    assert not (tmp_path / "i").exists()
    assert main([*build, "--out", str(candidates.parent), "--overwrite"]) == 2
    assert "holds the input" in capsys.readouterr().err and candidates.read_text(encoding="utf-8") == "猫\n狗\n"


def test_query_empty_folder_is_an_error(index_dir, tiny_bundle, tmp_path, capsys) -> None:
    assert main(["query", "--bundle", str(tiny_bundle), "--index", str(index_dir), "--image", str(tmp_path)]) == 2
    assert f"no images found in {tmp_path}" in capsys.readouterr().err


def test_streaming_keeps_order_and_rejects_bad_batch_size(encoder, index_dir, images) -> None:
    matcher = Matcher(encoder, index_dir)
    paths = sorted(images.glob("*.png"))
    answers = list(matcher.iter_encode(paths, batch_size=2))
    assert [name for name, _ in answers] == [str(p) for p in paths]
    assert [isinstance(v, ClipMatchError) for _, v in answers] == [p.name == "broken.png" for p in paths]
    good = [p for p in paths if p.name != "broken.png"]
    expected = matcher.rank(good, top_k=2)
    streamed = [ranking for _, ranking in matcher.iter_rank(good, top_k=2, batch_size=3)]
    assert [[h.id for h in r.hits] for r in streamed] == [[h.id for h in r.hits] for r in expected]
    with pytest.raises(ClipMatchError, match="batch_size must be a positive integer"):
        list(matcher.iter_rank(paths, batch_size=0))
