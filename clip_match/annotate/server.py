"""The local HTTP app behind `clip-match annotate` (stdlib only).

Safety rules, enforced on every request:

- Only the page's own origin may talk to it: the ``Host`` must be the address it serves on, or
  for a wildcard bind (``0.0.0.0``, ``::``) one of this machine's names and addresses (defeats
  DNS rebinding), an ``Origin`` or ``Sec-Fetch-Site`` from elsewhere is refused, and
  writes must carry the ``X-Clip-Match-Client`` header, which no cross-site form can send and
  which cross-site scripts cannot send without a CORS preflight this server never grants.
- Images are served by database id only. The stored relative path is resolved (symlinks
  included) and must still lie inside IMAGE_DIR; the page's own files come from a fixed table.
- No client can hold a thread for long or make the server fail: a kept-alive connection waits at
  most ``idle_timeout`` for its next request, a request must arrive whole within
  ``request_timeout`` of its first byte, and bodies that are not small, sound JSON objects get a 400
  that names the problem.

Model suggestions are made by `assist.Assistant`'s background worker; requests only read them.
Each response leaves in one write with Nagle's algorithm off: the stdlib's separate header and body
writes met the browser's delayed ACK and cost about 40 ms per keep-alive request.
"""
from __future__ import annotations

import io
import json
import mimetypes
import os
import re
import shutil
import socket
import sys
import threading
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from ..errors import ClipMatchError
from ..jsonio import parse_object
from .assist import Assistant
from .scan import resolve_inside
from .store import Conflict, LabelStore
from .thumbs import BROWSER_FORMATS, THUMBNAIL_TYPES, needs_thumbnail, thumbnail, warm_in_background

CLIENT_HEADER = "X-Clip-Match-Client"
MAX_BODY = 64 * 1024
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
WILDCARD_HOSTS = ("0.0.0.0", "::")
STATIC_DIR = Path(__file__).with_name("static")
STATIC_FILES = {"/": "index.html", "/static/app.js": "app.js", "/static/style.css": "style.css"}
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

_CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_IMAGE_ROUTE = re.compile(r"/api/images/(\d{1,18})/(view|labels|skip)")
_PUZZLE_ROUTE = re.compile(r"/api/puzzles/(\d{1,18})(?:/tiles/(\d{1,4})/labels)?")
_IDS = re.compile(r"\d{1,18}(,\d{1,18}){0,63}")
ORDERS = ("path", "uncertain")


def _url_name(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _served_names(host: str) -> set[str]:
    """The names a browser may put in ``Host`` for a server bound to ``host``."""
    if host in ("127.0.0.1", "localhost", "::1"):
        return {_url_name(host), *LOOPBACK_NAMES}
    if host not in WILDCARD_HOSTS:
        return {_url_name(host)}
    hostname = socket.gethostname()
    names = {*LOOPBACK_NAMES, hostname, socket.getfqdn()}
    try:
        names |= {_url_name(info[4][0]) for info in socket.getaddrinfo(hostname, None)}
    except OSError:
        pass  # a host name that does not resolve: its name and the loopback names still work
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # the address outgoing traffic uses
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent
            names.add(probe.getsockname()[0])
        except OSError:
            pass  # no route: offline machine
    return names


class AnnotationServer(ThreadingHTTPServer):
    """Serves one IMAGE_DIR and its LabelStore; each request thread has its own database connection."""

    daemon_threads = True
    request_queue_size = 128  # listen backlog (socketserver's 5 kept new connections waiting >= 1 s)
    idle_timeout = 60.0       # seconds a kept-alive connection may wait for its next request
    request_timeout = 15.0    # seconds from a request's first byte to its last, and for each response write

    def __init__(self, image_dir: Path, store: LabelStore, host: str = "127.0.0.1", port: int = 8765,
                 assistant: Assistant | None = None, order: str = "path"):
        self.image_dir = Path(os.path.realpath(image_dir))
        self.store = store
        self.assistant = assistant or Assistant(store, self.image_dir, message="model assistance off (--no-assist)")
        if order not in ORDERS:
            raise ClipMatchError(f"unknown order {order!r}; orders: {', '.join(ORDERS)}")
        self.session = {"mode": store.mode, "order": order}
        self.thumbs_dir = store.dataset_dir / "thumbs"
        self.static = {route: _load_static(name) for route, name in STATIC_FILES.items()}
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), AnnotationHandler)
        bound_port = self.server_address[1]
        names = _served_names(host)
        self.allowed_hosts = {f"{n}:{bound_port}" for n in names}
        self.allowed_origins = {f"http://{h}" for h in self.allowed_hosts}
        self.url = f"http://{socket.gethostname() if host in WILDCARD_HOSTS else _url_name(host)}:{bound_port}/"

    def warm_thumbnails(self) -> threading.Thread:
        """Start making display copies of large images, from the first unlabelled image on."""
        files = self.store.files()
        first = next((i for i, (_, _, done) in enumerate(files) if not done), 0)
        ordered = files[first:] + files[:first]
        return warm_in_background([(image_id, image) for image_id, image, _ in ordered if needs_thumbnail(image)],
                                  self.image_dir, self.thumbs_dir)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.store.close_thread_connection()

    def handle_error(self, request, client_address) -> None:
        """A client that went away or timed out is no error of the server's; anything else is reported."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _TimedReader(io.RawIOBase):
    """A connection's reads: up to ``idle`` seconds of waiting for a request, then the whole request
    within ``whole`` seconds of its first byte (one that stalls or trickles in cannot hold a thread)."""

    def __init__(self, sock: socket.socket, idle: float, whole: float):
        self.sock, self.idle, self.whole = sock, idle, whole
        self.deadline: float | None = None

    def readable(self) -> bool:
        return True

    def next_request(self) -> None:
        self.deadline = None

    def readinto(self, buffer) -> int:
        if self.deadline is None:
            self.sock.settimeout(self.idle)
        else:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"request not complete within {self.whole:g} s")
            self.sock.settimeout(left)
        count = self.sock.recv_into(buffer)
        if self.deadline is None:
            self.deadline = time.monotonic() + self.whole
        return count


class HTTPError(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


class AnnotationHandler(BaseHTTPRequestHandler):
    server: AnnotationServer
    protocol_version = "HTTP/1.1"
    server_version = "clip-match-annotate"
    sys_version = ""
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024  # headers and body go out in one write (a larger image body follows in its own)

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # replaced by reads with deadlines
        self.rfile = io.BufferedReader(_TimedReader(self.connection, self.server.idle_timeout,
                                                    self.server.request_timeout))

    def handle_one_request(self) -> None:
        self.rfile.raw.next_request()
        super().handle_one_request()

    # -- dispatch -----------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._handle(write=False)

    def do_POST(self) -> None:
        self._handle(write=True)

    def do_OPTIONS(self) -> None:  # no CORS preflight is ever granted
        self._send_json({"error": "cross-origin requests are not allowed"}, HTTPStatus.FORBIDDEN)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS

    def _handle(self, write: bool) -> None:
        try:
            try:
                self._check_origin(write)
                url = urlsplit(self.path)
                if write:
                    self._post(url.path, self._read_json())
                else:
                    self._get(url.path, parse_qs(url.query))
            except HTTPError as error:
                self.close_connection = write  # an unread request body must not be taken for the next request
                self._send_json({"error": str(error)}, error.status)
            except Conflict as error:
                self._send_json({"error": str(error)}, HTTPStatus.CONFLICT)
            except ClipMatchError as error:
                self._send_json({"error": str(error)}, HTTPStatus.BAD_REQUEST)
        except (ConnectionError, TimeoutError):  # the client went away, stalled or trickled: drop it
            self.close_connection = True
        except Exception:  # a bug: keep serving, say so on stderr
            traceback.print_exc(file=sys.stderr)
            self._send_json({"error": "internal error (see the server's terminal)"}, HTTPStatus.INTERNAL_SERVER_ERROR)

    def _get(self, path: str, query: dict[str, list[str]]) -> None:
        if path in self.server.static:
            body, content_type = self.server.static[path]
            self._send(body, content_type, cache="no-cache")
        elif path == "/api/state":
            since = query.get("since", ["0"])[0]
            if not (since.isascii() and since.isdigit() and len(since) <= 18):  # (SQLite's integers: 63 bits)
                raise HTTPError(HTTPStatus.BAD_REQUEST, "since must be a non-negative integer")
            self._send_json(self.server.store.state(int(since)))
        elif path == "/api/rejects":
            self._send_json({"rejects": self.server.store.rejects()})
        elif path == "/api/session":
            self._send_json({**self.server.session, "assist": self.server.assistant.status})
        elif path == "/api/suggestions":
            since, wanted = query.get("since", ["0"])[0], query.get("want", [""])[0]
            if not (_IDS.fullmatch(since) and (not wanted or _IDS.fullmatch(wanted))):
                raise HTTPError(HTTPStatus.BAD_REQUEST, "since must be an integer and want up to 64 image ids, "
                                                        "comma-separated")
            self._send_json(self.server.assistant.snapshot(int(since), [int(i) for i in wanted.split(",") if i]))
        elif (match := _IMAGE_ROUTE.fullmatch(path)) and match[2] == "view":
            self._send_image(int(match[1]))
        else:
            raise HTTPError(HTTPStatus.NOT_FOUND, "not found")

    def _post(self, path: str, body: dict) -> None:
        store, client = self.server.store, self.headers[CLIENT_HEADER]
        match, puzzle = _IMAGE_ROUTE.fullmatch(path), _PUZZLE_ROUTE.fullmatch(path)
        if match and match[2] == "labels":
            row = store.change_labels(client, int(match[1]), _names(body, "add"), _names(body, "remove"))
            self.server.assistant.changed()
            self._send_json({"image": row})
        elif match and match[2] == "skip":
            skipped = body.get("skipped", True)
            if not isinstance(skipped, bool):
                raise HTTPError(HTTPStatus.BAD_REQUEST, "skipped must be true or false")
            row = store.set_skipped(client, int(match[1]), skipped)
            self._send_json({"image": row})
        elif puzzle and puzzle[2]:
            row = store.change_labels(client, int(puzzle[1]), _names(body, "add"), _names(body, "remove"),
                                      tile=int(puzzle[2]))
            self._send_json({"image": row})
        elif puzzle:
            row = store.save_puzzle(client, int(puzzle[1]), body.get("prompt"), body.get("answer"))
            if "prompt" in body:
                self.server.assistant.changed()
            self._send_json({"image": row})
        elif path == "/api/undo":
            undone = store.undo(client)
            self.server.assistant.changed()
            self._send_json({"undone": undone})
        elif path == "/api/labels/rename" and store.mode == "puzzles":
            raise HTTPError(HTTPStatus.BAD_REQUEST, "renaming labels is for image mode")
        elif path == "/api/labels/rename":
            renamed = store.rename_label(client, body.get("from"), body.get("to"))
            self.server.assistant.changed()
            self._send_json(renamed)
        else:
            raise HTTPError(HTTPStatus.NOT_FOUND, "not found")

    # -- request checks -----------------------------------------------------------------------

    def _check_origin(self, write: bool) -> None:
        if self.headers.get("Host") not in self.server.allowed_hosts:
            raise HTTPError(HTTPStatus.FORBIDDEN, "unexpected Host header: this server answers only its own address")
        origin = self.headers.get("Origin")
        if origin is not None and origin not in self.server.allowed_origins:
            raise HTTPError(HTTPStatus.FORBIDDEN, f"requests from origin {origin} are not allowed")
        if self.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            raise HTTPError(HTTPStatus.FORBIDDEN, "cross-site requests are not allowed")
        if write and not _CLIENT_ID.fullmatch(self.headers.get(CLIENT_HEADER, "")):
            raise HTTPError(HTTPStatus.FORBIDDEN, f"writes need the {CLIENT_HEADER} header")

    def _read_json(self) -> dict:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise HTTPError(HTTPStatus.BAD_REQUEST, "bad Content-Length") from None
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            raise HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body over {MAX_BODY} bytes")
        raw = self.rfile.read(length) if length else b"{}"
        if len(raw) < length:
            raise ConnectionResetError("the client closed the connection inside the request body")
        if not self.headers.get("Content-Type", "").startswith("application/json"):
            raise HTTPError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "writes must be application/json")
        try:  # (bad UTF-8 or JSON, NaN, nesting too deep for Python, an integer over 4,300 digits)
            body = parse_object(raw, "request body")
            json.dumps(body, ensure_ascii=False).encode("utf-8")  # a lone surrogate such as "\ud800" fails here
        except ClipMatchError as error:
            raise HTTPError(HTTPStatus.BAD_REQUEST, str(error)) from None
        except UnicodeEncodeError as error:
            raise HTTPError(HTTPStatus.BAD_REQUEST, f"request body is not valid Unicode: "
                                                    f"lone surrogate \\u{ord(error.object[error.start]):04x}") from None
        return body

    # -- responses ----------------------------------------------------------------------------

    def _send_image(self, image_id: int) -> None:
        image = self.server.store.image(image_id)
        if image is None:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"no image with id {image_id}")
        try:
            source = resolve_inside(self.server.image_dir, image.path)
        except ClipMatchError as error:
            raise HTTPError(HTTPStatus.FORBIDDEN, str(error)) from None
        if needs_thumbnail(image):
            try:
                source = thumbnail(source, image_id, image, self.server.thumbs_dir)
            except ClipMatchError as error:
                raise HTTPError(HTTPStatus.UNPROCESSABLE_ENTITY, str(error)) from None
            content_type = THUMBNAIL_TYPES[source.suffix]
        else:
            content_type = BROWSER_FORMATS[image.format]
        try:  # O_NOFOLLOW: the checked real path must not have become a symlink since
            fd = os.open(source, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as error:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"{image.path}: cannot read: {error.strerror}") from None
        with os.fdopen(fd, "rb") as handle:
            self._start(HTTPStatus.OK, content_type, os.fstat(fd).st_size, cache="private, max-age=86400")
            shutil.copyfileobj(handle, self.wfile)
        self.wfile.flush()

    def _send_json(self, payload: object, status: HTTPStatus = HTTPStatus.OK) -> None:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self._send(body, "application/json; charset=utf-8", status=status)

    def _send(self, body: bytes, content_type: str, status: HTTPStatus = HTTPStatus.OK, cache: str = "no-store") -> None:
        self._start(status, content_type, len(body), cache)
        self.wfile.write(body)
        self.wfile.flush()

    def _start(self, status: HTTPStatus, content_type: str, length: int, cache: str) -> None:
        self.connection.settimeout(self.server.request_timeout)  # a client that stops reading is dropped
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        if content_type.startswith("text/html"):
            self.send_header("Content-Security-Policy", PAGE_POLICY)
        self.end_headers()

    def log_message(self, format: str, *args) -> None:  # quiet: the terminal shows only errors
        pass


def _names(body: dict, key: str) -> list:
    value = body.get(key, [])
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise ClipMatchError(f"{key} must be a label or a list of labels")
    return value


def _load_static(name: str) -> tuple[bytes, str]:
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    try:
        return (STATIC_DIR / name).read_bytes(), f"{content_type}; charset=utf-8"
    except OSError:
        raise ClipMatchError(f"{STATIC_DIR / name}: the page's files are missing from this installation") from None
