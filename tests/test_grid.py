"""Grid solving mechanics: tile splitting and layout detection, coordinates, selection, errors, CLIs.

The tiny bundle has random weights, so these tests check the machinery, not accuracy.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from clip_match.cli import main
from clip_match.errors import ClipMatchError
from clip_match.grid.evaluate import TILE_CROPS, fit_calibration, read_puzzles, score_puzzles
from datasets.emoji.glyphs import EmojiSet
from clip_match.grid.tiles import crop_margins, cut_tiles, find_grid
from clip_match.grid.select import Calibration, SelectionRule, by_threshold, calibrate, top_k
from clip_match.grid.solver import GridSolver
from datasets.emoji.puzzles import make_puzzle, write_puzzles


@pytest.fixture(scope="module")
def emoji():
    return EmojiSet()


@pytest.fixture(scope="module")
def solver(tiny_bundle):
    return GridSolver(tiny_bundle, device="cpu", threads=2)


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("style", ["noto", "fluent"])
def test_split_finds_layout_and_tiles_of_generated_puzzles(emoji, style):
    for i in range(10):
        layout = ("2x3", "3x3")[i % 2]
        puzzle = make_puzzle(emoji, np.random.default_rng([11, i]), layout, style)
        grid = find_grid(puzzle.image)
        assert (grid.layout, grid.method) == (layout, "gap lines")
        assert grid.boxes() == puzzle.boxes  # exact tile boxes, gaps and margins excluded
        assert grid == find_grid(puzzle.image, layout)


def test_equal_split_fallback_and_layout_by_tile_shape():
    square = find_grid(noise(300, 300))
    assert (square.layout, square.method) == ("3x3", "equal split")
    assert square.boxes()[4] == (100, 100, 200, 200)
    wide = find_grid(noise(450, 300))
    assert (wide.layout, wide.method) == ("2x3", "equal split")
    assert find_grid(noise(300, 300), "2x3").layout == "2x3"  # a given layout is trusted without gap lines


def gapped(rows: int, cols: int, tile: int = 60, gap: int = 6) -> Image.Image:
    image = Image.new("RGB", (cols * tile + (cols - 1) * gap, rows * tile + (rows - 1) * gap), "white")
    for r in range(rows):
        for c in range(cols):
            image.paste(noise(tile, tile, r * cols + c), (c * (tile + gap), r * (tile + gap)))
    return image


def screenshot(grid: Image.Image, header: str = "#4285f4", header_height: int = 90, side: int = 20,
               seed: int = 0) -> Image.Image:
    """``grid`` as a captcha widget shows it: a header band with the prompt above, margins beside and
    a button below, on white."""
    width, height = grid.size
    canvas = Image.new("RGB", (width + 2 * side, header_height + 8 + height + 70), "white")
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, canvas.width, header_height), fill=header)
    draw.text((side, header_height // 3), f"Select all images with umbrellas ({seed})",
              fill="black" if header == "white" else "white")
    canvas.paste(grid, (side, header_height + 8))
    draw.rectangle((canvas.width - 110, canvas.height - 50, canvas.width - side, canvas.height - 15), fill=header)
    return canvas


def test_a_grid_inside_a_screenshot_is_found_between_its_header_and_footer(emoji, solver):
    # (seeds 2, 11, 14, 38: a spacer above the button once read a 3x3 grid as 2x3; short grids were missed)
    for i in (0, 1, 2, 3, 4, 5, 11, 14, 38):
        layout = ("2x3", "3x3")[i % 2]
        puzzle = make_puzzle(emoji, np.random.default_rng([55, i]), layout, ("noto", "fluent")[i // 2 % 2])
        header, header_height = [("#4285f4", 90), ("white", 60), ("#202124", 140)][i % 3]
        image = screenshot(puzzle.image, header, header_height, seed=i)
        assert find_grid(puzzle.image).method == "gap lines"  # (alone, the whole image shows the grid)
        grid = find_grid(image)
        assert (grid.layout, grid.method) == (layout, "gap lines, framed")
        assert grid.boxes() == [(left + 20, top + header_height + 8, right + 20, bottom + header_height + 8)
                                for left, top, right, bottom in puzzle.boxes]
        assert grid == find_grid(image, layout)
    framed, plain = solver.solve(image, puzzle.prompt, k=puzzle.k), solver.solve(puzzle.image, puzzle.prompt, k=puzzle.k)
    assert (framed.coordinates, framed.scores, framed.split) == (plain.coordinates, plain.scores, "gap lines, framed")


def test_a_framed_grid_is_not_cut_out_of_a_larger_one():
    def method(image: Image.Image) -> str:
        try:
            return find_grid(image).method
        except ClipMatchError:
            return "refused"

    # Never three or two rows of a taller grid. Alone, what the whole image shows, as before; in a screenshot,
    # an error (never the whole screenshot split equally), or a grid without gaps placed by its box.
    images = (gapped(5, 3), gapped(4, 3, tile=90), screenshot(gapped(5, 3)), screenshot(noise(300, 300)))
    assert [method(image) for image in images] == ["refused", "gap lines", "refused", "framed, gaps inferred"]
    assert find_grid(screenshot(noise(300, 300))).boxes()[4] == (120, 198, 220, 298)  # (the noise at (20, 98))
    with pytest.raises(ClipMatchError, match=r"holds more than a grid \(text or buttons around it\), but no 2x3 or "
                                             r"3x3 grid of tiles was found in it; crop the grid out"):
        find_grid(screenshot(gapped(5, 3)))


def test_wrong_or_unsupported_layout_is_refused_with_the_detected_one(emoji):
    puzzle = make_puzzle(emoji, np.random.default_rng(5), "2x3", "noto")
    with pytest.raises(ClipMatchError, match=r"not a 3x3 grid: its gap lines show 2x3"):
        find_grid(puzzle.image, "3x3")
    with pytest.raises(ClipMatchError, match=r"looks like a 4x4 grid"):
        find_grid(gapped(4, 4))
    with pytest.raises(ClipMatchError, match=r"unknown layout '4x4'"):
        find_grid(gapped(4, 4), "4x4")
    with pytest.raises(ClipMatchError, match=r"at least 16 px"):
        find_grid(noise(40, 30))


def test_solve_coordinates_scores_and_one_encoder_call(solver, emoji, monkeypatch):
    puzzle = make_puzzle(emoji, np.random.default_rng(9), "3x3", "noto")
    calls = []
    encode = solver.encoder.encode_images
    monkeypatch.setattr(solver.encoder, "encode_images", lambda items, **kw: calls.append(len(items)) or encode(items, **kw))
    result = solver.solve(puzzle.image, puzzle.prompt, k=2)
    assert calls == [9]
    assert result.layout == "3x3" and len(result.scores) == 9 and sum(result.selected) == 2
    cells = [[i // 3 + 1, i % 3 + 1] for i, chosen in enumerate(result.selected) if chosen]
    assert result.coordinates == cells and result.rule == "top-2" and result.split == "gap lines"
    order = np.argsort(result.scores)[::-1][:2]
    assert sorted((i // 3 + 1, i % 3 + 1) for i in order) == [tuple(c) for c in result.coordinates]
    zero = solver.solve(puzzle.image, puzzle.prompt, k=2, zero_based=True)
    assert zero.coordinates == [[r - 1, c - 1] for r, c in result.coordinates] and zero.zero_based


def test_tile_list_and_example_image_prompt(solver, emoji):
    puzzle = make_puzzle(emoji, np.random.default_rng(4), "2x3", "fluent")
    tiles = cut_tiles(puzzle.image, find_grid(puzzle.image))
    from_image = solver.solve(puzzle.image, puzzle.prompt, k=1)
    from_tiles = solver.solve(tiles, puzzle.prompt, k=1)
    assert from_tiles.split == "tiles given" and from_tiles.layout == "2x3"
    np.testing.assert_allclose(from_tiles.scores, from_image.scores, atol=1e-5)
    by_example = solver.solve(puzzle.image, tiles[4], k=1)  # image-to-image: the tile itself scores best
    assert by_example.coordinates == [[2, 2]] and by_example.scores[4] == pytest.approx(1.0, abs=1e-4)


def test_bad_input_errors(solver, emoji, tmp_path):
    puzzle = make_puzzle(emoji, np.random.default_rng(1), "3x3", "noto")
    tiles = cut_tiles(puzzle.image, find_grid(puzzle.image))
    with pytest.raises(ClipMatchError, match="got 5 tile images; a 2x3 grid needs 6 and a 3x3 grid 9"):
        solver.solve(tiles[:5], "雨伞")
    with pytest.raises(ClipMatchError, match="make a 3x3 grid, not 2x3"):
        solver.solve(tiles, "雨伞", layout="2x3")
    for blank in ("  ", "\u200b\ufeff"):  # (zero-width characters: the tokenizer drops them)
        with pytest.raises(ClipMatchError, match="prompt is empty"):
            solver.solve(puzzle.image, blank)
    with pytest.raises(ClipMatchError, match="puzzle image: not an image"):
        solver.solve(b"definitely not a png", "雨伞")
    text_file = tmp_path / "notes.txt"
    text_file.write_text("hello")
    with pytest.raises(ClipMatchError, match="notes.txt: not an image"):
        solver.solve(text_file, "雨伞")
    with pytest.raises(ClipMatchError, match=r"tiles\[2\] is 10x10 px"):
        solver.solve([*tiles[:2], noise(10, 10), *tiles[3:]], "雨伞")
    with pytest.raises(ClipMatchError, match="k must be an integer from 1 to 9"):
        solver.solve(puzzle.image, "雨伞", k=10)
    for threshold in (float("nan"), 5, -1.5, "0.5"):
        with pytest.raises(ClipMatchError, match="threshold must be a cosine from -1 to 1"):
            solver.solve(puzzle.image, "雨伞", threshold=threshold)
    with pytest.raises(ClipMatchError, match=r"image \(300x0\) has no pixels"):
        solver.solve(np.zeros((0, 300, 3), np.uint8), "雨伞")
    lab = puzzle.image.convert("LAB")  # (Pillow turns LAB into no grey: converted to RGB on input)
    assert solver.solve(lab, "雨伞", k=2).layout == "3x3"


def test_selection_rules_on_given_scores():
    scores = np.array([0.10, 0.52, 0.11, 0.49, 0.12, 0.09])
    assert top_k(scores, 2).tolist() == [False, True, False, True, False, False]
    assert by_threshold(scores, 0.5).tolist() == [False, True, False, False, False, False]
    assert by_threshold(scores, 0.9).sum() == 1  # never empty: the best tile stays
    assert SelectionRule("gap").select(scores).tolist() == [False, True, False, True, False, False]
    assert SelectionRule("relative", 0.5).select(scores).tolist() == [False, True, False, True, False, False]
    with pytest.raises(ClipMatchError, match="unknown selection rule"):
        SelectionRule("magic").select(scores)


def test_calibration_fits_a_threshold_and_checks_the_model(solver, tmp_path):
    rng = np.random.default_rng(0)
    # Scores where the largest gap misleads (a second cluster of distractors) but 0.4 separates.
    score_lists, answers = [], []
    for _ in range(60):
        k = int(rng.integers(1, 4))
        scores = np.concatenate([rng.uniform(0.45, 0.5, k), rng.uniform(0.3, 0.35, 2), rng.uniform(0.0, 0.05, 4)])
        score_lists.append(scores)
        answers.append(np.arange(len(scores)) < k)
    rule, accuracy = calibrate(score_lists, answers)
    assert accuracy == 1.0 and rule.kind in ("relative", "threshold")
    assert np.mean([np.array_equal(SelectionRule("gap").select(s), a) for s, a in zip(score_lists, answers)]) < 0.5
    saved = Calibration(rule, solver.encoder.fingerprint, accuracy, 60, "synthetic").save(tmp_path / "cal.json")
    assert Calibration.load(saved) == Calibration(rule, solver.encoder.fingerprint, accuracy, 60, "synthetic")
    calibrated = GridSolver(solver.encoder.bundle.path, device="cpu", calibration=saved)
    assert calibrated.choose(score_lists[0])[1].startswith(f"calibrated {rule.kind}")
    Calibration(rule, "0" * 64, accuracy, 60, "synthetic").save(tmp_path / "other.json")
    with pytest.raises(ClipMatchError, match="calibrated for model 000000000000"):
        GridSolver(solver.encoder.bundle.path, device="cpu", calibration=tmp_path / "other.json")



def test_crop_margins_keeps_the_centre():
    tile = noise(100, 60, seed=4)
    (cropped,) = crop_margins([tile], 0.8)
    assert cropped.size == (80, 48)
    assert np.array_equal(np.asarray(cropped), np.asarray(tile)[6:54, 10:90])
    assert crop_margins([tile], 1.0) == [tile]
    for bad in (0, -0.5, 1.5):
        with pytest.raises(ClipMatchError, match="tile crop must be in"):
            crop_margins([tile], bad)


def test_calibrated_tile_crop_is_applied_and_checked(solver, emoji, tmp_path):
    bundle, fingerprint = solver.encoder.bundle.path, solver.encoder.fingerprint
    path = Calibration(SelectionRule("threshold", 0.2), fingerprint, 0.5, 10, "synthetic", 0.5).save(tmp_path / "c.json")
    assert Calibration.load(path).tile_crop == 0.5
    cropping = GridSolver(bundle, device="cpu", calibration=path)
    puzzle = make_puzzle(emoji, np.random.default_rng(5), "3x3", "noto")
    result = cropping.solve(puzzle.image, "雨伞", k=2)
    tiles = crop_margins(cut_tiles(puzzle.image, find_grid(puzzle.image)), 0.5)
    expected = cropping.encoder.encode_images(tiles) @ cropping.encoder.encode_texts("雨伞")[0]
    assert result.tile_crop == 0.5 and np.allclose(result.scores, expected, atol=1e-5)
    assert not np.allclose(solver.solve(puzzle.image, "雨伞", k=2).scores, expected, atol=1e-3)  # (no crop)
    record = json.loads(path.read_text(encoding="utf-8"))
    del record["tile_crop"]  # a calibration written before tile crops existed: whole tiles
    (tmp_path / "old.json").write_text(json.dumps(record), encoding="utf-8")
    assert Calibration.load(tmp_path / "old.json").tile_crop == 1.0
    bad_fields = (({"tile_crop": 1.5}, "field 'tile_crop' must be a number in"),
                  ({"rule": {"kind": "relative", "value": 1.5}}, "'rule.value' must be a number from -inf to 1"),
                  ({"rule": {"kind": "threshold", "value": -1.5}}, "'rule.value' must be a number from -1 to 1"),
                  ({"rule": {"kind": "threshold", "value": float("nan")}}, "'rule.value' must be a number"),
                  ({"rule": {"kind": "median", "value": 0.5}}, "'rule.kind' must be one of gap, relative"),
                  ({"fingerprint": 123}, "field 'fingerprint' must be a str"),
                  ({"rule": "threshold"}, "not a readable grid calibration"))
    for change, message in bad_fields:
        (tmp_path / "bad.json").write_text(json.dumps({**record, **change}), encoding="utf-8")
        with pytest.raises(ClipMatchError, match=f"bad.json: .*{message}"):
            Calibration.load(tmp_path / "bad.json")
    (tmp_path / "far.json").write_text(json.dumps({**record, "rule": {"kind": "relative", "value": -4.8}}))
    assert Calibration.load(tmp_path / "far.json").rule.value == -4.8  # (a fitted relative cut may lie below -1)
    (tmp_path / "bad.json").write_text("5", encoding="utf-8")
    with pytest.raises(ClipMatchError, match="bad.json: not a readable grid calibration"):
        Calibration.load(tmp_path / "bad.json")


def test_fit_calibration_takes_the_crop_with_most_puzzles_right(tiny_bundle, emoji, tmp_path):
    puzzles = write_puzzles(tmp_path / "valid", 8, seed=2, emoji=emoji) / "puzzles.jsonl"
    solver = GridSolver(tiny_bundle, device="cpu")
    calibration, scored = fit_calibration(solver, puzzles)
    assert calibration.tile_crop in TILE_CROPS and solver.tile_crop == calibration.tile_crop
    assert calibration.accuracy == np.mean([np.array_equal(calibration.rule.select(s), a)
                                            for s, a in zip(scored.scores, scored.answers)])

    def right(crop: float) -> float:  # puzzles right with k known + with the crop's own fitted rule
        solver.tile_crop = crop
        again = score_puzzles(solver, puzzles)
        rule, accuracy = calibrate(again.scores, again.answers)
        return accuracy + np.mean([np.array_equal(top_k(s, k), a) for s, k, a in zip(again.scores, again.ks, again.answers)])

    best = right(calibration.tile_crop)
    assert all(right(crop) <= best for crop in TILE_CROPS)

def test_calibrated_accuracy_is_what_the_rule_scores():
    rng = np.random.default_rng(3)
    score_lists = [rng.normal(0.3, 0.05, 9) for _ in range(80)]
    answers = [np.arange(9) < rng.integers(1, 4) for _ in range(80)]
    for scores, answer in zip(score_lists[:40], answers[:40]):
        scores[answer] += 0.4  # half the puzzles clearly separable, half noise
    rule, accuracy = calibrate(score_lists, answers)
    measured = np.mean([np.array_equal(rule.select(s), a) for s, a in zip(score_lists, answers)])
    assert accuracy == pytest.approx(measured) and accuracy >= 0.5


def test_grid_cli(tiny_bundle, emoji, tmp_path, capsys):
    puzzle = make_puzzle(emoji, np.random.default_rng(2), "3x3", "noto")
    puzzle.image.save(tmp_path / "p.png")
    assert main(["grid", str(tmp_path / "p.png"), "--text", "雨伞", "--k", "2", "--json", "--bundle", str(tiny_bundle)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["layout"] == "3x3" and len(result["coordinates"]) == 2 and result["rule"] == "top-2"
    assert main(["grid", str(tmp_path / "p.png"), "--text", "雨伞", "--layout", "2x3", "--bundle", str(tiny_bundle)]) == 2
    assert "not a 2x3 grid: its gap lines show 3x3" in capsys.readouterr().err


def test_eval_grid_cli_and_calibration(tiny_bundle, emoji, tmp_path, capsys):
    write_puzzles(tmp_path / "valid", 6, seed=1, emoji=emoji)
    calibration = tmp_path / "cal.json"
    assert main(["eval-grid", str(tmp_path / "valid" / "puzzles.jsonl"), "--bundle", str(tiny_bundle),
                 "--calibrate", str(calibration), "--source", "6 puzzles, seed 1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert Calibration.load(calibration).source == "6 puzzles, seed 1"
    assert report["puzzles"] == 6 and set(report) >= {"2x3", "3x3", "all", "latency_ms"}
    for case in ("k_known", "k_unknown"):
        assert 0 <= report["all"][case]["puzzle_accuracy"] <= 1
    assert report["3x3"]["puzzles"] == 3
    assert Calibration.load(calibration).puzzles == 6 and report["tile_crop"] == Calibration.load(calibration).tile_crop
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "0001.png", "prompt": "x", "layout": "3x3", "k": 1, "answer": [[1, 1]]}\n'
                   '{"image": "0002.png", "prompt": "x", "layout": "3x3", "k": 2, "answer": [[0, 1]]}\n')
    assert main(["eval-grid", str(bad), "--bundle", str(tiny_bundle)]) == 2
    assert "bad.jsonl:2: field 'answer' needs 1-based [row, col]" in capsys.readouterr().err
    bad.write_text('{"image": "0001.png", "prompt": "x", "layout": "2x3", "k": 0, "answer": []}\n')
    assert main(["eval-grid", str(bad), "--bundle", str(tiny_bundle), "--calibrate", str(tmp_path / "c.json")]) == 2
    assert "bad.jsonl:1: field 'k' must be from 1 to 6" in capsys.readouterr().err
    assert len(list(read_puzzles(tmp_path / "valid" / "puzzles.jsonl"))) == 6


def test_eval_report_has_a_row_per_style_when_puzzles_name_one():
    from clip_match.grid.evaluate import Scored, report

    answer = np.arange(6) == 0
    right, wrong = np.array([0.9, 0.1, 0.2, 0.1, 0.3, 0.2]), np.array([0.1, 0.9, 0.2, 0.1, 0.3, 0.2])
    scores, rule = [right, wrong, right, right], SelectionRule("threshold", 0.5)
    scored = Scored(scores, [answer] * 4, [1] * 4, ["2x3"] * 4, [0.01] * 4, ["noto", "symbola", "noto", None])
    out = report(scored, rule, "threshold")
    assert list(out["styles"]) == ["noto", "symbola", "-"]  # in order of appearance; "-": no style given
    assert [out["styles"][s]["puzzles"] for s in ("noto", "symbola", "-")] == [2, 1, 1]
    for case in ("k_known", "k_unknown"):
        assert out["styles"]["noto"][case]["puzzle_accuracy"] == 1 and out["styles"]["symbola"][case]["puzzle_accuracy"] == 0
    assert out["all"]["k_known"]["puzzle_accuracy"] == 0.75
    assert "styles" not in report(Scored(scores, [answer] * 4, [1] * 4, ["2x3"] * 4, [0.01] * 4), rule, "threshold")


def test_eval_grid_cli_reports_each_style(tiny_bundle, emoji, tmp_path, capsys):
    lines = []
    for style, seed in (("noto", 1), ("symbola", 2)):
        write_puzzles(tmp_path / style, 2, seed=seed, style=style, emoji=emoji)
        lines += [line.replace('"image": "', f'"image": "{style}/')
                  for line in (tmp_path / style / "puzzles.jsonl").read_text(encoding="utf-8").splitlines()]
    (tmp_path / "all.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["eval-grid", str(tmp_path / "all.jsonl"), "--bundle", str(tiny_bundle), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {name: block["puzzles"] for name, block in result["styles"].items()} == {"noto": 2, "symbola": 2}
    assert main(["eval-grid", str(tmp_path / "all.jsonl"), "--bundle", str(tiny_bundle)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].startswith("layout ") and any(row.startswith("style ") for row in table)
    assert sum(row.startswith("symbola ") for row in table) == 2  # k known and k unknown
    assert main(["eval-grid", str(tmp_path / "noto" / "puzzles.jsonl"), "--bundle", str(tiny_bundle), "--json"]) == 0
    assert list(json.loads(capsys.readouterr().out)["styles"]) == ["noto"]
    (tmp_path / "bad.jsonl").write_text(lines[0].replace('"style": "noto"', '"style": 3') + "\n", encoding="utf-8")
    assert main(["eval-grid", str(tmp_path / "bad.jsonl"), "--bundle", str(tiny_bundle)]) == 2
    assert "bad.jsonl:1: field 'style' must be a non-empty str" in capsys.readouterr().err


def test_calibration_written_into_a_bundle_is_listed_and_checked(tiny_bundle, emoji, tmp_path, capsys):
    import shutil

    from clip_match.runtime.bundle import Bundle

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    (bundle / "grid_calibration.json").write_text("{}")  # copied in by hand: nothing vouches for it
    with pytest.raises(ClipMatchError, match="grid_calibration.json: not listed in the bundle manifest"):
        GridSolver(bundle)
    write_puzzles(tmp_path / "valid", 4, seed=1, emoji=emoji)
    assert main(["eval-grid", str(tmp_path / "valid" / "puzzles.jsonl"), "--bundle", str(bundle),
                 "--calibrate", str(bundle / "grid_calibration.json")]) == 0
    assert "grid_calibration.json" in Bundle.load(bundle).manifest["files"]
    assert GridSolver(bundle).calibration == Calibration.load(bundle / "grid_calibration.json")
    (bundle / "grid_calibration.json").write_text((bundle / "grid_calibration.json").read_text() + " ")
    with pytest.raises(ClipMatchError, match="grid_calibration.json: sha256 mismatch"):
        GridSolver(bundle)


def test_the_demo_bundle_lists_its_calibration():
    from clip_match.runtime.bundle import Bundle

    assert Bundle.load().optional_file("grid_calibration.json") is not None


def test_calibration_cut_can_lie_above_every_non_answer():
    """Single-answer puzzles are right for any cut above their best non-answer: such cuts are tried."""
    from clip_match.grid.select import _best_cut

    values = [np.array([0.9, 0.7, 0.69, 0.2]), np.array([0.8, 0.5, 0.49, 0.0])]
    answers = [np.array([True, False, False, False]), np.array([True, False, False, False])]
    cut, accuracy = _best_cut(values, answers)
    assert accuracy == 1.0 and 0.7 < cut <= 0.8
    cut, accuracy = _best_cut(values[:1], answers[:1])
    assert accuracy == 1.0 and 0.7 < cut <= 0.9


@pytest.mark.parametrize("seed, index, style", [
    (2026, 362, "noto"),      # 2x3: its rows looked like bands of a screenshot, and no framed grid was found in it
    (3010, 222, "symbola"),   # the same, monochrome
    (2027, 479, "fluent"),    # 3x3: read as a framed 2x3 above a "footer" (its third row)
    (3002, 339, "noto-v1"),
])
def test_bare_puzzles_whose_rows_look_like_bands_keep_their_whole_grid(emoji, seed, index, style):
    """Generated test puzzles (train_demo.sh's seeds) that the screenshot finder once misread."""
    layout = ("2x3", "3x3")[index % 2]
    puzzle = make_puzzle(emoji, np.random.default_rng([seed, index]), layout, style)
    grid = find_grid(puzzle.image)
    assert (grid.layout, grid.method) == (layout, "gap lines")
