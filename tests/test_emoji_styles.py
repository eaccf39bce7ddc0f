"""The emoji art styles: committed sheets and labels, coverage in generated data, build.py's errors."""
from __future__ import annotations

import json
import shlex
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from clip_match.data.formats import read_jsonl
from clip_match.errors import ClipMatchError
from datasets.emoji import build
from datasets.emoji.glyphs import DEFAULT_ROOT, EmojiSet
from datasets.emoji.puzzles import all_captions, make_puzzle, renderings, write_pairs
from datasets.emoji.render import MIN_INK_CONTRAST, background, ink, luma
from datasets.emoji.styles import STYLE_SOURCES, STYLES

KNOWN = {"🐶": "dog face", "🐕": "dog", "🐱": "cat face", "☂️": "umbrella", "🌂": "closed umbrella", "🍎": "red apple",
         "🚗": "automobile"}
FXEMOJI_ICONS = {"🐶": "dog", "🐕": "dogside", "🐱": "cat", "🌂": "umbrella", "🍎": "redapple", "🚗": "automobile"}


@pytest.fixture(scope="module")
def emoji():
    return EmojiSet()


@pytest.fixture(scope="module")
def labels():
    return json.loads((DEFAULT_ROOT / "labels.json").read_text(encoding="utf-8"))


def index_of(emoji: EmojiSet, char: str) -> int:
    """The index of ``char`` (emojibase writes some with a variation selector, 🐕️)."""
    return next(e.index for e in emoji.emoji if e.char.replace("\ufe0f", "") == char.replace("\ufe0f", ""))


def test_the_dataset_holds_every_style_of_the_central_list(emoji):
    assert list(emoji.styles) == list(STYLES)
    for name, style in emoji.styles.items():
        source = STYLE_SOURCES[name]
        assert (style.sheet, style.source, style.licence, style.monochrome) == (
            f"{name}.webp", source.describe(), source.licence, source.monochrome)
    assert len(emoji.covers("noto")) == len(emoji.covers("fluent")) == len(emoji)  # the selection: both draw it
    assert len(emoji.covers("streamline-emojis")) < len(emoji)


@pytest.mark.parametrize("style", STYLES)
def test_every_tile_of_a_sheet_is_a_drawing(emoji, style):
    """Tile j shows covers[j]; no covered emoji has a blank tile, and nothing follows the last one."""
    covers, size, columns = emoji.style(style).covers, emoji.tile_size, emoji.columns
    with Image.open(DEFAULT_ROOT / emoji.style(style).sheet) as sheet:
        alpha = np.asarray(sheet.getchannel("A"))
    rows = -(-len(covers) // columns)
    assert alpha.shape == (rows * size, columns * size)
    visible = (alpha.reshape(rows, size, columns, size) > 8).mean(axis=(1, 3)).reshape(-1)
    assert visible[:len(covers)].min() > 0.02 and not visible[len(covers):].any()


@pytest.mark.parametrize("style", STYLES)
def test_known_emoji_are_drawn_and_labelled(emoji, labels, style):
    entry, drawn, chroma = labels["styles"][style], 0, []
    for char, name in KNOWN.items():
        index = index_of(emoji, char)
        assert emoji.emoji[index].en == name
        if index not in emoji.covers(style):
            with pytest.raises(ClipMatchError, match=f"is not drawn in style '{style}'"):
                emoji.sprite(index, style)
            continue
        drawn += 1
        sprite = np.asarray(emoji.sprite(index, style)).astype(int)
        assert sprite.shape == (80, 80, 4) and (sprite[..., 3] > 8).mean() > 0.1
        ink_pixels = sprite[..., :3][sprite[..., 3] > 200]
        chroma.append((ink_pixels.max(axis=1) - ink_pixels.min(axis=1)).mean())
        if emoji.style(style).monochrome:
            assert ink_pixels.max() < 60  # black on transparent: inked when drawn
        else:
            assert ink_pixels.max() > 150
        if "icons" in entry:  # the SVG set's own icon for it: the label and the art agree
            icon = entry["icons"][entry["covers"].index(index)]
            assert icon == (FXEMOJI_ICONS[char] if style == "fxemoji" else name.replace(" ", "-"))
    assert drawn >= 5
    assert (max(chroma) > 40) != emoji.style(style).monochrome  # colour styles are in colour


def test_two_emoji_in_one_style_are_different_drawings(emoji):
    for style in STYLES:
        dog, cat = (np.asarray(emoji.sprite(index_of(emoji, c), style)).astype(int) for c in ("🐶", "🐱"))
        assert np.abs(dog - cat).mean() > 5


def test_original_styles_keep_their_seeded_puzzles(emoji):
    """More styles changed nothing for noto and fluent: seeds give the puzzles they gave before."""
    noto = make_puzzle(emoji, np.random.default_rng([7, 0]), "3x3", "noto")
    assert (noto.prompt, noto.k, noto.answer, noto.tiles) == (
        "飞镖", 3, [[2, 1], [2, 2], [3, 3]], [654, 241, 704, 787, 787, 190, 46, 254, 787])
    fluent = make_puzzle(emoji, np.random.default_rng([7, 1]), "2x3", "fluent")
    assert (fluent.prompt, fluent.k, fluent.answer, fluent.tiles) == (
        "都市", 3, [[1, 2], [2, 1], [2, 2]], [185, 341, 135, 344, 341, 159])
    full = renderings(emoji, ("noto", "fluent"), 2)
    assert full == [(s, e, r) for s in range(2) for e in range(len(emoji)) for r in range(2)]


@pytest.mark.parametrize("style", ["streamline-emojis", "symbola"])
def test_puzzles_in_a_style_draw_only_the_emoji_it_covers(emoji, style):
    covered = emoji.covers(style)
    assert set(emoji.prompts("zh", style)) < set(emoji.prompts("zh"))
    for i in range(20):
        puzzle = make_puzzle(emoji, np.random.default_rng([5, i]), ("2x3", "3x3")[i % 2], style)
        assert puzzle.style == style and puzzle.record("x.png")["style"] == style
        assert set(puzzle.tiles) <= covered
        cols = 3
        answer_slots = {(r - 1) * cols + c - 1 for r, c in puzzle.answer}
        for slot, index in enumerate(puzzle.tiles):
            assert (puzzle.prompt in emoji.emoji[index].terms("zh")) == (slot in answer_slots)
    lacking = next(p for p in emoji.prompts("zh") if not emoji.answers(p) & covered)
    with pytest.raises(ClipMatchError, match=f"is drawn in style '{style}'"):
        make_puzzle(emoji, np.random.default_rng(0), "3x3", style, prompt=lacking)


def test_monochrome_glyphs_are_inked_to_stand_out(emoji):
    sprite = emoji.sprite(index_of(emoji, "🐶"), "symbola")
    colours = set()
    for seed in range(40):
        rng = np.random.default_rng(seed)
        ground = background(48, rng)
        inked = np.asarray(ink(sprite, ground, rng))
        colour = inked[..., :3][inked[..., 3] > 0]
        assert (colour == colour[0]).all() and np.array_equal(inked[..., 3], np.asarray(sprite)[..., 3])
        assert abs(luma(colour[0].astype(float)) - np.median(np.asarray(ground.convert("L")))) >= MIN_INK_CONTRAST
        colours.add(tuple(colour[0]))
    assert len(colours) > 20


def test_pairs_spread_each_emoji_over_the_styles_that_cover_it(tmp_path):
    small = EmojiSet()
    small.emoji = small.emoji[:12]
    styles = ("streamline-emojis", "noto", "symbola")
    counts = write_pairs(tmp_path / "pairs", per_emoji=2, valid_per_emoji=1, seed=0, size=48, emoji=small,
                         styles=styles, captions="all")
    tiles = [json.loads(line) for line in (tmp_path / "pairs" / "train_tiles.jsonl").read_text().splitlines()]
    assert [t["image_id"] for t in tiles] == list(range(counts["train_images"]))
    assert Counter(t["emoji"] for t in tiles) == {e: 2 * len(styles) for e in range(12)}  # none rarer
    assert all(t["emoji"] in small.covers(t["style"]) for t in tiles)
    for e in range(12):
        drawn = Counter(t["style"] for t in tiles if t["emoji"] == e)
        assert set(drawn) == {s for s in styles if e in small.covers(s)}
        assert max(drawn.values()) - min(drawn.values()) <= 1
    linked: dict[int, set[str]] = {}
    for text in read_jsonl(tmp_path / "pairs" / "train_texts.jsonl"):
        for image_id in text.image_ids:
            linked.setdefault(image_id, set()).add(text.text)
    assert all(linked[t["image_id"]] == set(all_captions(small, t["emoji"])) for t in tiles)
    assert len((tmp_path / "pairs" / "valid_tiles.jsonl").read_text().splitlines()) == counts["valid_images"] == 36


def test_a_bad_style_entry_in_labels_json_is_a_clear_error(tmp_path, labels):
    for style, change, message in (("symbola", {"covers": [3, 2]}, "'covers' must be increasing"),
                                   ("symbola", {"covers": [0, 9999]}, "'covers' must be increasing"),
                                   ("noto", None, "needs sheet")):
        meta = json.loads(json.dumps(labels))
        meta["styles"][style] = "noto.webp" if change is None else {**meta["styles"][style], **change}
        (tmp_path / "labels.json").write_text(json.dumps(meta), encoding="utf-8")
        with pytest.raises(ClipMatchError, match=f"labels.json: style '{style}'.*{message}"):
            EmojiSet(tmp_path)
    with pytest.raises(ClipMatchError, match="unknown emoji style 'apple'"):
        EmojiSet().sprite(0, "apple")


def test_build_names_a_missing_npm_package_and_its_install_command(tmp_path, capsys):
    work, out = tmp_path / "empty work", tmp_path / "out"
    assert build.main(["--work", str(work), "--no-install", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"build.py: error: npm packages not installed in {work / 'node_modules'}: ")
    assert "@iconify-json/noto-v1@1.2.5" in error and "emojibase-data@17.0.0" in error
    assert f"install them with: npm install --silent --prefix {shlex.quote(str(work))} " in error
    assert not list(out.iterdir())


def test_build_names_a_missing_font_package_and_its_install_command(tmp_path, capsys):
    work, out, fonts = tmp_path / "work", tmp_path / "out", tmp_path / "fonts"
    for package, version in build.NPM_PACKAGES.items():  # npm's part looks installed
        (work / "node_modules" / package).mkdir(parents=True)
        (work / "node_modules" / package / "package.json").write_text(json.dumps({"version": version}))
    assert build.main(["--work", str(work), "--no-install", "--fonts-root", str(fonts), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "Debian fonts-noto-color-emoji 2.042-0+deb12u1 is not installed" in error
    assert "install it with: apt-get install fonts-noto-color-emoji=2.042-0+deb12u1" in error
    font = fonts / build.FONT_FILES["noto"][0]
    font.parent.mkdir(parents=True)
    font.write_bytes(b"not this font")
    assert build.main(["--work", str(work), "--no-install", "--fonts-root", str(fonts), "--out", str(out)]) == 2
    assert "is not the font of Debian fonts-noto-color-emoji 2.042-0+deb12u1 (sha256 differs)" in capsys.readouterr().err
    assert build.main(["--work", str(work), "--no-install", "--out", str(out), "--styles", "symbola"]) == 2
    assert "labels.json has no entry for style 'noto'" in capsys.readouterr().err  # other sheets must exist
    assert not list(out.iterdir())
