"""The annotation server's API: only IMAGE_DIR's files, only its own origin, safe under concurrent writes."""
from __future__ import annotations

import io
import json
import os
import random
import sqlite3
import threading

import pytest
from PIL import Image

from test_annotate_helpers import call, call_json, make_images, thread_server

SECRET = b"top secret, outside IMAGE_DIR"


@pytest.fixture()
def served(tmp_path):
    image_dir = tmp_path / "images"
    make_images(image_dir, 6)
    (tmp_path / "secret.txt").write_bytes(SECRET)
    (tmp_path / "secret.png").write_bytes((image_dir / "img0.jpg").read_bytes() + SECRET)
    os.symlink(tmp_path / "secret.png", image_dir / "link_out.jpg")
    os.symlink(image_dir / "img1.jpg", image_dir / "link_in.jpg")
    (image_dir / "readme.txt").write_text("notes")
    Image.new("RGB", (2400, 300), "green").save(image_dir / "wide.png")
    with thread_server(image_dir, tmp_path / "labels") as server:
        yield server, tmp_path


def ids_by_path(url: str) -> dict[str, int]:
    return {img["path"]: img["id"] for img in call_json(url, "GET", "/api/state")["images"]}


def test_files_outside_image_dir_are_never_served(served):
    server, tmp_path = served
    url = server.url
    ids = ids_by_path(url)
    assert "link_out.jpg" not in ids and "link_in.jpg" in ids  # a symlink staying inside is an image
    rejects = call_json(url, "GET", "/api/rejects")["rejects"]
    assert {"path": "link_out.jpg", "reason": "symlink pointing outside IMAGE_DIR"} in rejects
    assert {"path": "readme.txt", "reason": "not an image"} in rejects

    status, headers, body = call(url, "GET", f"/api/images/{ids['img2.jpg']}/view")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert body == (tmp_path / "images" / "img2.jpg").read_bytes()
    status, headers, body = call(url, "GET", f"/api/images/{ids['wide.png']}/view")  # large: a cached thumbnail
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(body)).size == (1600, 200)

    for path in ["/api/images/../../secret.txt", "/api/images/1/../../../secret.txt", "/static/../../secret.txt",
                 "/static/..%2f..%2fsecret.txt", "/%2e%2e/secret.txt", "/api/images/-1/view", "/api/images/1e3/view",
                 "/api/images/999/view", "/annotations.sqlite", "/static/", "/api/images/secret.txt/view"]:
        status, _, body = call(url, "GET", path)
        assert status == 404, path
        assert SECRET not in body

    # A database row naming a path outside IMAGE_DIR (e.g. a tampered or stale state) is refused.
    with sqlite3.connect(server.store.path) as conn:
        conn.execute("INSERT INTO images (path, size, mtime_ns, width, height, format) "
                     "VALUES ('../secret.png', 1, 1, 1, 1, 'PNG')")
        bad_id = conn.execute("SELECT id FROM images WHERE path = '../secret.png'").fetchone()[0]
    status, _, body = call(url, "GET", f"/api/images/{bad_id}/view")
    assert status == 403 and SECRET not in body

    # A file swapped for a symlink to outside after the scan is refused too.
    victim = tmp_path / "images" / "img3.jpg"
    victim.unlink()
    os.symlink(tmp_path / "secret.png", victim)
    status, _, body = call(url, "GET", f"/api/images/{ids['img3.jpg']}/view")
    assert status == 403 and SECRET not in body


def test_large_images_are_prepared_in_the_background(served):
    server, _ = served
    server.thumbs_dir.mkdir(parents=True, exist_ok=True)
    (server.thumbs_dir / ".9-1-1.jpg.abc.tmp").write_bytes(b"half a thumbnail")  # left by a killed run
    server.warm_thumbnails().join(60)
    wide = ids_by_path(server.url)["wide.png"]
    assert [path.name.split("-")[0] for path in server.thumbs_dir.iterdir()] == [str(wide)]


def test_other_origins_are_refused(served):
    server, _ = served
    url, port = server.url, server.server_address[1]
    image = ids_by_path(url)["img0.jpg"]
    write = f"/api/images/{image}/labels"
    refused = [
        ("GET", "/api/state", None, {"Origin": "http://evil.example"}),
        ("GET", "/api/state", None, {"Host": f"evil.example:{port}"}),        # DNS rebinding
        ("GET", "/api/state", None, {"Host": "127.0.0.1:1"}),
        ("GET", f"/api/images/{image}/view", None, {"Sec-Fetch-Site": "cross-site"}),
        ("GET", "/api/state", None, {"Sec-Fetch-Site": "same-site"}),          # another port on localhost
        ("POST", write, {"add": ["x"]}, {"Origin": "http://evil.example"}),
        ("POST", write, {"add": ["x"]}, {"Origin": f"http://127.0.0.1:{port + 1}"}),
        ("POST", write, {"add": ["x"]}, {"Origin": "null"}),
        ("OPTIONS", write, None, {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}),
    ]
    for method, path, body, headers in refused:
        status, response_headers, _ = call(url, method, path, body, headers=headers)
        assert status == 403, (method, path, headers)
        assert "Access-Control-Allow-Origin" not in response_headers
    # A write without the custom header (what a cross-site <form> can send) is refused.
    status, _, _ = call(url, "POST", write, {"add": ["x"]}, client=None)
    assert status == 403
    status, _, _ = call(url, "POST", write, b"add=x", client=None,
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 403
    assert call_json(url, "GET", "/api/state")["labels"] == []

    # The page's own origin works, by either loopback name.
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        headers = {"Host": host, "Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"}
        assert call_json(url, "POST", write, {"add": ["ok"]}, headers=headers)["image"]["labels"] == ["ok"]
    status, headers, page = call(url, "GET", "/", headers={"Sec-Fetch-Site": "none"})
    assert status == 200 and b"clip-match annotate" in page
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]


def test_wildcard_bind_answers_this_machines_names_only(tmp_path):
    import socket

    from clip_match.annotate.server import AnnotationServer
    from clip_match.annotate.store import LabelStore

    image_dir = tmp_path / "images"
    make_images(image_dir, 1)
    server = AnnotationServer(image_dir, LabelStore(tmp_path / "labels"), host="0.0.0.0", port=0)
    try:
        port = server.server_address[1]
        assert {f"127.0.0.1:{port}", f"localhost:{port}", f"{socket.gethostname()}:{port}"} <= server.allowed_hosts
        assert f"0.0.0.0:{port}" not in server.allowed_hosts and f"evil.example:{port}" not in server.allowed_hosts
        assert server.url == f"http://{socket.gethostname()}:{port}/"
    finally:
        server.server_close()


def test_bad_writes_get_clear_errors(served):
    server, _ = served
    url = server.url
    image = ids_by_path(url)["img0.jpg"]
    cases = [
        ({"add": [""]}, 400, "label is empty"),
        ({"add": ["a\u0007b"]}, 400, "control characters"),
        ({"add": ["x" * 201]}, 400, "longer than 200"),
        ({"add": [3]}, 400, "label must be a string"),
        ({"add": {"x": 1}}, 400, "add must be a label or a list"),
        (b"{not json", 400, "malformed JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b"x" * (65 * 1024), 413, "over 65536 bytes"),
    ]
    for body, status, message in cases:
        got, _, payload = call(url, "POST", f"/api/images/{image}/labels", body)
        assert got == status and message in json.loads(payload)["error"], (body[:20], payload)
    got, _, payload = call(url, "POST", "/api/images/999/labels", {"add": ["x"]})
    assert got == 400 and "no image with id 999" in json.loads(payload)["error"]
    got, _, payload = call(url, "POST", f"/api/puzzles/{image}", {"answer": [1]})
    assert got == 400 and f"image {image} is not a puzzle" in json.loads(payload)["error"]
    got, _, payload = call(url, "POST", "/api/labels/rename", {"from": "nope", "to": "x"})
    assert got == 400 and "no label named 'nope'" in json.loads(payload)["error"]
    assert call_json(url, "GET", "/api/state")["labels"] == []  # nothing half-applied


def test_concurrent_writers_from_many_tabs(served):
    """Threads hammer the server as separate tabs; the result is exact and each tab undoes only its own work."""
    server, _ = served
    url = server.url
    images = list(ids_by_path(url).values())
    tabs, errors = 8, []

    def tab(k: int) -> None:
        rng = random.Random(k)
        try:
            for image in rng.sample(images, len(images)):
                call_json(url, "POST", f"/api/images/{image}/labels", {"add": [f"tab{k}", "shared"]}, client=f"tab{k}")
                call_json(url, "POST", f"/api/images/{image}/labels", {"add": [f"tmp{k}"]}, client=f"tab{k}")
                call_json(url, "POST", f"/api/images/{image}/labels", {"remove": [f"tmp{k}"]}, client=f"tab{k}")
                call_json(url, "GET", "/api/state?since=0")
            call_json(url, "POST", f"/api/images/{images[0]}/skip", {"skipped": True}, client=f"tab{k}")
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=tab, args=(k,)) for k in range(tabs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors[:3]

    state = call_json(url, "GET", "/api/state")
    everything = sorted([f"tab{k}" for k in range(tabs)] + ["shared"])
    assert all(sorted(img["labels"]) == everything for img in state["images"])
    counts = {label["name"]: label["count"] for label in state["labels"]}
    assert counts == {name: len(images) for name in everything}

    # Tab 0 undoes everything it did (3 actions per image, maybe a skip); the other tabs' labels stay.
    steps = 0
    while call_json(url, "POST", "/api/undo", {}, client="tab0")["undone"] is not None:
        steps += 1
    assert steps in (3 * len(images), 3 * len(images) + 1)  # its skip counts only if it came first
    others = {f"tab{k}" for k in range(1, tabs)}
    for img in call_json(url, "GET", "/api/state")["images"]:
        assert "tab0" not in img["labels"] and others <= set(img["labels"])
    with sqlite3.connect(server.store.path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
