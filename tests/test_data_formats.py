"""Chinese-CLIP TSV/JSONL: round trips, line numbering, base64 flavours, split names."""
from __future__ import annotations

import base64
import json

import pytest

from clip_match.data.formats import decode_b64, iter_lines, read_jsonl, read_tsv, texts_path, write_split
from clip_match.errors import ClipMatchError
from test_data_helpers import image_bytes, write_lines


def test_write_split_round_trips_in_chinese_clip_format(tmp_path):
    images = {3: image_bytes(seed=1), 10: image_bytes("RGBA", fmt="PNG")}
    write_split(tmp_path, "valid", images.items(), [(5, "“引号” text", [10, 3])])
    first = (tmp_path / "valid_imgs.tsv").read_text("ascii").splitlines()[0]
    assert first == f"3\t{base64.b64encode(images[3]).decode()}"  # standard base64, as in Chinese-CLIP's README
    assert json.loads((tmp_path / "valid_texts.jsonl").read_text("utf-8")) == {
        "text_id": 5, "text": "“引号” text", "image_ids": [10, 3]}
    assert {r.image_id: decode_b64(r.b64, "x") for r in read_tsv(tmp_path / "valid_imgs.tsv")} == images
    assert [tuple(t) for t in read_jsonl(texts_path(tmp_path, "valid"))] == [(5, "“引号” text", (10, 3), 1)]


def test_line_numbers_count_blank_lines_and_offsets_point_at_content(tmp_path):
    path = tmp_path / "x.tsv"
    write_lines(path, [b"\xef\xbb\xbfa", b"", b"  ", b"bb", b"c"], ending=b"\r\n")
    lines = list(iter_lines(path))
    assert [(n, c) for n, c, _ in lines] == [(1, b"a"), (4, b"bb"), (5, b"c")]
    data = path.read_bytes()
    assert all(data[offset:offset + len(content)] == content for _, content, offset in lines)
    start = lines[1][2]  # a range starting at line 4 numbers from there
    assert [(n, c) for n, c, _ in iter_lines(path, start, None, 4)] == [(4, b"bb"), (5, b"c")]


def test_urlsafe_and_standard_base64_are_both_accepted():
    data = bytes(range(256))
    assert decode_b64(base64.b64encode(data), "x") == decode_b64(base64.urlsafe_b64encode(data), "x") == data
    with pytest.raises(ClipMatchError, match="src: corrupt base64"):
        decode_b64(b"abc$", "src")


def test_readers_name_duplicates_and_bad_split_names(tmp_path):
    write_lines(tmp_path / "a_imgs.tsv", ["1\tAAAA", "1\tAAAA"])
    with pytest.raises(ClipMatchError, match=r"a_imgs.tsv:2: duplicate image_id 1"):
        list(read_tsv(tmp_path / "a_imgs.tsv"))
    assert len(list(read_tsv(tmp_path / "a_imgs.tsv", unique=False))) == 2
    write_lines(tmp_path / "a_texts.jsonl", ['{"text_id": 1, "text": "x", "image_ids": [1]}'] * 2)
    with pytest.raises(ClipMatchError, match=r"a_texts.jsonl:2: duplicate text_id 1"):
        list(read_jsonl(tmp_path / "a_texts.jsonl"))
    with pytest.raises(ClipMatchError, match="invalid split name"):
        texts_path(tmp_path, "../train")
