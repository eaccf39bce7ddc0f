"""The annotation tool in a real browser (Debian Chromium driven by Playwright).

One test walks the whole flow of issue 7: label five images by keyboard (typed labels, a label
picked from autocomplete, a number hotkey, several labels on one image), undo, rename, filter,
skip, crash the server (SIGKILL), start it again and land on the first unlabelled image, export,
`build-lmdb` the export and `inspect` it; the page's screenshot goes to artifacts/annotate.png.
Another has two tabs work on one image at once; the last measures how fast the next image shows
after Enter on 2,000 images.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import pytest
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from test_annotate_helpers import REPO, ServerProcess, call_json, make_images

pytestmark = pytest.mark.browser
expect.set_options(timeout=15_000)  # a busy 2-core machine; the other tab's changes arrive by a 3 s poll

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO / "artifacts"


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} missing: run scripts/ensure_test_tools.sh")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]")
    return page


def wait_until(condition, timeout: float = 10.0) -> None:
    """Poll ``condition`` (the page's CSP forbids Playwright's string predicates)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def labels_on_server(url: str) -> dict[str, list[str]]:
    return {img["path"]: img["labels"] for img in call_json(url, "GET", "/api/state")["images"]}


def clip_match(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clip_match.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_label_undo_crash_resume_export_build_inspect(browser, tmp_path):
    image_dir, dataset_dir = tmp_path / "images", tmp_path / "labels"
    make_images(image_dir, 8)
    (image_dir / "notes.txt").write_text("not an image")
    server = ServerProcess(image_dir, dataset_dir, tmp_path / "server1.log")
    try:
        page = open_page(browser, server.url)
        path = page.locator("#path")
        keys = page.keyboard
        expect(path).to_have_text("img0.jpg")
        expect(page.locator("#reject-count")).to_have_text("1")

        keys.type("猫")                                  # img0: a typed Chinese label
        keys.press("Enter")
        expect(path).to_have_text("img1.jpg")
        keys.type("dog")                                 # img1: a typed English label
        keys.press("Enter")
        keys.type("o")                                   # img2: "dog" remembered, picked from autocomplete
        expect(page.locator("#suggestions li")).to_have_text(["dog"])
        keys.press("ArrowDown")
        keys.press("Enter")
        expect(path).to_have_text("img3.jpg")
        expect(page.locator("#hotkeys li").first).to_have_text("dog (2)")
        keys.press("1")                                  # img3: hotkey 1 = the most used label
        expect(page.locator("#current-labels .chip")).to_have_text(["dog ×"])
        keys.press("Enter")
        keys.type("bird")                                # img4: two labels
        keys.press("Shift+Enter")
        keys.type("猫")
        keys.press("Enter")
        expect(path).to_have_text("img5.jpg")

        keys.press("Control+z")                          # undo the last action: "猫" on img4
        expect(path).to_have_text("img4.jpg")
        expect(page.locator("#status")).to_contain_text("undid +猫")
        expect(page.locator("#current-labels .chip")).to_have_text(["bird ×"])

        page.once("dialog", lambda dialog: dialog.accept("鸟"))  # rename a label everywhere
        page.locator("#label-list li", has_text="bird").locator("button.edit").click()
        expect(page.locator("#current-labels .chip")).to_have_text(["鸟 ×"])
        expect(page.locator("#progress-text")).to_contain_text("5 / 8 done")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "annotate.png"))

        page.select_option("#filter", "todo")            # only unlabelled images: img4 -> img5
        expect(path).to_have_text("img5.jpg")
        keys.press("Escape")                             # leave the field; S skips img5
        keys.press("s")
        expect(path).to_have_text("img6.jpg")
        expected = {"img0.jpg": ["猫"], "img1.jpg": ["dog"], "img2.jpg": ["dog"], "img3.jpg": ["dog"],
                    "img4.jpg": ["鸟"]}
        wait_until(lambda: call_json(server.url, "GET", "/api/state")["images"][5]["skipped"])
        assert {k: v for k, v in labels_on_server(server.url).items() if v} == expected
        page.close()
    finally:
        server.kill()                                    # a crash, not a clean stop

    server = ServerProcess(image_dir, dataset_dir, tmp_path / "server2.log")
    try:
        page = open_page(browser, server.url)
        expect(page.locator("#path")).to_have_text("img6.jpg")  # the first image neither labelled nor skipped
        expect(page.locator("#progress-text")).to_contain_text("6 / 8 done · 5 labelled · 1 skipped")
        assert {k: v for k, v in labels_on_server(server.url).items() if v} == expected
        page.close()
    finally:
        server.kill()

    data_dir = tmp_path / "data"
    export = clip_match("annotate", "export", str(dataset_dir), "--out", str(data_dir), "--split", "0.6,0.2,0.2",
                        "--seed", "3")
    assert export.returncode == 0, export.stderr
    assert json.loads(export.stdout)["images"] == 5
    per_label: dict[str, int] = {}
    for split in ("train", "valid", "test"):
        lines = [json.loads(line) for line in (data_dir / f"{split}_texts.jsonl").read_text("utf-8").splitlines()]
        assert len({line["text"] for line in lines}) == len(lines)  # one line per label, with all its images
        for line in lines:
            per_label[line["text"]] = per_label.get(line["text"], 0) + len(line["image_ids"])
    assert per_label == {"dog": 3, "猫": 1, "鸟": 1}

    build = clip_match("build-lmdb", str(data_dir))
    assert build.returncode == 0, build.stderr
    inspect = clip_match("inspect", str(data_dir / "lmdb"), "--samples", "10")
    assert inspect.returncode == 0, inspect.stderr
    for label in ("dog", "猫", "鸟"):
        assert label in inspect.stdout


def test_two_tabs_share_state_and_undo_only_their_own(browser, tmp_path):
    make_images(tmp_path / "images", 3)
    server = ServerProcess(tmp_path / "images", tmp_path / "labels", tmp_path / "server.log")
    try:
        first, second = open_page(browser, server.url), open_page(browser, server.url)
        first.keyboard.type("sky")
        first.keyboard.press("Enter")
        second.keyboard.type("sea")
        second.keyboard.press("Shift+Enter")              # same image, at the same time
        expect(second.locator("#current-labels .chip")).to_have_text(["sea ×", "sky ×"])  # the other tab's poll
        first.keyboard.press("ArrowLeft")
        expect(first.locator("#current-labels .chip")).to_have_text(["sea ×", "sky ×"])
        second.keyboard.press("Control+z")                 # undoes "sea" (its own), not "sky"
        expect(second.locator("#current-labels .chip")).to_have_text(["sky ×"])
        second.keyboard.press("Control+z")
        expect(second.locator("#status")).to_have_text("nothing to undo in this tab")
        assert labels_on_server(server.url) == {"img0.jpg": ["sky"], "img1.jpg": [], "img2.jpg": []}
        first.close()
        second.close()
    finally:
        server.kill()


@pytest.mark.slow
def test_next_image_is_shown_fast_on_2000_images(browser, tmp_path):
    image_dir = tmp_path / "images"
    make_images(image_dir, 2000, size=(640, 480))
    server = ServerProcess(image_dir, tmp_path / "labels", tmp_path / "server.log")
    try:
        page = open_page(browser, server.url)
        rounds = 60
        for i in range(rounds):
            if i % 3 == 2:
                page.keyboard.press("1")             # a hotkey, then Enter
            else:
                page.keyboard.type(f"label {i % 5}")
            page.keyboard.press("Enter")
            wait_until(lambda: page.evaluate("window.clipMatchAnnotate.timings.length") > i)
        timings = page.evaluate("window.clipMatchAnnotate.timings")
        expect(page.locator("#path")).to_have_text(f"img{rounds}.jpg")
        page.close()
    finally:
        server.kill()
    timings = sorted(timings)
    median = statistics.median(timings)
    p95 = timings[int(0.95 * (len(timings) - 1))]
    print(f"\nnext image shown after Enter, 2000 images, {len(timings)} presses: "
          f"median {median:.1f} ms, p95 {p95:.1f} ms, max {timings[-1]:.1f} ms")
    assert p95 < 100, timings


# ---- puzzle mode and model assistance (issue 31) ----------------------------------------------


def marked_tiles(page) -> list[int]:
    return [int(n) for n in page.locator(".tile.marked").evaluate_all("tiles => tiles.map(t => t.dataset.tile)")]


def puzzle_state(page) -> dict:
    return page.evaluate("window.clipMatchAnnotate.puzzle()")


def answer_key(folder) -> dict[str, dict]:
    lines = [json.loads(line) for line in (folder / "puzzles.jsonl").read_text("utf-8").splitlines()]
    return {line["image"]: {**line, "tiles": sorted((r - 1) * 3 + c for r, c in line["answer"])} for line in lines}


def correct_by_keys(page, wanted: list[int]) -> None:
    """Press the number of every tile whose mark differs from ``wanted``, then check the page agrees."""
    for tile in sorted(set(marked_tiles(page)) ^ set(wanted)):
        page.keyboard.press(str(tile))
    expect(page.locator(".tile.marked")).to_have_count(len(wanted))
    assert marked_tiles(page) == wanted


def test_puzzle_mode_end_to_end(browser, tmp_path):
    from datasets.emoji.puzzles import write_puzzles

    puzzles, dataset_dir = write_puzzles(tmp_path / "puzzles", 4, seed=11), tmp_path / "labels"
    key = answer_key(puzzles)
    prompts = tmp_path / "prompts.jsonl"   # puzzle 4's prompt is left to the annotator
    prompts.write_text("".join(json.dumps({"image": f"puzzles/{name}", "prompt": line["prompt"]}, ensure_ascii=False)
                               + "\n" for name, line in key.items() if name != "0004.png"), "utf-8")
    Image.new("RGB", (10, 10), "white").save(puzzles / "tiny.png")   # no grid: listed as skipped
    options = ("--puzzles", "--prompts", str(prompts))
    server = ServerProcess(puzzles, dataset_dir, tmp_path / "server1.log", *options)
    try:
        page = open_page(browser, server.url)
        expect(page.locator("#path")).to_have_text("0001.png")
        expect(page.locator("#reject-count")).to_have_text("2")                # tiny.png, and puzzles.jsonl here
        expect(page.locator(".tile")).to_have_count(6)                       # 2x3, cut at its gap lines
        wait_until(lambda: puzzle_state(page)["source"] == "model", 60)        # the model's pick, pre-marked
        model = call_json(server.url, "GET", "/api/suggestions?since=0")["items"]
        assert marked_tiles(page) == next(item["selected"] for item in model if item["id"] == 1)
        expect(page.locator("#current-labels .prompt")).to_have_text(f"prompt: {key['0001.png']['prompt']}")

        wrong = next(n for n in range(1, 7) if n not in key["0001.png"]["tiles"])
        before = set(marked_tiles(page))
        page.locator(f'.tile[data-tile="{wrong}"]').click()                 # a click toggles a tile ...
        assert set(marked_tiles(page)) == before ^ {wrong}
        page.keyboard.press(str(wrong))                                      # ... and so does its number
        assert set(marked_tiles(page)) == before
        correct_by_keys(page, key["0001.png"]["tiles"])
        page.keyboard.press("Enter")                                         # saves, next puzzle
        expect(page.locator("#path")).to_have_text("0002.png")
        expect(page.locator(".tile")).to_have_count(9)

        page.keyboard.press("Shift+Digit9")                                  # tile 9's own label
        expect(page.locator(".tile.labelling")).to_have_count(1)
        page.keyboard.type("别的东西")
        page.keyboard.press("Enter")
        expect(page.locator('.tile[data-tile="9"] .chip')).to_have_text(["别的东西 ×"])
        wait_until(lambda: puzzle_state(page)["source"] in ("model", "touched"), 60)
        correct_by_keys(page, key["0002.png"]["tiles"])
        page.keyboard.press("Enter")
        expect(page.locator("#path")).to_have_text("0003.png")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "annotate_puzzles.png"))
        wait_until(lambda: all(row["puzzle"]["answer"] for row in call_json(server.url, "GET", "/api/state")["images"][:2]))
        page.close()
    finally:
        server.kill()                                                        # a crash, not a clean stop

    server = ServerProcess(puzzles, dataset_dir, tmp_path / "server2.log", *options)
    try:
        page = open_page(browser, server.url)
        expect(page.locator("#path")).to_have_text("0003.png")              # the first unanswered puzzle
        expect(page.locator("#progress-text")).to_contain_text("2 / 4 done · 2 answered")
        page.keyboard.press("Control+z")                                     # a new tab has nothing of its own
        expect(page.locator("#status")).to_have_text("nothing to undo in this tab")
        wait_until(lambda: puzzle_state(page)["source"] == "model", 60)
        correct_by_keys(page, key["0003.png"]["tiles"])
        page.keyboard.press("Enter")
        expect(page.locator("#path")).to_have_text("0004.png")
        expect(page.locator("#current-labels .prompt")).to_have_text("no prompt yet: type it below")
        page.keyboard.press("Enter")                                         # nothing to save without a prompt
        expect(page.locator("#status")).to_have_text("type the prompt first (Enter sets it)")
        page.keyboard.type(key["0004.png"]["prompt"])
        page.keyboard.press("Enter")                                         # sets the prompt, stays
        expect(page.locator("#current-labels .prompt")).to_have_text(f"prompt: {key['0004.png']['prompt']}")
        wait_until(lambda: puzzle_state(page)["source"] == "model", 60)      # scored for the typed prompt
        correct_by_keys(page, key["0004.png"]["tiles"])
        page.keyboard.press("Enter")
        expect(page.locator("#progress-text")).to_contain_text("4 / 4 done · 4 answered")
        wait_until(lambda: all(row["puzzle"]["answer"] for row in call_json(server.url, "GET", "/api/state")["images"]))
        rows = {row["path"]: row["puzzle"] for row in call_json(server.url, "GET", "/api/state")["images"]}
        page.close()
    finally:
        server.kill()
    assert {path: puzzle["answer"] for path, puzzle in rows.items()} == {name: line["tiles"] for name, line in key.items()}
    assert rows["0002.png"]["tiles"] == {"9": ["别的东西"]}

    data_dir = tmp_path / "data"
    export = clip_match("annotate", "export", str(dataset_dir), "--out", str(data_dir), "--split", "0.5,0.25,0.25")
    assert export.returncode == 0, export.stderr
    assert json.loads(export.stdout)["puzzles"] == 4
    build = clip_match("build-lmdb", str(data_dir))
    assert build.returncode == 0, build.stderr
    evaluation = clip_match("eval-grid", str(data_dir / "puzzles.jsonl"), "--json")
    assert evaluation.returncode == 0, evaluation.stderr
    assert json.loads(evaluation.stdout)["puzzles"] == 4


RANKED_HERE = ("(() => { const { state, assist } = window.clipMatchAnnotate;"
               " return (assist.ranked.get(state.images[state.pos].id) || []).length; })()")


def test_image_mode_suggestions_are_ranked_by_the_model(browser, tmp_path):
    import numpy as np

    from datasets.emoji.glyphs import EmojiSet
    from datasets.emoji.render import render_tile

    emoji, names = EmojiSet(), ["猫", "狗", "雨伞", "火箭"]
    indices = [next(e.index for e in emoji.emoji if e.zh == name) for name in names]
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    order = [0, 1, 2, 3, 2, 0, 3, 1]                         # the second half in another order
    for i, which in enumerate(order):
        render_tile(emoji.sprite(indices[which], "noto"), np.random.default_rng(i)).save(image_dir / f"img{i}.png")
    server = ServerProcess(image_dir, tmp_path / "labels", tmp_path / "server.log")
    try:
        page = open_page(browser, server.url)
        for which in order[:4]:                              # label the first renderings by typing
            page.keyboard.type(names[which])
            page.keyboard.press("Enter")
        expect(page.locator("#path")).to_have_text("img4.png")
        for i, which in enumerate(order[4:], 4):
            expect(page.locator("#path")).to_have_text(f"img{i}.png")
            expect(page.locator("#assist .chip").first).to_have_text(names[which], timeout=60_000)
            wait_until(lambda: page.evaluate(RANKED_HERE) == len(names))  # ranked among all four labels
            page.keyboard.press("ArrowDown")                # empty field: the model's ranking, first highlighted
            expect(page.locator("#suggestions li").first).to_have_text(names[which])
            expect(page.locator("#suggestions li")).to_have_count(len(names))
            page.keyboard.press("Enter")
        wait_until(lambda: all(labels_on_server(server.url).values()))
        assert labels_on_server(server.url) == {f"img{i}.png": [names[which]] for i, which in enumerate(order)}
        page.close()
    finally:
        server.kill()


def test_order_uncertain_and_a_bundle_that_fails_to_load(browser, tmp_path):
    from datasets.emoji.puzzles import write_puzzles

    puzzles = write_puzzles(tmp_path / "puzzles", 8, seed=3)
    options = ("--puzzles", "--prompts", str(puzzles / "puzzles.jsonl"), "--order", "uncertain")
    server = ServerProcess(puzzles, tmp_path / "labels", tmp_path / "server.log", *options)
    try:
        wait_until(lambda: call_json(server.url, "GET", "/api/suggestions").get("pending") == 0
                   and len(call_json(server.url, "GET", "/api/suggestions")["items"]) == 8, 60)
        items = call_json(server.url, "GET", "/api/suggestions")["items"]
        by_margin = [f"{item['id']:04d}.png" for item in sorted(items, key=lambda item: (item["margin"], item["id"]))]
        page = open_page(browser, server.url)
        shown = []
        for _ in range(8):                                  # Enter walks from the least certain to the most
            wait_until(lambda: puzzle_state(page)["source"] == "model")
            shown.append(page.locator("#path").text_content())
            if not marked_tiles(page):                      # the model chose no tile: an answer needs one
                page.keyboard.press("1")
            page.keyboard.press("Enter")
        assert shown == by_margin, [item["margin"] for item in items]
        page.close()
    finally:
        server.kill()

    server = ServerProcess(puzzles, tmp_path / "labels2", tmp_path / "server2.log", "--puzzles",
                           "--bundle", str(tmp_path / "missing-bundle"))
    try:
        page = open_page(browser, server.url)
        expect(page.locator("#assist-status")).to_contain_text("model assistance off")
        expect(page.locator("#assist-status")).to_have_class("failed")
        page.close()
    finally:
        server.kill()
    assert "model assistance off" in (tmp_path / "server2.log").read_text()
