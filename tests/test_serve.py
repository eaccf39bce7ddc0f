"""`clip-match serve` on a real uvicorn server (a thread on an ephemeral loopback port, and once the
command in a subprocess): every endpoint against the in-process API, batching, bad input, limits,
the API key and shutdown."""
from __future__ import annotations

import base64
import http.client
import io
import json
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from unittest.mock import ANY

import numpy as np
import pytest
from PIL import Image, ImageDraw

from clip_match import cli
from clip_match.client import Client, ServiceError
from clip_match.data.formats import write_split
from clip_match.grid.solver import GridSolver
from clip_match.grid.tiles import cut_tiles, find_grid
from clip_match.index.examples import read_examples
from clip_match.index.label_index import LabelIndex
from clip_match.query import Matcher
from clip_match.serve.app import Settings, create_app
from clip_match.serve.batcher import Batcher, DeadlineExceeded, Job
from clip_match.serve.metrics import Metrics
from clip_match.serve.models import Models
from clip_match.serve.server import ServerThread
from datasets.emoji.glyphs import EmojiSet
from datasets.emoji.puzzles import make_puzzle
from datasets.emoji.screenshots import check_fonts
from test_screenshot_prompt import TEST_FONTS, header, shot

pytestmark = pytest.mark.timeout(120)

EXAMPLE = Path(__file__).resolve().parents[1] / "datasets" / "emoji" / "example" / "0001.png"
CANDIDATES = ["猫", "狗", "雨伞", "汽车", "苹果", "一只鸟", "月亮"]
KEY = "s3cret-key"


@pytest.fixture(scope="module")
def index_dir(tiny_encoder, tmp_path_factory):
    return LabelIndex.build(tiny_encoder, CANDIDATES, progress=False).save(tmp_path_factory.mktemp("serve") / "labels")


@pytest.fixture(scope="module")
def drawings_dir(tiny_encoder, tmp_path_factory, png):
    """An index that blends in layout codes (queries need the decoded images too): two candidates, each
    with a render of ink boxes as its example."""
    data = tmp_path_factory.mktemp("drawings")
    write_split(data, "train", [(i, png(_drawing(i))) for i in range(2)], [(0, "a + b", [0]), (1, "x ^ { 2 }", [1])])
    examples = read_examples(tiny_encoder, data, "train", progress=False, layouts=True)
    index = LabelIndex.build(tiny_encoder, ["a + b", "x ^ { 2 }"], examples=examples, text_weight=0.0,
                             layout_weight=0.5, progress=False)
    return index.save(data / "index")


def _drawing(number: int, scale: float = 2.0) -> Image.Image:
    """Ink boxes laid out like "a + b" (0) or a fraction (1)."""
    image = Image.new("RGB", (round(100 * scale), round(20 * scale)), "white")
    boxes = [(0, 5, 20, 15), (30, 8, 40, 12), (50, 5, 100, 15)] if number == 0 else \
        [(30, 0, 70, 8), (20, 9, 80, 11), (30, 12, 70, 20)]
    for box in boxes:
        ImageDraw.Draw(image).rectangle([round(v * scale) for v in box], fill="black")
    return image


@pytest.fixture(scope="module")
def models(tiny_bundle, index_dir, drawings_dir):
    return Models.load([("demo", None), ("tiny", tiny_bundle)], [("labels", index_dir), ("drawings", drawings_dir)],
                       device="cpu", threads=2)


@pytest.fixture(scope="module")
def demo():
    return GridSolver(device="cpu", threads=2)


@pytest.fixture(scope="module")
def tiny(tiny_bundle):
    return GridSolver(tiny_bundle, device="cpu", threads=2)


@pytest.fixture(scope="module")
def server(models):
    with ServerThread(create_app(models, Settings(max_wait_ms=300))) as running:
        yield running


@pytest.fixture(scope="module")
def limited(models):
    """Small queue, small body limit, a short deadline and an API key."""
    settings = Settings(max_queue=2, max_body=600_000, timeout=2.0, api_key=KEY)
    with ServerThread(create_app(models, settings)) as running:
        yield running


@pytest.fixture(scope="module")
def puzzles(synthetic_images):
    """(PNG bytes, prompt, k) of six puzzles, 3x3 and 2x3: synthetic tiles on a white grid."""
    made = []
    for i in range(6):
        rows, cols, side, gap = (3, 3, 96, 6) if i % 2 == 0 else (2, 3, 110, 4)
        canvas = Image.new("RGB", (cols * side + (cols - 1) * gap, rows * side + (rows - 1) * gap), "white")
        for slot, tile in enumerate(synthetic_images(rows * cols, seed=100 + i)):
            canvas.paste(tile.resize((side, side)), (slot % cols * (side + gap), slot // cols * (side + gap)))
        made.append((_png(canvas), ("雨伞", "一只猫", "月亮")[i % 3], 1 + i % 3))
    return made


@pytest.fixture(scope="module")
def emoji():
    return EmojiSet()


@pytest.fixture(scope="module")
def screenshots(emoji):
    """(PNG bytes, k) of three widget screenshots (test_screenshot_prompt's): a Chinese prompt, an English
    one ("Select all squares with burritos") and an icon."""
    fonts = check_fonts(TEST_FONTS)
    made = [shot(emoji, fonts, number, lang, icon) for number, lang, icon in ((0, "zh", False), (1, "en", False),
                                                                             (8, "zh", True))]
    return [(_png(screenshot.image), screenshot.puzzle.k) for screenshot in made]


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _call(url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """(status, headers, decoded JSON or text) of one raw request."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request(method, path, body, headers or {})
        response = connection.getresponse()
        data = response.read().decode()
        kind = response.getheader("content-type", "")
        return response.status, dict(response.getheaders()), json.loads(data) if "json" in kind else data
    finally:
        connection.close()


def _json(url: str, path: str, body: object, headers: dict | None = None):
    return _call(url, "POST", path, json.dumps(body, ensure_ascii=False).encode(),
                 {"Content-Type": "application/json", **(headers or {})})


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _metric(url: str, name: str, **labels: str) -> float:
    _, _, text = _call(url, "GET", "/metrics")
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(rf"{name}(?:\{{(.*)\}})? (\S+)$", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == wanted:
            return float(match.group(2))
    return 0.0


# ---- endpoints and results ----------------------------------------------------------------
def test_health_readiness_metrics_and_docs(server):
    assert _call(server.url, "GET", "/healthz")[:3:2] == (200, {"status": "ok"})
    status, _, ready = _call(server.url, "GET", "/readyz")
    assert status == 200 and ready["ready"]
    assert ready["bundles"]["tiny"]["merged"] == ["image", "text"]   # fp32 on CPU: exact when merged
    assert ready["bundles"]["demo"]["merged"] == ["image"]  # static int8 image tower; the dynamic int8 text one is not
    assert ready["indexes"] == {"labels": {"bundle": "tiny", "candidates": len(CANDIDATES)},
                                "drawings": {"bundle": "tiny", "candidates": 2}}
    status, headers, schema = _call(server.url, "GET", "/openapi.json")
    assert status == 200
    assert {"/v1/grid", "/v1/query", "/v1/embed", "/healthz", "/readyz", "/metrics"} <= set(schema["paths"])
    bodies = schema["paths"]["/v1/grid"]["post"]["requestBody"]["content"]
    assert set(bodies) == {"application/json", "multipart/form-data"}
    status, headers, page = _call(server.url, "GET", "/docs")
    assert status == 200 and "swagger" in page.lower()
    status, headers, text = _call(server.url, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert "clip_match_requests_total" in text and "clip_match_queue_depth" in text


def test_grid_answers_equal_the_in_process_solver(server, demo, tiny, puzzles, synthetic_images):
    client = Client(server.url)
    png = EXAMPLE.read_bytes()
    assert client.grid(EXAMPLE, "伞", k=2) == demo.solve(EXAMPLE, "伞", k=2)
    assert client.grid(EXAMPLE, "伞", k=2).coordinates == [[1, 3], [3, 2]]
    assert client.grid(png, "伞") == demo.solve(png, "伞")                                    # calibrated rule
    assert client.grid(png, "伞", threshold=0.3, zero_based=True) \
        == demo.solve(png, "伞", threshold=0.3, zero_based=True)
    for puzzle, prompt, k in puzzles[:2]:
        assert client.grid(puzzle, prompt, k=k) == demo.solve(puzzle, prompt, k=k)
    image = Image.open(io.BytesIO(png))
    tiles = cut_tiles(image, find_grid(image))
    example = synthetic_images(1, seed=5)[0]
    assert client.grid(tiles, example, layout="3x3", bundle="tiny") == tiny.solve(tiles, example, layout="3x3")
    # JSON with base64 images: the fields of `clip-match grid --json`
    status, _, answer = _json(server.url, "/v1/grid",
                              {"image": "data:image/png;base64," + _b64(png), "text": "伞", "k": 2})
    assert status == 200 and answer == {**demo.solve(png, "伞", k=2).to_dict(), "warnings": []}
    status, _, answer = _json(server.url, "/v1/grid", {"tiles": [_b64(_png(tile)) for tile in tiles],
                                                       "example": _b64(_png(example)), "bundle": "tiny", "k": 3})
    assert status == 200 and answer == {**tiny.solve([_png(t) for t in tiles], _png(example), k=3).to_dict(),
                                        "warnings": []}


def test_grid_reads_the_prompt_as_the_solver_does(server, demo, tiny, screenshots):
    client = Client(server.url)
    with ThreadPoolExecutor(len(screenshots)) as pool:   # (read at once on the server's pool)
        answers = list(pool.map(lambda case: client.grid(case[0], k=case[1], bundle="tiny"), screenshots))
    assert answers == [tiny.solve(png, k=k) for png, k in screenshots]
    assert [answer.prompt_source for answer in answers] == ["ocr-text", "ocr-text", "header-icon"]
    png, k = screenshots[1]
    assert answers[1].prompt == "burrito" and client.grid(png) == demo.solve(png)   # (k unknown; int8 unmerged)
    pattern = r"squares with (?P<target>\w+)"
    assert client.grid(png, prompt_pattern=pattern, bundle="tiny") == tiny.solve(png, prompt_pattern=pattern)
    status, _, answer = _json(server.url, "/v1/grid", {"image": _b64(png), "k": k, "prompt_pattern": pattern})
    assert status == 200 and answer == {**demo.solve(png, k=k, prompt_pattern=pattern).to_dict(), "warnings": []}
    assert answer["prompt"] == "burritos"   # (the group as written)


def test_prompts_that_cannot_be_read_are_json_errors_naming_the_field(server, tiny, emoji, screenshots):
    bare = make_puzzle(emoji, np.random.default_rng(3), "3x3", "noto").image
    odd = _b64(_png(header("Hello there, friend", bare)))
    for body, message in (({"image": odd}, "read the prompt 'Hello there, friend' but no template found its target"),
                          ({"image": odd, "prompt_pattern": r"click (?P<target>\w+)"}, "the --prompt-pattern found")):
        status, headers, answer = _json(server.url, "/v1/grid", {**body, "bundle": "tiny"})
        assert (status, answer["field"]) == (400, "image") and message in answer["error"], answer
        assert set(answer) == {"error", "field", "request_id"}
    slow = _b64(_png(header("Please select all of the squares with burritos", bare)))  # (backtracks without end)
    status, _, answer = _json(server.url, "/v1/grid", {"image": slow, "bundle": "tiny",
                                                       "prompt_pattern": r"^(?P<target>(.|.|..)*)\d$"})
    assert (status, answer["field"]) == (400, "prompt_pattern") and "gave no answer within 0.1 s" in answer["error"]
    png, k = screenshots[0]
    assert Client(server.url).grid(png, k=k, bundle="tiny") == tiny.solve(png, k=k)   # still serving


def test_warnings_reach_the_client(server, tiny, index_dir, synthetic_images):
    long = "一把收起来的黑色雨伞" * 4
    with pytest.warns(UserWarning, match="the prompt exceeds the context length") as issued:
        expected = tiny.solve(PNG, long, k=2)
    status, _, answer = _json(server.url, "/v1/grid", {"image": _b64(PNG), "text": long, "k": 2, "bundle": "tiny"})
    assert status == 200 and answer == {**expected.to_dict(), "warnings": [str(issued[0].message)]}
    client = Client(server.url)
    with pytest.warns(UserWarning, match="the prompt exceeds the context length"):
        assert client.grid(PNG, long, k=2, bundle="tiny") == expected
    image = _png(synthetic_images(1, seed=7)[0])
    status, _, answer = _json(server.url, "/v1/query", {"images": [_b64(image)], "index": "labels", "top_k": 50})
    assert status == 200 and answer["warnings"] == [f"top_k 50 is more than the {len(CANDIDATES)} candidates; "
                                                    f"showing {len(CANDIDATES)}"]
    with pytest.warns(UserWarning, match="top_k 50 is more than"):
        assert client.query(image, "labels", top_k=50) == Matcher(tiny.encoder, index_dir).rank(image, top_k=50)


def test_query_rankings_equal_the_matcher(server, tiny, index_dir, drawings_dir, synthetic_images):
    images = [_png(image) for image in synthetic_images(5, seed=11)]
    expected = Matcher(tiny.encoder, index_dir).rank(images, top_k=3)
    client = Client(server.url)
    assert client.query(images, "labels", top_k=3) == expected
    drawings = [_drawing(0, 1.4), _drawing(1, 3.0)]
    with pytest.warns(UserWarning, match="top_k 5 is more than the 2 candidates; showing 2"):
        assert client.query(drawings, "drawings") == Matcher(tiny.encoder, drawings_dir).rank(drawings)
    with pytest.raises(ServiceError) as refused:   # a blank image has no layout code
        client.query([drawings[0], Image.new("RGB", (60, 20), "white")], "drawings")
    assert (refused.value.status, refused.value.field) == (400, "images") and "images[1]" in str(refused.value)
    status, _, answer = _json(server.url, "/v1/query", {"images": [_b64(image) for image in images], "index": "labels",
                                                        "top_k": 3})
    assert status == 200 and len(answer["rankings"]) == 5 and answer["warnings"] == []
    line = answer["rankings"][2]   # the fields of one `clip-match query --json` line
    assert set(line) == {"image", "results", "softmax"} and line["image"] == "images[2]"
    assert line["results"] == [vars(hit) for hit in expected[2].hits]
    assert line["softmax"] == {"scope": expected[2].softmax_scope, "over": expected[2].softmax_over}


def test_embed_equals_the_encoder(server, demo, tiny, synthetic_images):
    client = Client(server.url)
    pictures = synthetic_images(4, seed=3)
    texts = ["一只猫", "a dog on the grass", "雨伞"]
    for solver, bundle in ((demo, "demo"), (tiny, "tiny")):
        encoder = solver.encoder
        assert np.array_equal(client.embed(texts=texts, bundle=bundle), encoder.encode_texts(texts))
        assert np.array_equal(client.embed(images=pictures, bundle=bundle), encoder.encode_images(pictures))
    modes = [pictures[0].convert("RGBA"), pictures[1].convert("P"), pictures[2].convert("L"), pictures[3].convert("1"),
             pictures[0].convert("CMYK")]   # (resized in their own mode, as cn_clip does; CMYK travels as TIFF)
    assert np.array_equal(client.embed(images=modes), demo.encoder.encode_images(modes))
    array = np.asarray(pictures[0])
    assert np.array_equal(client.embed(images=array, bundle="demo"), demo.encoder.encode_images(array))
    assert np.array_equal(client.embed(images=[EXAMPLE]), demo.encoder.encode_images([EXAMPLE]))
    status, _, answer = _json(server.url, "/v1/embed", {"texts": texts})
    assert status == 200 and answer["bundle"] == "demo" and answer["dim"] == demo.encoder.embed_dim
    assert np.array_equal(np.asarray(answer["vectors"], np.float32), demo.encoder.encode_texts(texts))


def test_concurrent_requests_share_encoder_calls(server, tiny, puzzles):
    labels = {"bundle": "tiny", "tower": "image"}
    calls = _metric(server.url, "clip_match_encoder_batch_requests_count", **labels)
    requests = _metric(server.url, "clip_match_encoder_batch_requests_sum", **labels)
    client = Client(server.url)
    cases = puzzles * 2
    with ThreadPoolExecutor(len(cases)) as pool:
        answers = list(pool.map(lambda case: client.grid(case[0], case[1], k=case[2], bundle="tiny"), cases))
    assert answers == [tiny.solve(png, prompt, k=k) for png, prompt, k in cases]   # merged, still exact
    calls = _metric(server.url, "clip_match_encoder_batch_requests_count", **labels) - calls
    requests = _metric(server.url, "clip_match_encoder_batch_requests_sum", **labels) - requests
    assert requests == len(cases) and calls < len(cases), (calls, requests)
    assert _metric(server.url, "clip_match_encoder_batch_inputs_bucket", le="8.0", **labels) \
        < _metric(server.url, "clip_match_encoder_batch_inputs_count", **labels)   # calls with more than 8 tiles


# ---- bad input ----------------------------------------------------------------------------
def _form(fields: dict, files: dict) -> tuple[bytes, dict]:
    boundary = "b0undary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    for name, data in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="f.png"\r\n'
                     "Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n")
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), headers


def _bomb(side: int = 30000) -> bytes:
    """A PNG header claiming ``side`` x ``side`` pixels (by default 900 M, ten times Pillow's limit)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


PNG = EXAMPLE.read_bytes()
BAD = [  # (what, path, JSON body or (form fields, files), status, field)
    ("not an image", "/v1/grid", ({"text": "伞"}, {"image": b"hello, not a picture"}), 400, "image"),
    ("truncated image", "/v1/grid", ({"text": "伞"}, {"image": PNG[: len(PNG) // 2]}), 400, "image"),
    ("decompression bomb", "/v1/grid", ({"text": "伞"}, {"image": _bomb()}), 400, "image"),
    ("a bomb Pillow only warns of", "/v1/grid", ({"text": "伞"}, {"image": _bomb(10000)}), 400, "image"),  # (100 M)
    ("a bad tile", "/v1/grid", {"tiles": [_b64(PNG)] * 8 + [_b64(b"junk")], "text": "伞"}, 400, "tiles"),
    ("a bad query image", "/v1/query", {"images": [_b64(PNG), _b64(b"junk")], "index": "labels"}, 400, "images[1]"),
    ("bad example", "/v1/grid", ({}, {"image": PNG, "example": b"\x89PNG\r\n\x1a\n"}), 400, "example"),
    ("malformed JSON", "/v1/grid", b'{"text": "\xe4", ', 422, "body"),
    ("JSON not an object", "/v1/embed", b'["a"]', 422, "body"),
    ("JSON nested too deep", "/v1/embed", b'{"texts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 422, "body"),
    ("a field named by a lone surrogate", "/v1/embed", b'{"texts": ["a"], "\\ud800": 1}', 422, "body"),
    ("malformed multipart", "/v1/grid", (b"--b0undary\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b0undary--\r\n",
                                         {"Content-Type": "multipart/form-data; boundary=b0undary"}), 422, "body"),
    ("k not an integer", "/v1/grid", {"image": _b64(PNG), "text": "伞", "k": "2"}, 422, "k"),
    ("k a boolean", "/v1/grid", {"image": _b64(PNG), "text": "伞", "k": True}, 422, "k"),
    ("k not a number in a form", "/v1/grid", ({"text": "伞", "k": "two"}, {"image": PNG}), 422, "k"),
    ("texts not a list", "/v1/embed", {"texts": "猫"}, 422, "texts"),
    ("image not base64", "/v1/grid", {"image": "not base64!", "text": "伞"}, 422, "image"),
    ("image missing", "/v1/grid", {"text": "伞"}, 422, "image"),
    ("no prompt to read", "/v1/grid", {"image": _b64(PNG)}, 400, "image"),   # (a bare puzzle: no bars around it)
    ("tiles and no prompt", "/v1/grid", {"tiles": [_b64(PNG)] * 9}, 422, "text"),
    ("pattern not a regex", "/v1/grid", {"image": _b64(PNG), "prompt_pattern": "(nope"}, 400, "prompt_pattern"),
    ("pattern without a group", "/v1/grid", {"image": _b64(PNG), "prompt_pattern": "x(.+)"}, 400, "prompt_pattern"),
    ("pattern not a string", "/v1/grid", {"image": _b64(PNG), "prompt_pattern": 3}, 422, "prompt_pattern"),
    ("pattern with a text", "/v1/grid", {"image": _b64(PNG), "text": "伞", "prompt_pattern": "(?P<t>.+)"}, 422,
     "prompt_pattern"),
    ("text and example", "/v1/grid", {"image": _b64(PNG), "text": "伞", "example": _b64(PNG)}, 422, "text"),
    ("k and threshold", "/v1/grid", {"image": _b64(PNG), "text": "伞", "k": 2, "threshold": 0.2}, 422, "threshold"),
    ("index missing", "/v1/query", {"images": [_b64(PNG)]}, 422, "index"),
    ("images missing", "/v1/query", {"index": "labels"}, 422, "images"),
    ("nothing to embed", "/v1/embed", {}, 422, "images"),
    ("unknown field", "/v1/query", {"images": [_b64(PNG)], "index": "labels", "top-k": 3}, 422, "top-k"),
    ("file as a plain field", "/v1/grid", ({"image": "x", "text": "伞"}, {}), 422, "image"),
    ("unknown bundle", "/v1/grid", {"image": _b64(PNG), "text": "伞", "bundle": "rn50"}, 404, "bundle"),
    ("unknown index", "/v1/query", {"images": [_b64(PNG)], "index": "formulas"}, 404, "index"),
    ("index of another model", "/v1/query", {"images": [_b64(PNG)], "index": "labels", "bundle": "demo"}, 400,
     "bundle"),
    ("layout out of range", "/v1/grid", {"image": _b64(PNG), "text": "伞", "layout": "4x4"}, 400, "layout"),
    ("tiles against layout", "/v1/grid", {"tiles": [_b64(PNG)] * 6, "text": "伞", "layout": "3x3"}, 400, "layout"),
    ("five tiles", "/v1/grid", {"tiles": [_b64(PNG)] * 5, "text": "伞"}, 400, "tiles"),
    ("k zero", "/v1/grid", {"image": _b64(PNG), "text": "伞", "k": 0}, 400, "k"),
    ("k over the tiles", "/v1/grid", {"image": _b64(PNG), "text": "伞", "k": 10}, 400, "k"),
    ("threshold out of range", "/v1/grid", ({"text": "伞", "threshold": "1.5"}, {"image": PNG}), 400, "threshold"),
    ("empty prompt", "/v1/grid", {"image": _b64(PNG), "text": " \u200b "}, 400, "text"),
    ("top_k zero", "/v1/query", {"images": [_b64(PNG)], "index": "labels", "top_k": 0}, 400, "top_k"),
    ("top_k too large", "/v1/query", {"images": [_b64(PNG)], "index": "labels", "top_k": 10**6}, 400, "top_k"),
    ("too many texts", "/v1/embed", {"texts": ["猫"] * 257}, 400, "texts"),
    ("not JSON or a form", "/v1/embed", (b"texts=cat", {"Content-Type": "text/plain"}), 415, "content-type"),
]


@pytest.mark.parametrize("what, path, body, status, field", BAD, ids=[case[0] for case in BAD])
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")   # (Pillow's own, for the 100 M bomb)
def test_bad_input_gets_a_json_error_naming_the_field(server, what, path, body, status, field):
    if isinstance(body, dict):
        got, headers, answer = _json(server.url, path, body)
    elif isinstance(body, bytes):
        got, headers, answer = _call(server.url, "POST", path, body, {"Content-Type": "application/json"})
    elif isinstance(body[0], bytes):
        got, headers, answer = _call(server.url, "POST", path, *body)
    else:
        got, headers, answer = _call(server.url, "POST", path, *_form(*body))
    assert (got, answer["field"]) == (status, field), answer
    assert set(answer) == {"error", "field", "request_id"} and answer["request_id"] == headers["x-request-id"]
    assert "Traceback" not in answer["error"] and "File \"" not in answer["error"]


def test_refusals_are_logged_with_the_request_and_the_server_keeps_serving(server, demo, caplog):
    caplog.set_level("INFO", logger="clip_match.serve")
    status, _, answer = _json(server.url, "/v1/grid", {"image": _b64(b"junk"), "text": "伞"})
    assert status == 400 and answer["error"] == "puzzle image: not an image (unrecognised format)"
    logged = [record.getMessage() for record in caplog.records]
    assert any(answer["request_id"] in line and "-> 400" in line for line in logged), logged
    status, _, answer = _call(server.url, "GET", "/v1/nothing")
    assert status == 404 and answer["field"] is None
    assert Client(server.url).grid(EXAMPLE, "伞", k=2) == demo.solve(EXAMPLE, "伞", k=2)


# ---- limits, the queue, the API key -------------------------------------------------------
def _slow_request(url: str, path: str = "/v1/embed") -> socket.socket:
    """A request whose body never finishes arriving."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Type: application/json\r\n"
                 "Content-Length: 1000\r\n\r\n{\"te".encode())
    return sock


def _answer_of(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_api_key_is_required_on_v1_only(limited, demo):
    status, headers, answer = _json(limited.url, "/v1/embed", {"texts": ["猫"]})
    assert (status, answer["field"], headers["www-authenticate"]) == (401, "authorization", "Bearer")
    assert _json(limited.url, "/v1/embed", {"texts": ["猫"]}, {"Authorization": "Bearer wrong"})[0] == 401
    assert _json(limited.url, "/v1/embed", {"texts": ["猫"]}, {"X-API-Key": KEY[:-1]})[0] == 401
    assert _json(limited.url, "/v1/embed", {"texts": ["猫"]}, {"X-API-Key": KEY})[0] == 200
    with pytest.raises(ServiceError) as refused:
        Client(limited.url, api_key="nope").embed(texts=["猫"])
    assert refused.value.status == 401
    assert Client(limited.url, api_key=KEY).grid(EXAMPLE, "伞", k=2) == demo.solve(EXAMPLE, "伞", k=2)
    for path in ("/healthz", "/readyz", "/metrics"):
        assert _call(limited.url, "GET", path)[0] == 200


def test_a_body_over_the_limit_is_413(limited):
    body, headers = _form({"text": "伞"}, {"image": b"\0" * 700_000})   # read through, then refused
    status, _, answer = _call(limited.url, "POST", "/v1/grid", body, {**headers, "X-API-Key": KEY})
    assert (status, answer["field"]) == (413, "body")
    host, port = limited.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:   # far over: refused before any body
        sock.sendall(f"POST /v1/embed HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Type: application/json\r\n"
                     "Content-Length: 100000000\r\n\r\n".encode())
        assert _answer_of(sock) == (413, {"error": answer["error"], "field": "body", "request_id": ANY})


def test_a_slow_body_times_out_and_frees_its_place(limited):
    started = time.monotonic()
    sock = _slow_request(limited.url)
    with sock:
        status, answer = _answer_of(sock)
    assert (status, answer["field"]) == (408, "body") and 1.5 < time.monotonic() - started < 10
    assert _json(limited.url, "/v1/embed", {"texts": ["猫"]}, {"X-API-Key": KEY})[0] == 200


def test_a_full_queue_answers_503_with_retry_after(limited, demo, puzzles):
    slow = [_slow_request(limited.url), _slow_request(limited.url)]   # both admitted, bodies never complete
    for _ in range(500):
        if _metric(limited.url, "clip_match_requests_in_flight") == 2:
            break
        time.sleep(0.01)
    client = Client(limited.url, api_key=KEY)
    with pytest.raises(ServiceError) as refused:
        client.embed(texts=["猫"])
    assert (refused.value.status, refused.value.retry_after) == (503, 1.0)
    for sock in slow:
        with sock:
            assert _answer_of(sock)[0] == 408
    # many at once: each answered or refused with 503, nothing else
    outcomes = []

    def one(case):
        try:
            outcomes.append(client.grid(case[0], case[1], k=case[2]) == demo.solve(case[0], case[1], k=case[2]))
        except ServiceError as error:
            outcomes.append(error.status)

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(one, puzzles * 2))
    assert set(outcomes) <= {True, 503} and True in outcomes, outcomes
    assert client.embed(texts=["猫"]).shape == (1, demo.encoder.embed_dim)


# ---- the batcher, shutdown and the command ------------------------------------------------
class _Recorder:
    """An encoder that records its calls: each text's vector is its length."""

    def __init__(self):
        self.calls: list[int] = []

    def encode_texts(self, texts, batch_size=256):
        self.calls.append(len(texts))
        return np.array([[float(len(text))] for text in texts], np.float32)

    encode_images = encode_texts


def test_batcher_merges_waits_for_preparing_requests_and_drops_late_jobs():
    encoder = _Recorder()
    batcher = Batcher("b", encoder, {"image": True, "text": True}, max_batch=4, max_wait=5.0, metrics=Metrics())
    batcher.start()
    far = time.monotonic() + 60
    with batcher.preparing():               # one more request is on its way: the first job waits for it
        first = batcher.submit(Job("text", ["a", "bb"], 256, far))
        time.sleep(0.05)
        second = batcher.submit(Job("text", ["ccc"], 256, far))
    assert first.result(5).ravel().tolist() == [1.0, 2.0] and second.result(5).ravel().tolist() == [3.0]
    assert encoder.calls == [3]
    late = batcher.submit(Job("text", ["x"], 256, time.monotonic() - 1))
    with pytest.raises(DeadlineExceeded):
        late.result(5)
    big = batcher.submit(Job("text", ["a"] * 6, 256, far))       # over max_batch: alone, with its own batch size
    assert big.result(5).shape == (6, 1)
    cancelled = Future()
    cancelled.cancel()
    batcher.submit(Job("text", ["y"], 256, far, future=cancelled))
    batcher.close(5)
    assert encoder.calls == [3, 6] and not batcher.alive


def test_thread_server_stops_cleanly(models):
    app = create_app(models, Settings())
    server = ServerThread(app).start()
    assert Client(server.url).embed(texts=["猫"]).shape[0] == 1
    server.stop()
    assert not any(batcher.alive for batcher in app.state.service.batchers.values())
    with pytest.raises(ServiceError):
        Client(server.url, timeout=2).embed(texts=["猫"])


def test_command_serves_and_stops_on_sigterm(tiny_bundle, tiny):
    process = subprocess.Popen([sys.executable, "-m", "clip_match.cli", "serve", "--port", "0", "--threads", "1",
                                "--bundle", f"tiny={tiny_bundle}"], stderr=subprocess.PIPE, text=True)
    try:
        url = None
        for line in process.stderr:
            found = re.search(r"listening on (http://\S+)", line)
            if found:
                url = found.group(1)
                break
        assert url, "the command did not start"
        client = Client(url)
        assert np.array_equal(client.embed(texts=["猫"]), tiny.encoder.encode_texts(["猫"]))
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        rest = process.stderr.read()
        assert "stopped (SIGTERM)" in rest and "Traceback" not in rest, rest
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()


@pytest.mark.parametrize("arguments, message", [
    (["--bundle", "x=/no/such/bundle"], "/no/such/bundle"),
    (["--bundle", "a=/x", "--bundle", "a=/y"], "given twice"),
    (["--max-batch", "0"], "--max-batch must be at least 1"),
    (["--providers", "tpu"], "--providers"),
    (["--api-key-file", "/no/such/key"], "cannot read the API key"),
])
def test_command_errors_are_one_line(arguments, message, capsys):
    assert cli.main(["serve", "--port", "0", *arguments]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1, error


def test_an_index_needs_a_bundle_of_its_model(index_dir, capsys):
    assert cli.main(["serve", "--port", "0", "--index", f"labels={index_dir}"]) == 2
    assert "which no served bundle has" in capsys.readouterr().err
