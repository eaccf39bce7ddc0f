"""Solving a puzzle from its screenshot alone: the prompt's target from real-world phrasings, prompts read
from generated widget screenshots (text and icons), the screenshot set builder, eval-grid --read-prompt,
and every bad input.

The tiny bundle has random weights: these tests check the reading and the plumbing, not accuracy. The
screenshots are drawn in fonts-wqy-microhei and fonts-dejavu-core (scripts/ensure_test_tools.sh).
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from clip_match.cli import main
from clip_match.errors import ClipMatchError
from clip_match.grid.prompt import compile_pattern, extract_target, singular
from clip_match.grid.solver import GridSolver
from clip_match.grid.tiles import find_grid
from clip_match.runtime import ocr
from datasets.emoji.glyphs import EmojiSet
from datasets.emoji.puzzles import make_puzzle
from datasets.emoji.screenshots import FONTS, check_fonts, make_screenshot, pluralise, write_screenshots

TEST_FONTS = ("wqy-microhei", "dejavu-sans")


@pytest.fixture(scope="module")
def emoji():
    return EmojiSet()


@pytest.fixture(scope="module")
def fonts():
    return check_fonts(TEST_FONTS)


@pytest.fixture(scope="module")
def solver(tiny_bundle):
    return GridSolver(tiny_bundle, device="cpu", threads=1)


def shot(emoji, fonts, number: int, lang: str, icon: bool = False):
    """Screenshot ``number`` of seed 5 (the seeds these tests were written against)."""
    return make_screenshot(emoji, np.random.default_rng([5, number]), ("3x3", "2x3")[number % 2], "noto", lang, fonts,
                           icon=icon)


@pytest.mark.parametrize("text, target", [
    # Chinese: lead-ins, "containing ... pictures", brackets and quotes, full-width punctuation, spaces
    ("请点击下图中所有的雨伞", "雨伞"), ("请点击下图中 所有的 雨伞 。", "雨伞"), ("请选择所有包含雨伞的图片", "雨伞"),
    ("请选择包含 雨伞 的所有图片", "雨伞"), ("点击图中所有的雨伞", "雨伞"), ("请点击【雨伞】", "雨伞"),
    ("请点击下图中所有的“雨伞”", "雨伞"), ('请点击所有"雨伞"', "雨伞"), ("请点击所有「收起的伞」", "收起的伞"),
    ("请选出下图中的收起的伞", "收起的伞"), ("请在下图中点击雨伞", "雨伞"), ("请依次点击：雨伞", "雨伞"),
    ("请点击所有雨伞，然后点击确认", "雨伞"), ("请点击所有雨伞（共3个）", "雨伞"), ("请找出所有有轨电车", "有轨电车"),
    ("请选择所有包含地图的图片", "地图"), ("请点击所有地图", "地图"), ("请点击所有带有雨伞的方块", "雨伞"),
    ("选出图中全部雨伞", "雨伞"), ("请选择所有雨伞图片：", "雨伞"), ("点选所有雨伞", "雨伞"),
    ("如果没有，请点击跳过\n请点击所有雨伞", "雨伞"), ("请点击下图中所有的\n雨伞", "雨伞"),
    # English: plurals made singular unless an article says one, spaces the OCR dropped or split, counts
    ("Select all images with umbrellas", "umbrella"), ("Select all images with umbrellas.", "umbrella"),
    ("Select all squares with traffic lights", "traffic light"), ("Click on all images containing a bus", "bus"),
    ("Click on all images containing buses", "bus"), ("Please click each image containing a closed umbrella",
                                                      "closed umbrella"),
    ("Click all the cherries", "cherry"), ("Select all cherries (3)", "cherry"), ("Choose the watches", "watch"),
    ("Tap on every umbrella", "umbrella"), ("Select all images that contain boxes", "box"),
    ("Find all images of glasses", "glasses"), ('Select all images with "umbrella"', "umbrella"),
    ("Selectall images with umbrellas", "umbrella"), ("Select al l images with umbrellas", "umbrella"),
    ("Click on all images containinga dog", "dog"), ("Click on each image showing an apple", "apple"),
    ("Please select all the images with fire hydrants", "fire hydrant"),
    ("Click on all pictures of bicycles", "bicycle"), ("Choose the cells", "cell"), ("Click all the boxes", "box"),
    ("Click all the nine o' clock", "nine o'clock"), ('Select all the woman" s clothes (3)', "woman's clothes"),
    ("Select al images that contain\nnine o’clock", "nine o'clock"), ("点击图中所有的\n照片", "照片"),
    ("请点击所有餐具·然后点击确认", "餐具"),
    ("Select all images with\nbuses\nClick verify once there are none left.", "bus"),
    ("If there are none, click skip\nSelect all images with buses", "bus"),
    # no target: buttons, titles, pointers to an icon, other sentences
    ("请点击验证", None), ("Click verify once there are none left.", None), ("Verify you are human", None),
    ("请点击与示例相同的图片", None), ("Select all images with this object", None), ("安全验证", None),
    ("Hello there, friend", None), ("Select all images with", None), ("Select alarm clocks", None),
])
def test_templates_extract_the_target_of_real_world_phrasings(text, target):
    assert extract_target(text) == target


def test_singular_undoes_the_generators_plural_of_the_emoji_names(emoji):
    names = [name for name in emoji.prompts("en") if pluralise(name) != name]
    assert len(names) > 1000
    # (three that English itself confuses: "news" and "sparkles" are words of their own, "-sses" is "-ss" + es)
    assert [name for name in names if singular(pluralise(name)) != name] == ["lacrosse", "new", "sparkle"]
    assert [singular(word) for word in ("glasses", "Cherries", "taxis", "cookies", "tennis", "dice")] == \
        ["glasses", "Cherry", "taxi", "cookie", "tennis", "die"]


def test_prompt_pattern_is_one_named_group():
    pattern = compile_pattern(r"找到(?P<target>.+?)的图片")
    assert extract_target("请找到 雨伞 的图片", pattern) == "雨伞"
    assert extract_target("请点击所有雨伞", pattern) is None  # (the pattern only, no built-in template)
    for bad, message in (("(", "is not a regular expression"), ("点击(.+)", "needs exactly one named group"),
                         ("(?P<a>.)(?P<b>.)", "needs exactly one named group")):
        with pytest.raises(ClipMatchError, match=message):
            compile_pattern(bad)


@pytest.mark.parametrize("number, lang", [(0, "zh"), (1, "en"), (2, "zh"), (3, "en"), (7, "en")])
def test_text_prompts_are_read_from_generated_screenshots(solver, emoji, fonts, number, lang):
    screenshot = shot(emoji, fonts, number, lang)
    result = solver.solve(screenshot.image, k=screenshot.puzzle.k)
    assert (result.prompt_source, result.prompt) == ("ocr-text", screenshot.puzzle.prompt)
    assert screenshot.text[:6] == result.prompt_read[:6]  # (the text read, raw: "Select all ...", "请点击 ...")
    given = solver.solve(screenshot.image, screenshot.puzzle.prompt, k=screenshot.puzzle.k)
    assert given.prompt_source == "given" and given.prompt is None
    assert (result.coordinates, result.scores) == (given.coordinates, given.scores)


@pytest.mark.parametrize("number, lang", [(8, "zh"), (9, "en")])
def test_icon_prompts_are_cropped_and_matched_as_examples(solver, emoji, fonts, number, lang):
    screenshot = shot(emoji, fonts, number, lang, icon=True)
    result = solver.solve(screenshot.image, k=screenshot.puzzle.k)
    assert result.prompt_source == "header-icon" and result.prompt is None and result.prompt_read == ""
    left, top, right, bottom = result.prompt_box
    truth = screenshot.icon_box
    assert max(abs(a - b) for a, b in zip(result.prompt_box, truth)) <= 3
    icon = screenshot.image.crop((left, top, right, bottom))
    assert np.allclose(result.scores, solver.solve(screenshot.image, icon, k=screenshot.puzzle.k).scores, atol=1e-6)


def test_concurrent_first_readings_load_the_ocr_model_once(tiny_bundle, emoji, fonts, monkeypatch):
    """A server's first requests arrive together: one OCR model, not one per thread."""
    import threading
    import time

    from clip_match.grid import solver as solver_module

    loads = []

    class SlowReader(solver_module.PromptReader):
        def __init__(self, threads):
            loads.append(threads)
            time.sleep(0.2)
            super().__init__(threads)

    monkeypatch.setattr(solver_module, "PromptReader", SlowReader)
    fresh = GridSolver(tiny_bundle, device="cpu", threads=1)
    screenshot = shot(emoji, fonts, 0, "zh")
    results = []
    threads = [threading.Thread(target=lambda: results.append(fresh.solve(screenshot.image).prompt)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loads == [1] and results == [screenshot.puzzle.prompt] * 3


def test_grid_cli_reads_the_prompt_and_says_what_it_used(tiny_bundle, emoji, fonts, tmp_path, capsys):
    screenshot = shot(emoji, fonts, 1, "en")
    screenshot.image.save(tmp_path / "shot.jpg", quality=80)
    assert main(["grid", str(tmp_path / "shot.jpg"), "--k", "2", "--json", "--bundle", str(tiny_bundle)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["prompt"], result["prompt_source"]) == ("burrito", "ocr-text")
    assert result["prompt_read"] == "Select all squares with burritos" and result["split"] == "gap lines, framed"
    assert main(["grid", str(tmp_path / "shot.jpg"), "--text", "雨伞", "--json", "--bundle", str(tiny_bundle)]) == 0
    given = json.loads(capsys.readouterr().out)
    assert (given["prompt"], given["prompt_source"], given["prompt_read"]) == ("雨伞", "given", None)
    assert main(["grid", str(tmp_path / "shot.jpg"), "--bundle", str(tiny_bundle)]) == 0
    assert "# prompt: burrito (ocr-text, read 'Select all squares with burritos')" in capsys.readouterr().out
    pattern = r"squares with (?P<target>\w+)"
    assert main(["grid", str(tmp_path / "shot.jpg"), "--prompt-pattern", pattern, "--json", "--bundle",
                 str(tiny_bundle)]) == 0
    assert json.loads(capsys.readouterr().out)["prompt"] == "burritos"  # (the group as written)


def header(text: str, grid: Image.Image) -> Image.Image:
    """``grid`` under a white header that says ``text`` in DejaVu Sans."""
    canvas = Image.new("RGB", (grid.width + 40, grid.height + 80), "white")
    font = ImageFont.truetype(FONTS["dejavu-sans"].path, 20)
    ImageDraw.Draw(canvas).text((20, 20), text, fill=(40, 40, 40), font=font)
    canvas.paste(grid, (20, 70))
    return canvas


def test_every_bad_input_is_a_clear_error(solver, tiny_bundle, emoji, fonts, tmp_path, capsys):
    bare = make_puzzle(emoji, np.random.default_rng(3), "3x3", "noto").image
    with pytest.raises(ClipMatchError, match="puzzle image: found no prompt above or below the grid"):
        solver.solve(bare)
    odd = header("Hello there, friend", bare)
    with pytest.raises(ClipMatchError, match=r"read the prompt 'Hello there, friend' but no template found its target "
                                             r"in it; give the target with --text, or a --prompt-pattern"):
        solver.solve(odd)
    with pytest.raises(ClipMatchError, match=r"read the prompt 'Hello there, friend' but the --prompt-pattern found"):
        solver.solve(odd, prompt_pattern=r"click (?P<target>\w+)")
    tiles = [Image.new("RGB", (40, 40), colour) for colour in ("red", "green", "blue") * 3]
    with pytest.raises(ClipMatchError, match="reading the prompt needs the whole screenshot, not its tiles"):
        solver.solve(tiles)
    with pytest.raises(ClipMatchError, match="a prompt pattern .* applies when the prompt is read"):
        solver.solve(bare, "雨伞", prompt_pattern="(?P<t>.+)")
    odd.save(tmp_path / "odd.png")
    bare.save(tmp_path / "bare.png")
    for argv, message in (([str(tmp_path / "odd.png")], "no template found its target in it; give the target with"),
                          ([str(tmp_path / "bare.png")], "found no prompt above or below the grid"),
                          ([str(tmp_path / "odd.png"), "--prompt-pattern", "(nope"], "is not a regular expression"),
                          ([str(tmp_path / "odd.png"), "--prompt-pattern", "x(.+)"], "needs exactly one named group")):
        assert main(["grid", *argv, "--bundle", str(tiny_bundle)]) == 2
        assert message in capsys.readouterr().err


def test_the_ocr_model_is_checked_by_its_sha256(tmp_path):
    damaged = tmp_path / "rec.onnx"
    shutil.copy(ocr.MODEL, damaged)
    with open(damaged, "r+b") as handle:
        handle.seek(1000)
        handle.write(b"\0")
    with pytest.raises(ClipMatchError, match="rec.onnx: sha256 mismatch .* reinstall clip-match"):
        ocr.TextReader(model=damaged)
    with pytest.raises(ClipMatchError, match="the OCR model is missing"):
        ocr.TextReader(model=tmp_path / "absent.onnx")


def test_screenshot_set_records_what_reading_is_scored_on(emoji, tmp_path):
    out = write_screenshots(tmp_path / "shots", 6, seed=5, fonts=TEST_FONTS, emoji=emoji)
    lines = [json.loads(line) for line in (out / "puzzles.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [line["lang"] for line in lines] == ["zh", "en"] * 3
    for line in lines:
        assert {"prompt_text", "prompt_kind", "target", "boxes"} <= set(line)
        grid = find_grid(Image.open(out / line["image"]))
        assert max(abs(a - b) for found, box in zip(grid.boxes(), line["boxes"]) for a, b in zip(found, box)) <= 3
        assert line["prompt_kind"] == "icon" or line["target"] in line["prompt_text"]
    with pytest.raises(ClipMatchError, match="unknown font 'comic'"):
        check_fonts(["comic"])


def test_a_missing_font_names_its_debian_package(monkeypatch):
    from datasets.emoji import screenshots

    monkeypatch.setitem(screenshots.FONTS, "ar-pl-ukai", screenshots.Font("/nowhere/ukai.ttc", 0, None,
                                                                           "fonts-arphic-ukai", "zh", False))
    with pytest.raises(ClipMatchError, match="font 'ar-pl-ukai' is not installed: apt-get install fonts-arphic-ukai"):
        check_fonts(["ar-pl-ukai", "dejavu-sans"])
    with pytest.raises(ClipMatchError, match="must include one that draws Chinese"):
        check_fonts(["dejavu-sans"])


def test_eval_grid_reports_reading_apart_from_answers(tiny_bundle, emoji, tmp_path, capsys):
    write_screenshots(tmp_path / "shots", 4, seed=5, fonts=TEST_FONTS, emoji=emoji)
    puzzles = str(tmp_path / "shots" / "puzzles.jsonl")
    assert main(["eval-grid", puzzles, "--read-prompt", "--json", "--bundle", str(tiny_bundle)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["puzzles"] == 4 and report["grid_located"] == 1.0
    assert set(report["prompt_read"]) <= {"zh", "en", "icon"} and report["read_errors"] == 0
    assert all(block["right"] == 1.0 for block in report["prompt_read"].values())
    for case in ("given", "read"):
        assert report[case]["all"]["puzzles"] == 4
    assert report["given"]["all"]["k_known"] == report["read"]["all"]["k_known"]  # (every prompt read right)
    assert main(["eval-grid", puzzles, "--read-prompt", "--bundle", str(tiny_bundle)]) == 0
    assert "grid located (tile boxes within 3 px): 1.0000" in capsys.readouterr().out
    plain = tmp_path / "plain.jsonl"
    plain.write_text('{"image": "0001.png", "prompt": "x", "layout": "3x3", "k": 1, "answer": [[1, 1]]}\n')
    assert main(["eval-grid", str(plain), "--read-prompt", "--bundle", str(tiny_bundle)]) == 2
    assert "reading prompts needs screenshot lines" in capsys.readouterr().err
