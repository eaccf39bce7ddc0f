"""Running the app on uvicorn: in the foreground (`clip-match serve`) or on a background thread (tests,
or a program that embeds the server). The listening socket is bound here, so port 0 picks a free
port and the address is known before serving starts."""
from __future__ import annotations

import signal
import socket
import threading
from types import FrameType

import uvicorn
from fastapi import FastAPI

BACKLOG = 2048
GRACE_S = 5.0   # after the requests' own deadline, how long shutdown waits for them


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto given: asyncio sets TCP_NODELAY only on sockets that say IPPROTO_TCP, and without it a response's
    # headers and body (two writes) meet the client's delayed ACK: 40 ms per kept-alive request
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    sock.listen(BACKLOG)
    return sock


def address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _server(app: FastAPI, deadline: float) -> uvicorn.Server:
    # log_config=None: uvicorn's loggers go to whatever the process configured (the CLI: stderr)
    config = uvicorn.Config(app, lifespan="on", log_config=None, access_log=False, server_header=False,
                            timeout_graceful_shutdown=int(deadline + GRACE_S))
    return uvicorn.Server(config)


def serve_forever(app: FastAPI, sock: socket.socket, deadline: float) -> int | None:
    """Serve until SIGINT or SIGTERM, then finish the requests in flight and stop; returns that signal."""
    received: list[int] = []

    def note(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    # uvicorn catches both signals while it serves and raises them again once it has shut down:
    # these handlers take that second delivery, so the command ends normally instead of being killed.
    previous = {signum: signal.signal(signum, note) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        _server(app, deadline).run(sockets=[sock])
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return received[0] if received else None


class ServerThread:
    """The app served on a daemon thread: ``with ServerThread(app) as server: server.url``."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, deadline: float = 30.0):
        self._sock = bind(host, port)
        self.url = address(self._sock)
        self._server = _server(app, deadline)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="clip_match-server", daemon=True)

    def start(self, timeout: float = 30.0) -> ServerThread:
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the server thread stopped during start-up")
            self._thread.join(0.01)
            timeout -= 0.01
            if timeout <= 0:
                raise TimeoutError("the server did not start")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop accepting, finish the requests in flight, run the app's shutdown."""
        self._server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
