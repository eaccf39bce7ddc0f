"""Every bad input: a clear one-line error naming file and line (or key), exit status 2,
and nothing under the final name. Also the inputs that must simply work (CRLF, BOM)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from clip_match.cli import main
from clip_match.data import LMDBReader
from clip_match.data.lmdb_build import REPORT_NAME
from test_data_helpers import bomb_png, image_bytes, tsv_line, write_lines

GOOD = image_bytes()
TEXT = {"text_id": 1, "text": "猫", "image_ids": [1, 2]}


def write_data(data_dir: Path, tsv: list[str | bytes] | None = None, jsonl: list[str | bytes] | None = None) -> None:
    """A two-image train split, with either file replaced by raw lines."""
    write_lines(data_dir / "train_imgs.tsv", tsv if tsv is not None else [tsv_line(1, GOOD), tsv_line(2, GOOD)])
    write_lines(data_dir / "train_texts.jsonl", jsonl if jsonl is not None else [json.dumps(TEXT, ensure_ascii=False)])


def build(data_dir: Path, *extra: str) -> int:
    return main(["build-lmdb", str(data_dir), "--splits", "train", "--workers", "1", *extra])


def assert_refused(data_dir: Path, capsys, expected: str, *extra: str) -> str:
    assert build(data_dir, *extra) == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("clip-match build-lmdb: error: ") and "\n" not in message
    assert expected in message, message
    assert not (data_dir / "lmdb").exists()
    assert not list(data_dir.glob(".lmdb.*")), "temporary build directory left behind"
    return message


TRUNCATED_JPEG = GOOD[: len(GOOD) // 2]
TRUNCATED_PNG = image_bytes("RGB", fmt="PNG")[:-30]

BAD_TSV = {
    "corrupt base64": ([tsv_line(1, GOOD), "2\t@@not*base64@@"], "train_imgs.tsv:2: corrupt base64"),
    "bad base64 padding": ([tsv_line(1, GOOD), "2\t" + tsv_line(2, GOOD).split("\t")[1][:-3]], "train_imgs.tsv:2: corrupt base64"),
    "not an image": ([tsv_line(1, GOOD), tsv_line(2, b"just some text, not an image")], "train_imgs.tsv:2: not an image"),
    "truncated jpeg": ([tsv_line(1, TRUNCATED_JPEG), tsv_line(2, GOOD)], "train_imgs.tsv:1: corrupt or truncated image"),
    "truncated png": ([tsv_line(1, GOOD), tsv_line(2, TRUNCATED_PNG)], "train_imgs.tsv:2: corrupt or truncated image"),
    "decompression bomb": ([tsv_line(1, GOOD), tsv_line(2, bomb_png())], "train_imgs.tsv:2: image too large"),
    "duplicate image id": ([tsv_line(1, GOOD), tsv_line(2, GOOD), tsv_line(1, GOOD)], "train_imgs.tsv:3: duplicate image_id 1"),
    "non-integer image id": ([tsv_line(1, GOOD), tsv_line("2a", GOOD)], "train_imgs.tsv:2: image_id must be an integer"),
    "5,000-digit image id": ([tsv_line(1, GOOD), tsv_line("1" * 5000, GOOD)],
                             "train_imgs.tsv:2: image_id must be an integer of at most 4000 digits"),
    "missing base64 field": ([tsv_line(1, GOOD), "2"], "train_imgs.tsv:2: expected 2 tab-separated fields"),
    "empty base64 field": ([tsv_line(1, GOOD), "2\t "], "train_imgs.tsv:2: empty base64"),
    "invalid utf-8 in tsv": ([tsv_line(1, GOOD), b"2\t\xff\xfe" + tsv_line(2, GOOD).split("\t")[1].encode()],
                             "train_imgs.tsv:2: base64 field holds non-ASCII bytes"),
}

BAD_JSONL = {
    "image id with no image": ['{"text_id": 2, "text": "猫", "image_ids": [1, 3]}', "train_texts.jsonl:1: image_id 3 has no"],
    "malformed json": ['{"text_id": 1, "text": "猫", "image_ids": [1, 2]', "train_texts.jsonl:1: malformed JSON"],
    "nested too deeply": ['{"text": ' + "[" * 100_000 + "]" * 100_000 + "}", "train_texts.jsonl:1: malformed JSON: nested too deeply"],
    "not an object": ["[1, 2]", "train_texts.jsonl:1: expected a JSON object"],
    "5,000-digit text id": ['{"text_id": ' + "9" * 5000 + ', "text": "猫", "image_ids": [1]}',
                            "train_texts.jsonl:1: malformed JSON: Exceeds the limit"],
    "missing field": ['{"text_id": 1, "image_ids": [1]}', "train_texts.jsonl:1: missing field 'text'"],
    "text id is a string": ['{"text_id": "1", "text": "猫", "image_ids": [1]}', "train_texts.jsonl:1: field 'text_id' must be an integer"],
    "text is a number": ['{"text_id": 1, "text": 5, "image_ids": [1]}', "train_texts.jsonl:1: field 'text' must be a string"],
    "image ids not a list": ['{"text_id": 1, "text": "猫", "image_ids": 1}', "train_texts.jsonl:1: field 'image_ids' must be a non-empty list"],
    "float image id": ['{"text_id": 1, "text": "猫", "image_ids": [1.5]}', "train_texts.jsonl:1: field 'image_ids' must hold integers"],
    "bool text id": ['{"text_id": true, "text": "猫", "image_ids": [1]}', "train_texts.jsonl:1: field 'text_id' must be an integer"],
    "empty text": ['{"text_id": 1, "text": "", "image_ids": [1]}', "train_texts.jsonl:1: field 'text' is empty"],
    "whitespace text": ['{"text_id": 1, "text": " \\t ", "image_ids": [1]}', "train_texts.jsonl:1: field 'text' is empty"],
    "invalid utf-8": [b'{"text_id": 1, "text": "\xff\xfe", "image_ids": [1]}', "train_texts.jsonl:1: invalid UTF-8"],
}


@pytest.mark.parametrize("case", sorted(BAD_TSV))
def test_bad_tsv_is_refused(tmp_path, capsys, case):
    lines, expected = BAD_TSV[case]
    write_data(tmp_path, tsv=lines)
    assert_refused(tmp_path, capsys, expected)


@pytest.mark.parametrize("case", sorted(BAD_JSONL))
def test_bad_jsonl_is_refused(tmp_path, capsys, case):
    line, expected = BAD_JSONL[case]
    write_data(tmp_path, jsonl=[json.dumps(TEXT), line])
    assert_refused(tmp_path, capsys, expected.replace(":1:", ":2:"))


def test_duplicate_text_id_is_refused(tmp_path, capsys):
    write_data(tmp_path, jsonl=[json.dumps(TEXT), json.dumps({**TEXT, "text": "狗"})])
    assert_refused(tmp_path, capsys, "train_texts.jsonl:2: duplicate text_id 1")


def test_bad_image_is_found_by_the_worker_pool_too(tmp_path, capsys):
    lines = [tsv_line(i, GOOD) for i in range(1, 700)] + [tsv_line(700, b"not an image")]
    write_data(tmp_path, tsv=lines)
    assert main(["build-lmdb", str(tmp_path), "--splits", "train", "--workers", "2"]) == 2
    assert "train_imgs.tsv:700: not an image" in capsys.readouterr().err
    assert not (tmp_path / "lmdb").exists()


def test_missing_split_file_is_named(tmp_path, capsys):
    write_data(tmp_path)
    assert main(["build-lmdb", str(tmp_path), "--splits", "train,valid"]) == 2
    assert "valid_imgs.tsv: not found" in capsys.readouterr().err


def test_lmdb_dir_holding_the_data_is_refused_even_with_overwrite(tmp_path, capsys):
    write_data(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert main(["build-lmdb", str(tmp_path), "--splits", "train", "--lmdb-dir", str(tmp_path), "--overwrite"]) == 2
    assert "holds the input" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == files


def test_existing_lmdb_is_refused_unless_overwrite(tmp_path, capsys):
    write_data(tmp_path)
    assert build(tmp_path) == 0
    before = (tmp_path / "lmdb/train/imgs/data.mdb").read_bytes()
    assert build(tmp_path) == 2
    assert "lmdb: already exists (pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "lmdb/train/imgs/data.mdb").read_bytes() == before
    write_data(tmp_path, tsv=[tsv_line(1, GOOD), tsv_line(2, b"broken")])
    assert build(tmp_path, "--overwrite") == 2  # a failed rebuild keeps the old database
    assert (tmp_path / "lmdb/train/imgs/data.mdb").read_bytes() == before
    write_data(tmp_path, tsv=[tsv_line(1, GOOD), tsv_line(2, image_bytes(seed=5))])
    assert build(tmp_path, "--overwrite") == 0
    with LMDBReader(tmp_path / "lmdb" / "train") as reader:
        assert reader.image_bytes(2) == image_bytes(seed=5)


def test_crlf_and_bom_are_accepted(tmp_path):
    write_lines(tmp_path / "train_imgs.tsv", [b"\xef\xbb\xbf" + tsv_line(1, GOOD).encode(), tsv_line(2, GOOD)], ending=b"\r\n")
    write_lines(tmp_path / "train_texts.jsonl", [b"\xef\xbb\xbf" + json.dumps(TEXT).encode(), b"", b"  "], ending=b"\r\n")
    assert build(tmp_path) == 0
    with LMDBReader(tmp_path / "lmdb" / "train") as reader:
        assert [tuple(p) for p in reader] == [(1, 1, "猫"), (2, 1, "猫")]
        assert reader.image_bytes(1) == GOOD


def test_no_verify_skips_decoding_but_not_structure(tmp_path, capsys):
    write_data(tmp_path, tsv=[tsv_line(1, GOOD), tsv_line(2, b"not an image")])
    assert build(tmp_path, "--no-verify") == 0
    shutil.rmtree(tmp_path / "lmdb")
    write_data(tmp_path, tsv=[tsv_line(1, GOOD)])
    assert_refused(tmp_path, capsys, "train_texts.jsonl:1: image_id 2 has no", "--no-verify")


def test_skip_bad_keeps_the_good_records_and_reports_the_rest(tmp_path, capsys):
    tsv = [tsv_line(1, GOOD), tsv_line(2, b"not an image"), "3\t!!!", tsv_line(4, GOOD), tsv_line(1, GOOD), "x\ty"]
    jsonl = [
        '{"text_id": 1, "text": "猫", "image_ids": [1, 2, 4]}',
        '{"text_id": 2, "text": "", "image_ids": [4]}',
        "{broken",
        '{"text_id": 3, "text": "狗", "image_ids": [4, 9]}',
        '{"text_id": 4, "text": "鸟", "image_ids": [2]}',  # its only image is bad: no pair, not counted
    ]
    write_data(tmp_path, tsv=tsv, jsonl=jsonl)
    assert build(tmp_path, "--skip-bad", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads((tmp_path / "lmdb" / REPORT_NAME).read_text("utf-8"))
    where = [(s["file"], s["line"]) for s in report["skipped"]]
    assert where == [("train_imgs.tsv", 2), ("train_imgs.tsv", 3), ("train_imgs.tsv", 5), ("train_imgs.tsv", 6),
                     ("train_texts.jsonl", 1), ("train_texts.jsonl", 2), ("train_texts.jsonl", 3), ("train_texts.jsonl", 4),
                     ("train_texts.jsonl", 5)]
    assert "not an image" in report["skipped"][0]["reason"] and "image_id 2 has no" in report["skipped"][4]["reason"]
    assert report["splits"]["train"] == {"images": 2, "pairs": 3, "texts": 2, "skipped_images": 4, "skipped_pair_lines": 5}
    with LMDBReader(tmp_path / "lmdb" / "train") as reader:
        assert [tuple(p) for p in reader] == [(1, 1, "猫"), (4, 1, "猫"), (4, 3, "狗")]
        assert sorted(reader.image_ids()) == [1, 4]


def test_skip_bad_with_only_text_problems_keeps_every_pair_of_the_good_lines(tmp_path, capsys):
    jsonl = ['{"text_id": 1, "text": "猫", "image_ids": [1]}', "{broken", '{"text_id": 1, "text": "dup", "image_ids": [2]}',
             '{"text_id": 3, "text": "狗", "image_ids": [2, 1]}']
    write_data(tmp_path, jsonl=jsonl)
    assert build(tmp_path, "--skip-bad", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert [(s["file"], s["line"]) for s in report["skipped"]] == [("train_texts.jsonl", 2), ("train_texts.jsonl", 3)]
    assert report["splits"]["train"] == {"images": 2, "pairs": 3, "texts": 2, "skipped_images": 0, "skipped_pair_lines": 2}
    with LMDBReader(tmp_path / "lmdb" / "train") as reader:
        assert [tuple(p) for p in reader] == [(1, 1, "猫"), (2, 3, "狗"), (1, 3, "狗")]


def test_an_image_problem_is_reported_before_a_text_problem(tmp_path, capsys):
    write_data(tmp_path, tsv=[tsv_line(1, GOOD), tsv_line(2, b"not an image")], jsonl=["{broken"])
    assert_refused(tmp_path, capsys, "train_imgs.tsv:2: not an image")
