"""Chinese-CLIP TSV/JSONL: round trips, line numbering, base64 flavours, split names."""
from __future__ import annotations

import base64
import json

import pytest

from clip_match.data import formats
from clip_match.data.formats import (decode_b64, iter_lines, line_spans, map_file, parse_image_line, parse_text_line,
                                     read_jsonl, read_tsv, scan_file, scan_jsonl, scan_tsv, texts_path, write_split)
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


def _per_line(path, parse):
    """Reference: every non-blank line through the per-line parser (result or error message)."""
    results = []
    for number, content, offset in iter_lines(path):
        try:
            results.append((number, parse(content, path, number), offset))
        except ClipMatchError as error:
            results.append((number, str(error), None))
    return results


ODD_TSV = [
    b"\xef\xbb\xbf7\tQUFBQQ==", b"8\tQUFBQQ==\r", b"", b"  ", b" 9 \t QUFBQQ== ", b"-3\tQUFBQQ==", b"010\tQUFB-_==",
    b"x\tQUFB", b"4", b"5\tQU\tFB", b"6\t", b"11\t\xff\xfe", b"12\tQUFB\x01", b"\t", b"13\tQUFBQQ==\r\r",
    b"15\t QUFBQQ==", b"16\tQUFBQQ== ",
]


@pytest.mark.parametrize("chunk_bytes", [1 << 20, 16, 1])
def test_scan_tsv_agrees_with_the_per_line_parser(tmp_path, monkeypatch, chunk_bytes):
    monkeypatch.setattr(formats, "CHUNK_BYTES", chunk_bytes)  # 1 byte: every line its own chunk
    path = tmp_path / "odd_imgs.tsv"
    write_lines(path, ODD_TSV * 2 + [b"14\tQUFBQQ=="], ending=b"\n")
    path.write_bytes(path.read_bytes()[:-1])  # no newline at the end
    data = path.read_bytes()
    scanned = []
    for chunk, entries in scan_file(path, scan_tsv):
        for number, image_id, start, stop, problem in entries:
            b64 = chunk.data[start:stop]
            assert data[chunk.start + start:chunk.start + stop] == b64
            scanned.append((number, problem) if problem else (number, image_id, b64))
    expected = [(n, r) if isinstance(r, str) else (n, r[0], c[r[1]:r[2]])
                for n, r, c in ((n, r, _content_at(data, o)) for n, r, o in _per_line(path, parse_image_line))]
    assert scanned == expected
    accepted = [n for n, *rest in scanned if len(rest) == 2]
    assert accepted == [1, 2, 5, 6, 7, 13, 15, 16, 17, 19, 22, 23, 24, 30, 32, 33, 34, 35]  # a BOM counts on line 1 only


def _content_at(data: bytes, offset: int | None) -> bytes:
    """The line content starting at ``offset`` (as iter_lines gives it)."""
    if offset is None:
        return b""
    end = data.find(b"\n", offset)
    return data[offset:end if end >= 0 else len(data)].rstrip(b"\r\n")


ODD_JSONL = [
    '\ufeff{"text_id": 1, "text": "a", "image_ids": [1]}', '{"text_id": 2, "text": "b", "image_ids": [2]}\r', "",
    ' {"text_id": 3, "text": "c", "image_ids": [3]} ', '{"text_id": 4, "text": "d\\u2028\u2028", "image_ids": [4]}',
    '{"text_id": 5, "text": "e", "image_ids": [5]} {"x": 1}', '{"text_id": 6, "text": "f", "image_ids": [6]',
    "[1]", '{"text_id": 7, "text": "", "image_ids": [7]}', b'{"text_id": 8, "text": "\xff", "image_ids": [8]}',
    '{"text_id": 9, "text": "g", "image_ids": [9], "more": {"k": [1, 2]}}', "\x0b", "null",
]


@pytest.mark.parametrize("chunk_bytes", [1 << 20, 40, 1])
def test_scan_jsonl_agrees_with_the_per_line_parser(tmp_path, monkeypatch, chunk_bytes):
    monkeypatch.setattr(formats, "CHUNK_BYTES", chunk_bytes)
    path = tmp_path / "odd_texts.jsonl"
    write_lines(path, ODD_JSONL + ODD_JSONL[1:])
    scanned = [(n, problem) if problem else (n, (text_id, text, image_ids))
               for _, entries in scan_file(path, scan_jsonl) for n, text_id, text, image_ids, problem in entries]
    assert scanned == [(n, r) for n, r, _ in _per_line(path, parse_text_line)]
    assert [n for n, r in scanned if not isinstance(r, str)] == [1, 2, 4, 5, 11, 14, 16, 17, 23]


@pytest.mark.parametrize("size,share", [(1, 1), (40, 1), (1 << 20, 1), (400, 1), (400, 4)])
def test_line_spans_cut_whole_lines_as_scan_file_cuts_chunks(tmp_path, monkeypatch, size, share):
    path = tmp_path / "lines.tsv"
    path.write_bytes(b"".join(b"x" * (i % 37) + b"\r\n" * (i % 5 == 0) + b"\n" * (i % 3 > 0) for i in range(400)))
    data = path.read_bytes()
    spans = list(line_spans(map_file(path), size, share))
    assert spans[0].start == 0 and spans[-1].stop == len(data)
    assert all(a.stop == b.start and data[a.stop - 1:a.stop] == b"\n" for a, b in zip(spans, spans[1:]))
    assert [span.first_line for span in spans] == [data[:span.start].count(b"\n") + 1 for span in spans]
    monkeypatch.setattr(formats, "CHUNK_BYTES", size)
    chunks = [(chunk.start, chunk.first_line) for chunk, _ in scan_file(path, scan_tsv)]
    if share == 1:
        assert [(span.start, span.first_line) for span in spans] == chunks
    else:  # the last spans shrink, down to size // 32
        sizes = [span.stop - span.start for span in spans]
        assert len(spans) > len(chunks) and max(sizes[-3:]) < size // 4 and min(sizes[:-1]) >= size // 32


def test_an_empty_file_maps_to_no_spans(tmp_path):
    (tmp_path / "empty.tsv").write_bytes(b"")
    assert list(line_spans(map_file(tmp_path / "empty.tsv"), 1 << 20)) == []
