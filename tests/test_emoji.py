"""The emoji tile dataset and its seeded generators (training pairs, puzzles)."""
from __future__ import annotations

import io
import json
from functools import partial

import numpy as np
import pytest
from PIL import Image

from clip_match.data.formats import decode_b64, read_jsonl, read_tsv
from clip_match.errors import ClipMatchError
from datasets.emoji.glyphs import EmojiSet
from clip_match.grid.tiles import cut_tiles, find_grid
from datasets.emoji.puzzles import (EN_TEMPLATES, ZH_TEMPLATES, all_captions, make_puzzle, write_pairs, write_puzzles,
                                  write_tiles)


@pytest.fixture(scope="module")
def emoji():
    return EmojiSet()


def test_dataset_has_both_original_styles_and_both_languages(emoji):
    assert 800 <= len(emoji) <= 900
    for e in emoji.emoji:
        assert e.zh and e.en and e.char
    for index in (0, len(emoji) // 2, len(emoji) - 1):
        sprites = [np.asarray(emoji.sprite(index, style)) for style in ("noto", "fluent")]
        for sprite in sprites:
            assert sprite.shape == (emoji.tile_size, emoji.tile_size, 4)
            assert (sprite[..., 3] > 0).mean() > 0.1  # something is drawn
        assert np.abs(sprites[0].astype(int) - sprites[1].astype(int)).mean() > 5  # two different artworks


def test_answers_and_distractors(emoji):
    umbrellas = {emoji.emoji[i].zh for i in emoji.answers("伞")}
    assert {"雨伞", "伞", "收起的伞"} <= umbrellas
    assert "伞" in emoji.prompts("zh") and "雨伞" in emoji.prompts("zh")
    answers = emoji.answers("伞")
    distractors = {emoji.emoji[i].zh for i in emoji.distractors("伞", answers)}
    assert "降落伞" not in distractors          # contains the prompt: it might answer it
    assert not distractors & umbrellas


def test_puzzles_are_seeded_and_distractors_never_answer(emoji):
    for i in range(30):
        layout = ("2x3", "3x3")[i % 2]
        one = make_puzzle(emoji, np.random.default_rng([7, i]), layout, "noto")
        two = make_puzzle(emoji, np.random.default_rng([7, i]), layout, "noto")
        assert one.record("x.png") == two.record("x.png") and one.tiles == two.tiles
        assert np.array_equal(np.asarray(one.image), np.asarray(two.image))
        rows, cols = (2, 3) if layout == "2x3" else (3, 3)
        assert len(one.tiles) == rows * cols and len(one.answer) == one.k >= 1
        answer_slots = {(r - 1) * cols + (c - 1) for r, c in one.answer}
        assert one.answer == sorted(one.answer) and all(1 <= r <= rows and 1 <= c <= cols for r, c in one.answer)
        for slot, index in enumerate(one.tiles):
            terms = emoji.emoji[index].terms("zh")
            if slot in answer_slots:
                assert one.prompt in terms
            else:
                assert not any(one.prompt in t or t in one.prompt for t in terms)


def test_write_puzzles_format(tmp_path, emoji):
    out = write_puzzles(tmp_path / "p", 4, seed=3, style="fluent", emoji=emoji)
    lines = [json.loads(line) for line in (out / "puzzles.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [line["image"] for line in lines] == ["0001.png", "0002.png", "0003.png", "0004.png"]
    assert [line["layout"] for line in lines] == ["2x3", "3x3", "2x3", "3x3"]
    assert all(list(line) == ["image", "prompt", "layout", "k", "answer", "style"] for line in lines)
    assert {line["style"] for line in lines} == {"fluent"}
    with Image.open(out / "0002.png") as image:
        assert image.mode == "RGB"
    with pytest.raises(ClipMatchError, match="already exists"):
        write_puzzles(tmp_path / "p", 1, seed=3, emoji=emoji)
    with pytest.raises(ClipMatchError, match="unknown emoji style"):
        write_puzzles(tmp_path / "q", 1, seed=3, style="apple", emoji=emoji)
    assert not (tmp_path / "q").exists()



def test_write_tiles_are_the_puzzles_tiles(tmp_path, emoji):
    out = write_tiles(tmp_path / "t", 2, seed=5, style="fluent", emoji=emoji)
    assert sorted(p.name for p in out.iterdir()) == [f"{i:04d}_{j}.png" for i in (1, 2) for j in range(1, 10)]
    puzzle = make_puzzle(emoji, np.random.default_rng([5, 1]), "3x3", "fluent")
    for index, tile in enumerate(cut_tiles(puzzle.image, find_grid(puzzle.image, "3x3"))):
        with Image.open(out / f"0002_{index + 1}.png") as written:
            assert np.array_equal(np.asarray(written), np.asarray(tile))
    with pytest.raises(ClipMatchError, match="already exists"):
        write_tiles(tmp_path / "t", 1, seed=5, emoji=emoji)

def test_write_pairs(tmp_path):
    small = EmojiSet()
    small.emoji = small.emoji[:12]
    counts = write_pairs(tmp_path / "pairs", per_emoji=2, valid_per_emoji=1, seed=0, size=64, emoji=small,
                         styles=("noto", "fluent"))
    assert counts["train_images"] == 12 * 2 * 2 and counts["valid_images"] == 12 * 2
    images = list(read_tsv(tmp_path / "pairs" / "train_imgs.tsv"))
    texts = list(read_jsonl(tmp_path / "pairs" / "train_texts.jsonl"))
    assert len(images) == 48
    with Image.open(io.BytesIO(decode_b64(images[0].b64, "first image"))) as first:
        assert first.size == (64, 64)
    linked = sorted(i for t in texts for i in t.image_ids)
    assert linked == list(range(48))  # each rendering has exactly one caption
    allowed = set()
    for e in small.emoji:
        allowed |= {e.zh, e.en, *e.tags_zh, *(t.format(e.zh) for t in ZH_TEMPLATES), *(t.format(e.en) for t in EN_TEMPLATES)}
    assert {t.text for t in texts} <= allowed
    again = write_pairs(tmp_path / "again", per_emoji=2, valid_per_emoji=1, seed=0, size=64, emoji=small,
                        styles=("noto", "fluent"))
    assert again == counts
    assert (tmp_path / "again" / "train_imgs.tsv").read_bytes() == (tmp_path / "pairs" / "train_imgs.tsv").read_bytes()


def test_line_art_draws_a_colour_emoji_as_a_one_colour_glyph(emoji):
    """Outline or silhouette, black on transparent inside the sprite's own shape, like the monochrome styles."""
    from datasets.emoji.render import RenderConfig, line_art, render_tile

    sprite = emoji.sprite(0, "noto")
    inside = np.asarray(sprite.getchannel("A")) > 127
    kinds = set()
    for seed in range(6):
        glyph = np.asarray(line_art(sprite, np.random.default_rng(seed)))
        ink = glyph[..., 3] > 0
        assert 0.02 * inside.sum() < ink.sum() < inside.sum() and not (ink & ~inside).any()
        assert (glyph[ink][:, :3] == 0).all()
        kinds.add(ink.tobytes())
    assert len(kinds) == 2  # the outline and the silhouette
    # off by default, and then it draws nothing from the generator: existing seeds render as before
    plain, off = (render_tile(sprite, np.random.default_rng(1), config) for config in (RenderConfig(),
                                                                                       RenderConfig(line_art=0.0)))
    assert plain.tobytes() == off.tobytes()
    drawn = np.asarray(render_tile(sprite, np.random.default_rng(1), RenderConfig(line_art=1.0, blur=0, noise=0)))
    assert len(np.unique(drawn.reshape(-1, 3), axis=0)) < len(np.unique(np.asarray(plain).reshape(-1, 3), axis=0))


def test_write_pairs_all_captions_links_every_true_caption(tmp_path):
    small = EmojiSet()
    small.emoji = small.emoji[:12]
    counts = write_pairs(tmp_path / "pairs", per_emoji=2, valid_per_emoji=1, seed=0, size=64, emoji=small,
                         styles=("noto", "fluent"), captions="all")
    texts = {t.text: set(t.image_ids) for t in read_jsonl(tmp_path / "pairs" / "train_texts.jsonl")}
    expected: dict[str, set[int]] = {}
    for image_id in range(48):  # order: style, emoji, rendering
        for text in all_captions(small, image_id // 2 % 12):
            expected.setdefault(text, set()).add(image_id)
    assert texts == expected
    assert counts["train_pairs"] == sum(map(len, expected.values())) > 48
    e = small.emoji[0]
    assert all_captions(small, 0)[:2] == [e.zh, e.en]
    full = EmojiSet()
    assert all(len(set(c)) == len(c) for c in map(partial(all_captions, full), range(len(full))))  # no caption twice
    with pytest.raises(ClipMatchError, match="captions must be one of"):
        write_pairs(tmp_path / "bad", per_emoji=1, emoji=small, captions="some")
    assert not (tmp_path / "bad").exists()


def test_generate_script(tmp_path, capsys):
    from datasets.emoji import generate

    assert generate.main(["puzzles", str(tmp_path / "p"), "--count", "2", "--style", "fluent", "--seed", "4"]) == 0
    assert json.loads(capsys.readouterr().out) == {"out": str(tmp_path / "p"), "puzzles": 2, "style": "fluent", "seed": 4}
    assert len((tmp_path / "p" / "puzzles.jsonl").read_text(encoding="utf-8").splitlines()) == 2
    assert generate.main(["puzzles", str(tmp_path / "p"), "--count", "2"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert generate.main(["tiles", str(tmp_path / "t"), "--count", "1", "--seed", "4"]) == 0
    assert json.loads(capsys.readouterr().out) == {"out": str(tmp_path / "t"), "tiles": 9, "style": "noto", "seed": 4}
    assert len(list((tmp_path / "t").glob("*.png"))) == 9
    for bad in (["puzzles", str(tmp_path / "q"), "--count", "-3"], ["pairs", str(tmp_path / "q"), "--size", "4"]):
        with pytest.raises(SystemExit) as exit_:
            generate.main(bad)
        assert exit_.value.code == 2 and "must be at least" in capsys.readouterr().err
    for flag, value, message in (("--line-art", "1.5", "must be from 0 to 1"), ("--restyle", "-0.1", "must be from 0 to 1"),
                                 ("--line-art", "half", "expected a number from 0 to 1")):
        with pytest.raises(SystemExit) as exit_:
            generate.main(["pairs", str(tmp_path / "q"), flag, value])
        assert exit_.value.code == 2 and f"{flag}: {message}" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


def test_puzzle_for_a_given_prompt(emoji):
    puzzle = make_puzzle(emoji, np.random.default_rng(0), "3x3", "noto", prompt="伞")
    cols = 3
    assert puzzle.prompt == "伞"
    assert all(puzzle.tiles[(r - 1) * cols + c - 1] in emoji.answers("伞") for r, c in puzzle.answer)
    with pytest.raises(ClipMatchError, match="no emoji answers the prompt '不存在'"):
        make_puzzle(emoji, np.random.default_rng(0), "3x3", "noto", prompt="不存在")
