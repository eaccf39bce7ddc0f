"""`clip-match eval-retrieval`: the formula protocols' numbers through the main dispatcher."""
from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from clip_match import cli
from clip_match.data.formats import write_split


@pytest.fixture()
def query_dir(tmp_path):
    def png(shade: int) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (120, 30 + shade // 10), (shade, shade, shade)).save(buffer, "PNG")
        return buffer.getvalue()

    images = [(i, png(50 * i)) for i in range(4)]
    texts = [(7, "x ^ { 2 }", [0, 3]), (8, "\\frac { a } { b }", [1]), (9, "\\sqrt { y }", [2])]
    write_split(tmp_path, "test", images, texts)
    return tmp_path


def test_eval_retrieval_is_a_clip_match_command(tiny_bundle, query_dir, capsys):
    assert cli.main(["eval-retrieval", str(tiny_bundle), str(query_dir), "--json", "--precision", "fp32"]) == 0
    metrics = json.loads(capsys.readouterr().out)  # --json: stdout holds exactly one JSON object
    assert (metrics["queries"], metrics["candidates"], metrics["precision"]) == (4, 3, "fp32")
    assert 0 <= metrics["i2t_r1"] <= metrics["i2t_r5"] == 100.0  # 3 candidates: always in the top 5

    assert cli.main(["eval-retrieval", str(tiny_bundle), str(query_dir)]) == 0
    out = capsys.readouterr().out
    assert "4 query images, 3 candidate formulas" in out and "image->formula: R@1" in out


def test_eval_retrieval_bad_input_is_one_line_and_exit_2(tiny_bundle, query_dir, capsys):
    assert cli.main(["eval-retrieval", str(tiny_bundle), str(query_dir), "--split", "valid"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("clip-match eval-retrieval: error: ") and "valid_imgs.tsv: no such file" in err
    assert "\n" not in err

    assert cli.main(["eval-retrieval", str(query_dir), str(query_dir)]) == 2  # not a bundle
    assert capsys.readouterr().err.startswith("clip-match eval-retrieval: error: ")

    write_split(query_dir, "empty", [], [])
    assert cli.main(["eval-retrieval", str(tiny_bundle), str(query_dir), "--split", "empty"]) == 2
    assert "split 'empty' has no image-text pairs" in capsys.readouterr().err
    write_split(query_dir, "orphan", [(0, b"x"), (1, b"y")], [(7, "x", [0])])
    assert cli.main(["eval-retrieval", str(tiny_bundle), str(query_dir), "--split", "orphan"]) == 2
    assert "orphan_imgs.tsv:2: image 1 has no text" in capsys.readouterr().err


def test_eval_retrieval_is_listed_in_help(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "eval-retrieval" in capsys.readouterr().out
