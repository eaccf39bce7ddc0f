"""Fault injection (issue 26): what the reliability sweep found must stay fixed, and what held must keep holding.

Each part of the product has its own section below; keep sections apart.
"""
from __future__ import annotations

import json
import signal
import socket
import threading
import time

import pytest

from benchmarks.bench_annotate import check_consistency, percentile, run_load
from clip_match.annotate.store import DB_NAME
from test_annotate_helpers import ServerProcess, call, call_json, make_images, thread_server

# ---- annotation server (clip-match annotate) ------------------------------------------------


def _image_ids(url: str) -> list[int]:
    return [image["id"] for image in call_json(url, "GET", "/api/state")["images"]]


def test_annotation_server_under_concurrent_load_keeps_every_acknowledged_write(tmp_path):
    """8 keep-alive clients, 2,000 mixed requests: all answered 200, every acknowledged write held exactly
    once, and no Nagle stall (the stdlib's separate header and body writes gave a 44 ms p50)."""
    make_images(tmp_path / "images", 30)
    server = ServerProcess(tmp_path / "images", tmp_path / "labels", tmp_path / "server.log")
    try:
        load = run_load(server.url, _image_ids(server.url), clients=8, requests=2000)
    finally:
        server.kill()
    assert not load.failures, load.failures[:3]
    assert not check_consistency(tmp_path / "labels" / DB_NAME, load)
    assert len(load.added) > 300
    latencies = load.all_ms()
    assert percentile(latencies, 0.5) < 20, f"p50 {percentile(latencies, 0.5):.1f} ms"
    assert "Traceback" not in server.log.read_text()


def test_annotation_server_killed_under_load_loses_no_acknowledged_write(tmp_path):
    make_images(tmp_path / "images", 30)
    for attempt in range(3):  # SIGKILL at three different moments of the load
        state = tmp_path / f"labels{attempt}"
        server = ServerProcess(tmp_path / "images", state, tmp_path / f"server{attempt}.log")
        killer = threading.Timer(0.3 + 0.4 * attempt, server.process.send_signal, (signal.SIGKILL,))
        killer.start()
        load = run_load(server.url, _image_ids(server.url), clients=8, requests=100_000, seed=attempt)
        killer.join()
        server.kill()
        assert load.failures and load.added  # it died mid-load, after some writes
        assert not check_consistency(state / DB_NAME, load, killed=True)


def test_annotation_server_answers_malformed_bodies_with_400(tmp_path):
    """Over-deep JSON (RecursionError) and lone surrogates (UnicodeEncodeError) were 500s with a traceback."""
    make_images(tmp_path / "images", 2)
    server = ServerProcess(tmp_path / "images", tmp_path / "labels", tmp_path / "server.log")
    try:
        image = _image_ids(server.url)[0]
        call_json(server.url, "POST", f"/api/images/{image}/labels", {"add": ["cat"]})
        labels = f"/api/images/{image}/labels"
        cases = [
            (labels, b"[" * 30_000 + b"]" * 30_000, "nested too deeply"),
            (labels, b'{"add":' + b'{"a":' * 10_000 + b"1" + b"}" * 10_001, "nested too deeply"),
            (labels, b'{"add": ["\\ud800"]}', "lone surrogate \\ud800"),
            (labels, b'{"remove": ["x\\udfff"]}', "lone surrogate \\udfff"),
            ("/api/labels/rename", b'{"from": "cat", "to": "\\ud800"}', "lone surrogate"),
            ("/api/labels/rename", b'{"from": "\\udc00cat", "to": "dog"}', "lone surrogate"),
            (labels, b'{"add": ["\xff"]}', "invalid UTF-8"),
            (labels, b'{"add": [NaN]}', "NaN is not JSON"),
        ]
        for path, body, message in cases:
            status, _, payload = call(server.url, "POST", path, body)
            assert status == 400 and message in json.loads(payload)["error"], (body[:30], payload[:200])
        assert [(label["name"], label["count"]) for label in call_json(server.url, "GET", "/api/state")["labels"]] \
            == [("cat", 1)]
    finally:
        server.kill()
    assert "Traceback" not in server.log.read_text()


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` within ``seconds`` (reads until end of stream)."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
        return True
    except TimeoutError:
        return False


def test_annotation_server_drops_idle_stalled_and_trickling_clients(tmp_path):
    make_images(tmp_path / "images", 1)
    with thread_server(tmp_path / "images", tmp_path / "labels") as server:
        server.idle_timeout, server.request_timeout = 0.5, 1.0
        address, host = server.server_address, f"127.0.0.1:{server.server_address[1]}"
        request = f"GET /api/state HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()

        idle = socket.create_connection(address)                 # kept alive after one request, then silent
        idle.sendall(request)
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")
        assert _closed_within(idle, 3)
        stalled = socket.create_connection(address)              # half-sent headers
        stalled.sendall(request[:20])
        assert _closed_within(stalled, 3)
        half_body = socket.create_connection(address)            # headers complete, half the body
        half_body.sendall(f"POST /api/undo HTTP/1.1\r\nHost: {host}\r\nX-Clip-Match-Client: t\r\n"
                          f"Content-Type: application/json\r\nContent-Length: 10\r\n\r\n{{}}".encode())
        assert _closed_within(half_body, 3)

        trickling = socket.create_connection(address)            # a byte every 0.1 s: dropped at request_timeout
        began = time.monotonic()
        with pytest.raises(OSError):
            for byte in request * 10:
                trickling.send(bytes([byte]))
                time.sleep(0.1)
        assert time.monotonic() - began < 4
        for sock in (idle, stalled, half_body, trickling):
            sock.close()
        assert call_json(server.url, "GET", "/api/state")["version"] >= 1  # still serving


def test_annotation_server_accepts_a_burst_of_new_connections(tmp_path):
    """32 simultaneous new connections: with the stdlib's backlog of 5, 17 of them waited >= 1 s."""
    make_images(tmp_path / "images", 1)
    with thread_server(tmp_path / "images", tmp_path / "labels") as server:
        took: list[float] = []

        def connect() -> None:
            began = time.monotonic()
            call_json(server.url, "GET", "/api/state")
            took.append(time.monotonic() - began)

        threads = [threading.Thread(target=connect) for _ in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert len(took) == 32 and max(took) < 1.0, sorted(took)[-5:]
