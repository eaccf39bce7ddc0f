"""Puzzle mode and model assistance of `clip-match annotate` (issue 31), below the browser: tiles cut by the
grid finder, the prompts file and its errors, answers, tile labels and undo, the server's checks, the
background worker's suggestions, and the export that build-lmdb and eval-grid read."""
from __future__ import annotations

import json
import re
import shutil
import time

import numpy as np
import pytest
from PIL import Image

from clip_match.annotate.assist import Assistant
from clip_match.annotate.exchange import attach_image_dir, export_dataset
from clip_match.annotate.puzzles import attach_puzzle_dir
from clip_match.annotate.store import LabelStore
from clip_match.cli import main
from clip_match.errors import ClipMatchError
from clip_match.grid.evaluate import read_puzzles
from clip_match.grid.solver import GridSolver
from clip_match.grid.tiles import find_grid
from datasets.emoji.puzzles import write_puzzles
from test_annotate_helpers import call, call_json, make_images, thread_server


@pytest.fixture(scope="module")
def puzzle_dir(tmp_path_factory):
    """Six generated Noto puzzles (2x3 and 3x3 in turn) with their puzzles.jsonl, a text file, a picture
    without a grid and one too small for tiles."""
    folder = write_puzzles(tmp_path_factory.mktemp("puzzles") / "puzzles", 6, seed=7)
    (folder / "notes.txt").write_text("not an image")
    Image.new("RGB", (12, 12), "white").save(folder / "tiny.png")
    return folder


def key(folder) -> dict[str, dict]:
    return {json.loads(line)["image"]: json.loads(line) for line in (folder / "puzzles.jsonl").read_text().splitlines()}


def puzzle_store(tmp_path, puzzle_dir, **options) -> tuple[LabelStore, dict[str, dict]]:
    store = LabelStore(tmp_path / "labels")
    store.use_mode("puzzles")
    attach_puzzle_dir(store, puzzle_dir, **options)
    return store, {row["path"]: row for row in store.state()["images"]}


def tiles_of(answer: list[list[int]]) -> list[int]:
    """Tile numbers (1-based, reading order) of 1-based [row, col] cells; both layouts have 3 columns."""
    return sorted((r - 1) * 3 + c for r, c in answer)


def test_puzzles_are_cut_by_the_grid_finder_and_gridless_images_listed(tmp_path, puzzle_dir):
    store, rows = puzzle_store(tmp_path, puzzle_dir, prompts_file=puzzle_dir / "puzzles.jsonl")
    assert sorted(rows) == ["0001.png", "0002.png", "0003.png", "0004.png", "0005.png", "0006.png"]
    for path, line in key(puzzle_dir).items():
        grid = find_grid(Image.open(puzzle_dir / path))     # the same code as `clip-match grid`
        puzzle = rows[path]["puzzle"]
        assert puzzle["boxes"] == [list(box) for box in grid.boxes()] and puzzle["layout"] == line["layout"]
        assert puzzle["prompt"] == line["prompt"] and puzzle["answer"] is None   # eval-grid's answer is not taken
    rejects = dict((r["path"], r["reason"]) for r in store.rejects())
    assert set(rejects) == {"notes.txt", "tiny.png"}          # the prompts file itself is not listed
    assert rejects["tiny.png"].startswith("no grid found:") and "at least 16 px" in rejects["tiny.png"]

    store.save_puzzle("t", rows["0001.png"]["id"], prompt="换个提示")
    attach_puzzle_dir(store, puzzle_dir, prompts_file=puzzle_dir / "puzzles.jsonl")  # a restart: grids kept
    assert store.image_row(rows["0001.png"]["id"])["puzzle"]["prompt"] == "换个提示"  # the page's prompt wins
    forced = puzzle_store(tmp_path / "forced", puzzle_dir, layout="3x3")[0]        # --layout 3x3: 2x3 ones skipped
    reasons = {r["path"]: r["reason"] for r in forced.rejects()}
    assert "is not a 3x3 grid" in reasons["0001.png"] and "0002.png" not in reasons


@pytest.mark.parametrize("line, message", [
    ('{"image": "missing.png", "prompt": "猫"}', "puzzles.jsonl:2: no image 'missing.png' in"),
    ('{"image": "../outside.png", "prompt": "猫"}', "puzzles.jsonl:2: image '../outside.png' is not in"),
    ('{"image": "0002.png", "prompt": "猫"', "puzzles.jsonl:2: malformed JSON"),
    ('{"image": "0002.png"}', "puzzles.jsonl:2: field 'prompt' must be a string"),
    ('{"image": "0002.png", "prompt": " "}', "puzzles.jsonl:2: prompt: label is empty"),
    ('{"image": "0002.png", "prompt": "猫", "layout": "4x4"}', "puzzles.jsonl:2: field 'layout' must be one of"),
    ('{"image": "0001.png", "prompt": "猫", "layout": "3x3"}', "puzzles.jsonl:2: layout 3x3 disagrees with the image"),
    ('{"image": "0003.png", "prompt": "猫"}\n{"image": "./0003.png", "prompt": "狗"}', "has a prompt already, at"),
])
def test_prompts_file_errors_name_the_line(tmp_path, puzzle_dir, line, message):
    folder = shutil.copytree(puzzle_dir, tmp_path / "puzzles")
    (folder / "puzzles.jsonl").write_text('{"image": "0005.png", "prompt": "伞"}\n' + line + "\n")
    with pytest.raises(ClipMatchError, match=re.escape(message)):
        puzzle_store(tmp_path, folder, prompts_file=folder / "puzzles.jsonl")


def test_answers_tile_labels_undo_skip_and_modes(tmp_path, puzzle_dir):
    store, rows = puzzle_store(tmp_path, puzzle_dir)
    first, second = rows["0001.png"]["id"], rows["0002.png"]["id"]      # 2x3, 3x3; no prompts file
    with pytest.raises(ClipMatchError, match="has no prompt yet"):
        store.save_puzzle("t", first, answer=[1])
    store.save_puzzle("t", first, prompt=" 雨伞 ")
    for answer, message in [([7], r"tile 7 is outside the 2x3 grid \(tiles 1-6\)"), ([], "non-empty list"),
                            ([True], "tile True"), ("1", "non-empty list")]:
        with pytest.raises(ClipMatchError, match=message):
            store.save_puzzle("t", first, answer=answer)
    row = store.save_puzzle("t", first, answer=[6, 2, 2])
    assert row["puzzle"]["answer"] == [2, 6] and row["puzzle"]["prompt"] == "雨伞"
    assert store.change_labels("t", first, add=["猫"], tile=3)["puzzle"]["tiles"] == {"3": ["猫"]}
    with pytest.raises(ClipMatchError, match="tile 9 is outside the 2x3 grid"):
        store.change_labels("t", first, add=["猫"], tile=9)
    store.set_skipped("t", second, True)
    assert [done for _, _, done in store.files()][:2] == [True, True]
    assert store.undo("t") == {"kind": "skip", "image_id": second, "skipped": True}
    assert store.undo("t") == {"kind": "labels", "image_id": first, "added": ["猫"], "removed": [], "tile": 3}
    assert store.undo("t") == {"kind": "puzzle", "image_id": first, "prompt": "雨伞", "answer": [2, 6]}
    assert store.image_row(first)["puzzle"] == {**rows["0001.png"]["puzzle"], "prompt": "雨伞"}
    assert store.undo("t")["kind"] == "puzzle" and store.image_row(first)["puzzle"]["prompt"] is None

    with pytest.raises(ClipMatchError, match="holds puzzle answers; drop --puzzles"):
        store.use_mode("images")
    images = LabelStore(tmp_path / "images-labels")
    make_images(tmp_path / "images", 2)
    attach_image_dir(images, tmp_path / "images")
    with pytest.raises(ClipMatchError, match="holds image labels; puzzles need their own"):
        images.use_mode("puzzles")


def test_server_checks_puzzle_writes(tmp_path, puzzle_dir):
    store, rows = puzzle_store(tmp_path, puzzle_dir, prompts_file=puzzle_dir / "puzzles.jsonl")
    store.close_thread_connection()
    with thread_server(puzzle_dir, tmp_path / "labels") as server:
        url, puzzle = server.url, rows["0002.png"]["id"]
        assert call_json(url, "GET", "/api/session") == {
            "mode": "puzzles", "order": "path", "assist": {"state": "off", "message": "model assistance off (--no-assist)"}}
        cases = [(f"/api/puzzles/{puzzle}", {"answer": [10]}, "tile 10 is outside the 3x3 grid (tiles 1-9)"),
                 (f"/api/puzzles/{puzzle}", {"answer": [0, 1]}, "tile 0 is outside"),
                 (f"/api/puzzles/{puzzle}/tiles/10/labels", {"add": ["猫"]}, "tile 10 is outside"),
                 (f"/api/puzzles/{puzzle}", {"prompt": 3}, "must be a string"),
                 ("/api/puzzles/999", {"answer": [1]}, "no image with id 999"),
                 ("/api/labels/rename", {"from": "a", "to": "b"}, "renaming labels is for image mode")]
        for path, body, message in cases:
            status, _, payload = call(url, "POST", path, body)
            assert status == 400 and message in json.loads(payload)["error"], (path, body, payload)
        for query in ("since=x", "want=1,a", "want=" + ",".join(["1"] * 65)):
            assert call(url, "GET", f"/api/suggestions?{query}")[0] == 400
        saved = call_json(url, "POST", f"/api/puzzles/{puzzle}", {"answer": [9, 1]})["image"]["puzzle"]
        assert saved["answer"] == [1, 9]
        assert call_json(url, "GET", "/api/suggestions?since=0&want=1")["items"] == []


def wait_for(condition, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return value


def test_worker_pre_marks_the_solvers_choice_and_ranks_labels(tmp_path, puzzle_dir):
    store, rows = puzzle_store(tmp_path, puzzle_dir, prompts_file=puzzle_dir / "puzzles.jsonl")
    assistant = Assistant.start(store, puzzle_dir, None)
    assert assistant.status["state"] == "on"
    snapshot = wait_for(lambda: (s := assistant.snapshot(0, [])) and not s["pending"] and len(s["items"]) == 6 and s)
    solver = GridSolver()
    for item in snapshot["items"]:
        path = next(p for p, row in rows.items() if row["id"] == item["id"])
        result = solver.solve(puzzle_dir / path, rows[path]["puzzle"]["prompt"])
        assert item["selected"] == [i + 1 for i, chosen in enumerate(result.selected) if chosen]
        assert item["scores"] == pytest.approx(result.scores, abs=1e-3) and item["rule"] == result.rule
        picked = [s for s, chosen in zip(result.scores, result.selected) if chosen]
        others = [s for s, chosen in zip(result.scores, result.selected) if not chosen]
        assert item["margin"] == pytest.approx(min(picked) - max(others) if picked and others else 0, abs=1e-3)
    first = rows["0001.png"]["id"]
    store.save_puzzle("t", first, prompt="猫")                 # a new prompt is scored again
    assistant.changed()
    assert wait_for(lambda: [i for i in assistant.snapshot(snapshot["seq"], [first])["items"] if i["prompt"] == "猫"])

    # Images: the labels in use, ranked for each image by the model.
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    for path, line in key(puzzle_dir).items():
        picture = Image.open(puzzle_dir / path)
        boxes = rows[path]["puzzle"]["boxes"]
        answer = tiles_of(line["answer"])
        picture.crop(tuple(boxes[answer[0] - 1])).save(tiles / f"{path[:4]}.png")
    images = LabelStore(tmp_path / "image-labels")
    attach_image_dir(images, tiles)
    ids = {row["path"]: row["id"] for row in images.state()["images"]}
    prompts = {path[:4]: line["prompt"] for path, line in key(puzzle_dir).items()}
    for name, image in ids.items():
        images.change_labels("t", image, add=[prompts[name[:4]]])
    assistant = Assistant.start(images, tiles, None)
    wanted = list(ids.values())
    ranked = wait_for(lambda: (s := assistant.snapshot(0, wanted)) and not s["pending"] and len(s["ranked"]) == 6
                      and len(s["items"]) == 6 and s)["ranked"]
    top = sum(ranked[str(image)][0][0] == prompts[name[:4]] for name, image in ids.items())
    assert top >= 5, ranked                                    # the demo model knows these emoji
    assert all(len(ranking) == 6 for ranking in ranked.values())


def test_a_bundle_that_fails_to_load_leaves_assistance_off(tmp_path, puzzle_dir, capsys):
    store, _ = puzzle_store(tmp_path, puzzle_dir)
    assistant = Assistant.start(store, puzzle_dir, str(tmp_path / "no-bundle"))
    assert assistant.status["state"] == "failed" and "no such model bundle directory" in assistant.status["message"]
    assert "model assistance off" in capsys.readouterr().err
    assert assistant.snapshot(0, [1])["items"] == []


def test_export_splits_by_puzzle_for_build_lmdb_and_eval_grid(tmp_path, puzzle_dir):
    store, rows = puzzle_store(tmp_path, puzzle_dir, prompts_file=puzzle_dir / "puzzles.jsonl")
    answers = key(puzzle_dir)
    for path, line in answers.items():
        store.save_puzzle("t", rows[path]["id"], answer=tiles_of(line["answer"]))
    store.change_labels("t", rows["0002.png"]["id"], add=["别的东西"], tile=1)
    store.set_skipped("t", rows["0006.png"]["id"], True)
    with pytest.raises(ClipMatchError, match="no answered puzzles"):
        export_dataset(puzzle_store(tmp_path / "empty", puzzle_dir)[0].dataset_dir, tmp_path / "none")

    out = tmp_path / "data"
    summary = export_dataset(tmp_path / "labels", out, split=(0.6, 0.2, 0.2), seed=1)
    assert summary["puzzles"] == 5 and {s: v["puzzles"] for s, v in summary["splits"].items()} == {
        "train": 3, "valid": 1, "test": 1}
    marked = sum(line["k"] for path, line in answers.items() if path != "0006.png")
    tile1 = 1 not in tiles_of(answers["0002.png"]["answer"])  # its own label makes tile 1 a new image
    assert summary["images"] == marked + tile1
    lines = {}
    for split in ("train", "valid", "test"):
        for line in read_puzzles(out / f"{split}_puzzles.jsonl"):
            lines[line.image.name] = (split, line)
            assert line.image.read_bytes() == (puzzle_dir / line.image.name).read_bytes()
            assert [[r + 1, c + 1] for r, c in zip(*np.divmod(np.flatnonzero(line.answer), 3))] \
                == answers[line.image.name]["answer"]
        images = (out / f"{split}_imgs.tsv").read_text().splitlines()
        texts = [json.loads(t) for t in (out / f"{split}_texts.jsonl").read_text().splitlines()]
        assert len(images) == summary["splits"][split]["images"]
        assert {i for t in texts for i in t["image_ids"]} == {int(line.split("\t")[0]) for line in images}
        assert {t["text"] for t in texts} <= {answers[p]["prompt"] for p in answers} | {"别的东西"}
    assert sorted(lines) == ["0001.png", "0002.png", "0003.png", "0004.png", "0005.png"]
    assert [json.loads(line)["split"] for line in (out / "puzzles.jsonl").read_text().splitlines()] == [
        lines[name][0] for name in sorted(lines)]
    with pytest.raises(ClipMatchError, match="already exists"):
        export_dataset(tmp_path / "labels", out)
    assert export_dataset(tmp_path / "labels", out, seed=1, overwrite=True)["puzzles"] == 5


def test_command_line_puzzle_options(tmp_path, capsys):
    cases = [(["annotate", "export", "d", "--out", "x", "--puzzles"], "--puzzles belong to labelling"),
             (["annotate", "imgs", "--out", "x", "--layout", "3x3"], "belong to puzzle mode: add --puzzles"),
             (["annotate", "imgs", "--out", "x", "--bundle", "b", "--no-assist"], "exclude each other")]
    for argv, message in cases:
        assert main(argv) == 2
        assert message in capsys.readouterr().err
