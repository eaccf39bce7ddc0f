"""`Client`: a `clip-match serve` server from Python, answering with the in-process API's types.

    client = Client("http://127.0.0.1:8000", api_key=None)
    client.grid("puzzle.png", "雨伞", k=2)                 # GridResult, as GridSolver.solve
    client.grid("screenshot.png", k=2)                    # the prompt read from the screenshot
    client.query(["cat.jpg"], index="labels", top_k=3)    # [Ranking], as Matcher.rank
    client.embed(images=["cat.jpg"])                      # (n, dim) float32, as Encoder.encode_images
    client.embed(texts=["一只猫"])                          # as Encoder.encode_texts

Images travel as files of a multipart form: paths and bytes as they are (the server decodes them as
the in-process API would), PIL images and uint8 arrays as PNG (TIFF for modes PNG cannot hold), which
is lossless, so the answers equal the in-process API's. Standard library only (http.client), one
keep-alive connection per thread. A refusal raises `ServiceError` with the server's status and field.
"""
from __future__ import annotations

import http.client
import io
import json
import os
import threading
import uuid
import warnings
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlsplit

import numpy as np

from .errors import ClipMatchError
from .grid.solver import GridResult
from .index.label_index import Hit, Ranking
from .runtime.encoder import is_single_image
from .runtime.images import ImageInput, open_image


class ServiceError(ClipMatchError):
    """The server refused a request (``status``, the ``field`` at fault, and for 503 ``retry_after``
    seconds), or could not be reached (``status`` None)."""

    def __init__(self, message: str, status: int | None = None, field: str | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.field = field
        self.retry_after = retry_after


class Client:
    """Calls one server; safe to share between threads (each uses its own connection)."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 60.0):
        parts = urlsplit(url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ClipMatchError(f"server URL {url!r}: expected http://HOST:PORT or https://HOST:PORT")
        self.url = url.rstrip("/")
        self._connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self._host, self._port, self._prefix = parts.hostname, parts.port, parts.path
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout
        self._local = threading.local()
        self._connections: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def grid(self, image_or_tiles: ImageInput | Sequence[ImageInput], prompt: str | ImageInput | None = None,
             layout: str = "auto", k: int | None = None, threshold: float | None = None, zero_based: bool = False,
             bundle: str | None = None, prompt_pattern: str | None = None) -> GridResult:
        """`GridSolver.solve` on the server: a puzzle image or its 6 or 9 tiles, a text (str) or an
        example image as the prompt, or None: read from the screenshot (``prompt_pattern``: a regular
        expression whose one named group is the target). The server's warnings are issued here."""
        if isinstance(image_or_tiles, (list, tuple)):
            files = [("tiles", *_image_file(tile, f"tiles[{i}]")) for i, tile in enumerate(image_or_tiles)]
        else:
            files = [("image", *_image_file(image_or_tiles, "image"))]
        fields = {"layout": layout, "k": k, "threshold": threshold, "zero_based": zero_based, "bundle": bundle,
                  "prompt_pattern": prompt_pattern}
        if isinstance(prompt, str):
            fields["text"] = prompt
        elif prompt is not None:
            files.append(("example", *_image_file(prompt, "example")))
        return GridResult(**_warned(self._post("/v1/grid", *_multipart(fields, files))))

    def query(self, images: ImageInput | Sequence[ImageInput], index: str, top_k: int = 5,
              bundle: str | None = None) -> list[Ranking]:
        """`Matcher.rank` on the server: the top ``top_k`` candidates of ``index`` for each image. The
        server's warnings are issued here."""
        items = [images] if is_single_image(images) else list(images)
        files = [("images", *_image_file(image, f"images[{i}]")) for i, image in enumerate(items)]
        answer = _warned(self._post("/v1/query", *_multipart({"index": index, "top_k": top_k, "bundle": bundle},
                                                             files)))
        return [Ranking([Hit(**hit) for hit in ranking["results"]], ranking["softmax"]["scope"],
                        ranking["softmax"]["over"]) for ranking in answer["rankings"]]

    def embed(self, images: ImageInput | Sequence[ImageInput] | None = None, texts: str | Sequence[str] | None = None,
              bundle: str | None = None) -> np.ndarray:
        """`Encoder.encode_images` or `encode_texts` on the server (give one of them): (n, dim) float32."""
        if (images is None) == (texts is None):
            raise ClipMatchError("embed: give images or texts, one of them")
        if texts is not None:
            body = {"texts": [texts] if isinstance(texts, str) else list(texts), "bundle": bundle}
            answer = self._post("/v1/embed", json.dumps(body, ensure_ascii=False).encode(), "application/json")
        else:
            items = [images] if is_single_image(images) else list(images)
            files = [("images", *_image_file(image, f"images[{i}]")) for i, image in enumerate(items)]
            answer = self._post("/v1/embed", *_multipart({"bundle": bundle}, files))
        return np.asarray(answer["vectors"], dtype=np.float32).reshape(-1, answer["dim"])

    def ready(self) -> dict:
        """The server's /readyz answer: its bundles and indexes."""
        return self._request("GET", "/readyz")

    def close(self) -> None:
        """Close every thread's connection (a later call opens a new one)."""
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()

    # ---- HTTP -----------------------------------------------------------------------------
    def _post(self, path: str, body: bytes, content_type: str) -> dict:
        return self._request("POST", path, body, content_type)

    def _request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None) -> dict:
        headers = {**self._headers, **({"Content-Type": content_type} if content_type else {})}
        for attempt in (1, 2):
            connection, reused = self._connection()
            try:
                connection.request(method, self._prefix + path, body, headers)
                response = connection.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as error:
                self._drop(connection)
                if not reused or attempt == 2:  # (a kept-alive connection the server had closed: once more)
                    raise ServiceError(f"{self.url}{path}: the connection failed: {error}") from None
            except OSError as error:
                self._drop(connection)
                raise ServiceError(f"{self.url}{path}: cannot reach the server: {error}") from None
        if response.will_close:
            self._drop(connection)
        try:
            answer = json.loads(data)
        except ValueError:
            answer = None
        if response.status >= 400 or not isinstance(answer, dict):
            error = answer if isinstance(answer, dict) else {}
            message = error.get("error") or data[:200].decode("utf-8", "replace")
            retry_after = response.getheader("Retry-After")
            raise ServiceError(f"{self.url}{path}: {response.status}: {message}", response.status, error.get("field"),
                               float(retry_after) if retry_after and retry_after.isdigit() else None)
        return answer

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection, and whether it has been used before."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            return connection, True
        connection = self._connection_class(self._host, self._port, timeout=self._timeout)
        self._local.connection = connection
        with self._lock:
            self._connections.append(connection)
        return connection, False

    def _drop(self, connection: http.client.HTTPConnection) -> None:
        connection.close()
        self._local.connection = None
        with self._lock:
            if connection in self._connections:
                self._connections.remove(connection)


def _warned(answer: dict) -> dict:
    """``answer`` less its ``warnings``, each issued to the caller as a `UserWarning` (as the in-process
    API warns of a truncated prompt)."""
    for message in answer.pop("warnings", []):
        warnings.warn(message, stacklevel=3)
    return answer


def _image_file(item: ImageInput, name: str) -> tuple[str, bytes]:
    """(file name, bytes) of an image input: a file's own bytes, bytes as given, PIL images and arrays
    as PNG (or TIFF, for modes PNG cannot hold: CMYK, ...)."""
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        try:
            return path.name, path.read_bytes()
        except OSError as error:
            raise ClipMatchError(f"{path}: cannot read: {error.strerror or error}") from None
    if isinstance(item, (bytes, bytearray, memoryview)):
        return name, bytes(item)
    image = open_image(item, name)   # (arrays checked and PIL modes normalised as the in-process API does)
    buffer = io.BytesIO()
    try:
        image.save(buffer, "PNG")
    except (OSError, KeyError, ValueError):
        buffer = io.BytesIO()
        image.save(buffer, "TIFF")
    return name, buffer.getvalue()


def _multipart(fields: dict[str, Any], files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body of ``fields`` (None left out) and ``files`` (field, file name, bytes)."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        if value is None:
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{text}\r\n'.encode())
    for name, filename, data in files:
        quoted = filename.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{quoted}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
