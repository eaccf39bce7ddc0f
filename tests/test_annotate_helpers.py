"""Generated image folders and annotation servers shared by tests/test_annotate_*.py (no tests here)."""
from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from clip_match.annotate.exchange import attach_image_dir
from clip_match.annotate.server import CLIENT_HEADER, AnnotationServer
from clip_match.annotate.store import LabelStore

REPO = Path(__file__).resolve().parents[1]


def make_images(folder: Path, count: int, size: tuple[int, int] = (96, 64), seed: int = 0) -> list[Path]:
    """``count`` distinct JPEGs named img0.jpg, img1.jpg, ... (blocky colour noise, cheap to encode)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        blocks = rng.integers(0, 256, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
        path = folder / f"img{i}.jpg"
        Image.fromarray(blocks).resize(size, Image.Resampling.NEAREST).save(path, quality=90)
        paths.append(path)
    return paths


@contextlib.contextmanager
def thread_server(image_dir: Path, dataset_dir: Path) -> Iterator[AnnotationServer]:
    """An in-process server on a free port, shut down on exit."""
    store = LabelStore(dataset_dir)
    attach_image_dir(store, image_dir)
    server = AnnotationServer(image_dir, store, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class ServerProcess:
    """`clip-match annotate` as a real subprocess; ``kill()`` simulates a crash (SIGKILL)."""

    def __init__(self, image_dir: Path, dataset_dir: Path, log: Path, *options: str):
        self.log = log
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(log, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "clip_match.cli", "annotate", str(image_dir), "--out", str(dataset_dir),
                 "--port", "0", *options], cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, env=env)
        self.url = self._wait_for_url()

    def _wait_for_url(self, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(r"open (http://127\.0\.0\.1:\d+/)", self.log.read_text(errors="replace"))
            if match:
                return match[1]
            if self.process.poll() is not None:
                raise RuntimeError(f"annotate server exited: {self.log.read_text()}")
            time.sleep(0.05)
        self.kill()
        raise RuntimeError("annotate server did not start")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


def call(url: str, method: str, path: str, body: object = None, headers: dict | None = None,
         client: str | None = "tests") -> tuple[int, dict, bytes]:
    """One raw HTTP request (the path is sent exactly as given); returns (status, headers, body)."""
    host, port = re.match(r"http://([^/:]+):(\d+)/", url).groups()
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    sent = {"Host": f"{host}:{port}"}
    if client is not None:
        sent[CLIENT_HEADER] = client
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    sent.update(headers or {})
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    for name, value in sent.items():
        conn.putheader(name, value)
    if data is not None:
        conn.putheader("Content-Length", str(len(data)))
    conn.endheaders(data)
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    return response.status, dict(response.getheaders()), payload


def call_json(url: str, method: str, path: str, body: object = None, **kwargs) -> dict:
    status, _, payload = call(url, method, path, body, **kwargs)
    assert status == 200, (status, payload)
    return json.loads(payload)
