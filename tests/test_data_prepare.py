"""clip-match prepare: label folders or a labels file -> Chinese-CLIP TSV/JSONL splits."""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from clip_match.cli import main
from clip_match.data.formats import read_jsonl, read_tsv
from clip_match.data.prepare import write_dataset
from clip_match.errors import ClipMatchError
from test_data_helpers import image_bytes, write_lines

SPLITS = ("train", "valid", "test")


def label_folders(root: Path, per_label: int = 5) -> dict[str, bytes]:
    """Two label folders of small images (one nested); return relative path -> bytes."""
    files = {}
    for label_index, label in enumerate(["猫", "dog house"]):
        for i in range(per_label):
            relative = f"{label}/{'sub/' if i == 0 else ''}{i}.{'png' if i % 2 else 'jpg'}"
            data = image_bytes(fmt="PNG" if i % 2 else "JPEG", seed=10 * label_index + i)
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_bytes(data)
            files[relative] = data
    (root / "猫" / "notes.txt").write_text("not an image, ignored")
    (root / ".hidden").mkdir()
    return files


def read_output(out: Path) -> dict[str, tuple[dict[int, bytes], list]]:
    result = {}
    for split in SPLITS:
        images = {r.image_id: base64.b64decode(r.b64) for r in read_tsv(out / f"{split}_imgs.tsv")}
        result[split] = (images, list(read_jsonl(out / f"{split}_texts.jsonl")))
    return result


def prepare(*args: str) -> int:
    return main(["prepare", *args])


def test_label_folders_become_disjoint_seeded_splits(tmp_path, capsys):
    files = label_folders(tmp_path / "images")
    assert prepare(str(tmp_path / "images"), "--out", str(tmp_path / "out"), "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert [summary["splits"][s]["images"] for s in SPLITS] == [8, 1, 1]
    output = read_output(tmp_path / "out")
    ids = [set(output[s][0]) for s in SPLITS]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert set.union(*ids) == set(range(10))
    keys = sorted(files)  # image id = index of the sorted relative path; bytes kept as they were
    for split in SPLITS:
        images, texts = output[split]
        assert all(images[i] == files[keys[i]] for i in images)
        assert sorted(i for t in texts for i in t.image_ids) == sorted(images)  # one text per image here
        for text in texts:
            assert all(keys[i].startswith(text.text + "/") for i in text.image_ids)
    label_ids = {t.text: t.text_id for s in SPLITS for t in output[s][1]}
    assert label_ids == {"dog house": 0, "猫": 1}


def test_ids_and_split_are_stable_across_runs_and_follow_the_seed(tmp_path):
    label_folders(tmp_path / "images")
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        assert prepare(str(tmp_path / "images"), "--out", str(tmp_path / name), "--seed", seed) == 0
    for split in SPLITS:
        for suffix in ("_imgs.tsv", "_texts.jsonl"):
            assert (tmp_path / "a" / f"{split}{suffix}").read_bytes() == (tmp_path / "b" / f"{split}{suffix}").read_bytes()
    assert read_output(tmp_path / "a")["valid"][0] != read_output(tmp_path / "c")["valid"][0]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_labels_file_with_several_texts_per_image(tmp_path, suffix):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.jpg", "b.jpg", "c.png"):
        (images / name).write_bytes(image_bytes(fmt="PNG" if name.endswith("png") else "JPEG"))
    if suffix == ".jsonl":
        lines = ['{"image": "a.jpg", "texts": ["一只猫", "a cat"]}', '{"image": "b.jpg", "text": "一只猫"}',
                 '{"image": "c.png", "text": " 狗 "}', '{"image": "a.jpg", "text": "pet"}']
    else:
        sep = "," if suffix == ".csv" else "\t"
        lines = [f"image{sep}text", f"a.jpg{sep}一只猫{sep}a cat", f"b.jpg{sep}一只猫", f"c.png{sep} 狗 ", f"a.jpg{sep}pet"]
    write_lines(tmp_path / f"labels{suffix}", lines, ending=b"\r\n")
    assert prepare(str(images), "--labels", str(tmp_path / f"labels{suffix}"), "--out", str(tmp_path / "out"),
                   "--split", "1,0,0") == 0
    images_out, texts = read_output(tmp_path / "out")["train"]
    assert sorted(images_out) == [0, 1, 2]
    assert [(t.text_id, t.text, t.image_ids) for t in texts] == [
        (0, "a cat", (0,)), (1, "pet", (0,)), (2, "一只猫", (0, 1)), (3, "狗", (2,))]


def test_max_side_reencodes_only_large_images(tmp_path):
    large_jpeg, large_png, small = image_bytes(size=(300, 200)), image_bytes("RGBA", (90, 120), "PNG"), image_bytes()
    records = [("large.jpg", large_jpeg, ["x"]), ("large.png", large_png, ["x"]), ("small.jpg", small, ["y"])]
    write_dataset(records, tmp_path, split=(1, 0, 0), max_side=64)
    images = read_output(tmp_path)["train"][0]
    assert images[2] == small
    shrunk = {i: Image.open(io.BytesIO(images[i])) for i in (0, 1)}
    assert (shrunk[0].format, shrunk[0].size) == ("JPEG", (64, 43))
    assert (shrunk[1].format, shrunk[1].size, shrunk[1].mode) == ("PNG", (48, 64), "RGBA")


def test_exact_split_counts(tmp_path):
    records = [(f"{i}.jpg", image_bytes(seed=i), ["t"]) for i in range(7)]
    summary = write_dataset(records, tmp_path, split=(0.5, 0.25, 0.25), seed=3)
    assert [summary["splits"][s]["images"] for s in SPLITS] == [3, 2, 2]  # largest remainders: .5 < .75 = .75


def assert_prepare_fails(tmp_path: Path, capsys, expected: str, *args: str) -> None:
    out = tmp_path / "out"
    assert prepare(*args, "--out", str(out)) == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("clip-match prepare: error: ") and expected in message, message
    assert not out.exists() or not list(out.iterdir()), "files left under the output directory"


@pytest.mark.parametrize(
    "lines,expected",
    [
        (["a.jpg,猫", "missing.jpg,狗"], "labels.csv:2: image 'missing.jpg' not found"),
        (["a.jpg,猫", "a.jpg,   "], "labels.csv:2: no text for image 'a.jpg'"),
        (["a.jpg"], "labels.csv:1: no text"),
        (["a.jpg,猫", ",狗"], "labels.csv:2: empty image path"),
        (["../a.jpg,猫"], "labels.csv:1: image path '../a.jpg' must be relative"),
        ([b"a.jpg,\xe7\x8c", "a.jpg,x"], "labels.csv:1: invalid UTF-8"),
        (['a.jpg,"unclosed'], "labels.csv:1: malformed CSV"),
    ],
)
def test_bad_csv_labels(tmp_path, capsys, lines, expected):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(image_bytes())
    write_lines(tmp_path / "labels.csv", lines)
    assert_prepare_fails(tmp_path, capsys, expected, str(tmp_path / "images"), "--labels", str(tmp_path / "labels.csv"))


@pytest.mark.parametrize(
    "line,expected",
    [
        ('{"image": "a.jpg", "text": "猫"', "labels.jsonl:2: malformed JSON"),
        ('{"image": "a.jpg"}', "labels.jsonl:2: give exactly one of 'text'"),
        ('{"image": 3, "text": "猫"}', "labels.jsonl:2: field 'image' must be a non-empty string"),
        ('{"image": "a.jpg", "texts": "猫"}', "labels.jsonl:2: field 'texts' must be a non-empty list"),
        ('{"image": "a.jpg", "text": " "}', "labels.jsonl:2: empty or whitespace-only text"),
        ('{"image": "b.jpg", "text": "猫"}', "labels.jsonl:2: image 'b.jpg' not found"),
    ],
)
def test_bad_jsonl_labels(tmp_path, capsys, line, expected):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(image_bytes())
    write_lines(tmp_path / "labels.jsonl", ['{"image": "a.jpg", "text": "猫"}', line])
    assert_prepare_fails(tmp_path, capsys, expected, str(tmp_path / "images"), "--labels", str(tmp_path / "labels.jsonl"))


def test_bad_image_in_a_label_folder_writes_nothing(tmp_path, capsys):
    label_folders(tmp_path / "images")
    (tmp_path / "images" / "猫" / "9.jpg").write_bytes(image_bytes()[:200])
    (tmp_path / "out").mkdir()
    assert_prepare_fails(tmp_path, capsys, "猫/9.jpg: corrupt or truncated image", str(tmp_path / "images"))


def test_existing_outputs_are_refused_unless_overwrite(tmp_path, capsys):
    label_folders(tmp_path / "images")
    out = tmp_path / "out"
    assert prepare(str(tmp_path / "images"), "--out", str(out)) == 0
    before = (out / "train_imgs.tsv").read_bytes()
    assert prepare(str(tmp_path / "images"), "--out", str(out), "--seed", "4") == 2
    assert "train_imgs.tsv: already exists (pass --overwrite" in capsys.readouterr().err
    assert (out / "train_imgs.tsv").read_bytes() == before
    assert prepare(str(tmp_path / "images"), "--out", str(out), "--seed", "4", "--overwrite") == 0
    assert (out / "train_imgs.tsv").read_bytes() != before
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{s}{x}" for s in SPLITS for x in ("_imgs.tsv", "_texts.jsonl"))


def test_write_dataset_rejects_bad_records(tmp_path):
    with pytest.raises(ClipMatchError, match="a.jpg: duplicate image key"):
        write_dataset([("a.jpg", image_bytes(), ["x"]), ("a.jpg", image_bytes(), ["y"])], tmp_path)
    with pytest.raises(ClipMatchError, match="a.jpg: empty or non-string text"):
        write_dataset([("a.jpg", image_bytes(), ["x", "  "])], tmp_path)
    with pytest.raises(ClipMatchError, match="split must be three"):
        write_dataset([("a.jpg", image_bytes(), ["x"])], tmp_path, split=(0.5, 0.5, 0.5))
    assert list(tmp_path.iterdir()) == []
