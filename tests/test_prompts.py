"""Prompts that carry nothing are refused, emoji are read as their names, and errors name their input."""
from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from clip_match import Encoder, cli
from clip_match.errors import ClipMatchError
from clip_match.runtime.emoji import spell_out_emoji
from clip_match.runtime.tokenizer import normalize_text

PUZZLE = "datasets/emoji/example/0001.png"


@pytest.fixture(scope="module")
def demo() -> Encoder:
    return Encoder.load(device="cpu", threads=1)


@pytest.mark.parametrize("text, spelled", [
    ("🌂", "收起的伞"),
    ("☂️", "伞"),                                  # the variation selector does not matter
    ("请点击所有的 🐱", "请点击所有的 猫脸"),
    ("select all 🌂 images", "select all closed umbrella images"),
    ("👋🏽", "挥手"),                               # skin tones share the base emoji's name
    ("😀🐱", "嘿嘿猫脸"),
    ("no emoji here", "no emoji here"),
])
def test_emoji_are_spelled_out_in_the_texts_language(text, spelled):
    assert spell_out_emoji(text) == spelled
    assert normalize_text(text) == spelled.lower()


def test_emoji_only_prompts_differ_and_read_as_their_names(demo):
    umbrella, cat, party = (demo.encode_texts([text])[0] for text in ("🌂", "🐱", "😀🐱🌂🎉"))
    assert not np.allclose(umbrella, cat) and not np.allclose(cat, party)
    assert np.array_equal(umbrella, demo.encode_texts(["收起的伞"])[0])  # one text per call: int8 ranges per batch


@pytest.mark.parametrize("text, reason", [
    ("", "nothing is left"),
    ("\u200b\ufeff", "nothing is left"),
    ("𠀀𠀁", r"every token is unknown to the model's vocabulary \(\[UNK\]\)"),
])
def test_texts_the_model_cannot_read_are_refused_by_name(demo, text, reason):
    with pytest.raises(ClipMatchError, match=re.escape(f"text {text!r}: ") + reason):
        demo.encode_texts(["猫", text])


@pytest.mark.parametrize("argv", [
    ["grid", PUZZLE, "--text", "𠀀"],
    ["query", "--text", "", "--images", "datasets/emoji/example"],
    ["query", "--text", "\u200b", "--images", "datasets/emoji/example"],
])
def test_unreadable_prompts_exit_2(argv, capsys):
    assert cli.main(argv) == 2
    assert "error: " in capsys.readouterr().err


def test_an_unreadable_candidate_stops_the_index_build(tmp_path, capsys):
    candidates = tmp_path / "labels.txt"
    candidates.write_text("猫\n𠀀𠀁\n", encoding="utf-8")
    assert cli.main(["index", "build", "--candidates", str(candidates), "--out", str(tmp_path / "i")]) == 2
    assert "text '𠀀𠀁': every token is unknown" in capsys.readouterr().err
    assert not (tmp_path / "i").exists()


def test_a_truncated_grid_prompt_warns():
    with pytest.warns(UserWarning, match="the prompt exceeds the context length of 16 tokens and was truncated"):
        assert cli.main(["grid", PUZZLE, "--text", "伞" * 200, "--k", "2"]) == 0


def test_errors_name_their_input(tmp_path, capsys):
    Image.new("RGB", (1, 1)).save(tmp_path / "one_px.png")
    assert cli.main(["grid", str(tmp_path / "one_px.png"), "--text", "猫"]) == 2
    assert f"error: {tmp_path / 'one_px.png'}: image (1x1)" in capsys.readouterr().err
    candidates = tmp_path / "labels.txt"
    candidates.write_bytes(b"ok\nfine\nbad \xff here\n")
    assert cli.main(["index", "build", "--candidates", str(candidates), "--out", str(tmp_path / "i")]) == 2
    assert f"{candidates}:3: not UTF-8 text" in capsys.readouterr().err
