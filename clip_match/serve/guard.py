"""The ASGI layer in front of the endpoints, in the order it applies: a request id, the API key (401),
admission to the bounded queue of /v1 requests (503 with Retry-After), the body limit (413) and the
body's deadline (408: a client that sends slowly frees its worker), then metrics and one log line for
every refusal. Admission comes before the body is read, so at most ``max_queue`` bodies are held."""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from typing import Any, Awaitable, Callable

from starlette.responses import Response

from .metrics import Metrics

log = logging.getLogger("clip_match.serve")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ENDPOINTS = ("/v1/grid", "/v1/query", "/v1/embed", "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json")
RETRY_AFTER_S = 1
DRAIN_FACTOR = 4   # bodies up to this many times the limit are read through before their 413 (see _read_body)


def error_response(scope: Scope, status: int, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    """The JSON error every refusal gets, ``{"error", "field", "request_id"}``, logged with the request.
    ASCII JSON: a field name the client sent may hold characters UTF-8 cannot encode (lone surrogates)."""
    request_id = scope.get("state", {}).get("request_id", "-")
    level = logging.ERROR if status >= 500 else logging.INFO
    log.log(level, "request %s %s %s -> %d: %s", request_id, scope.get("method"), scope.get("path"), status, message)
    body = json.dumps({"error": message, "field": field, "request_id": request_id})
    return Response(body, status, headers, media_type="application/json")


class Guard:
    """Wraps the app; see the module docstring."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, max_queue: int, max_body: int, timeout: float,
                 api_key: str | None):
        self.app = app
        self.metrics = metrics
        self.max_queue = max_queue
        self.max_body = max_body
        self.timeout = timeout
        self._api_key = api_key.encode() if api_key is not None else None
        self._admitted = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        request_id = uuid.uuid4().hex[:12]
        scope.setdefault("state", {}).update(request_id=request_id, deadline=started + self.timeout)
        status = 500
        responded = False

        async def tracked_send(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        admitted = False
        body = refusal = None
        try:
            if scope["path"].startswith("/v1/"):
                refusal = self._check_key(scope)
                if refusal is None and self._admitted >= self.max_queue:
                    refusal = error_response(scope, 503, f"the server is busy ({self.max_queue} requests queued); "
                                             f"retry in {RETRY_AFTER_S} s", headers={"Retry-After": str(RETRY_AFTER_S)})
                if refusal is None:
                    admitted = True
                    self._admitted += 1
                    self.metrics.in_flight.inc()
            if refusal is None:
                body, refusal = await self._read_body(scope, receive, started + self.timeout)
            if refusal is not None:
                await refusal(scope, receive, tracked_send)
            elif body is None:
                status = 499  # the client left before its body arrived (nginx's code for it)
            else:
                await self.app(scope, _replay(body, receive), tracked_send)
        except Exception:  # the endpoints answer their own faults; this is the last resort
            log.exception("request %s %s %s failed", request_id, scope.get("method"), scope.get("path"))
            if not responded:
                await error_response(scope, 500, "internal error")(scope, receive, tracked_send)
        finally:
            if admitted:
                self._admitted -= 1
                self.metrics.in_flight.dec()
            endpoint = scope["path"] if scope["path"] in ENDPOINTS else "other"
            self.metrics.requests.labels(endpoint, str(status)).inc()
            if status >= 400:
                self.metrics.errors.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.monotonic() - started)

    def _check_key(self, scope: Scope) -> Response | None:
        """401 unless the request carries the API key (``Authorization: Bearer KEY`` or ``X-API-Key: KEY``),
        compared in constant time."""
        if self._api_key is None:
            return None
        headers = dict(scope["headers"])
        given = headers.get(b"x-api-key")
        authorization = headers.get(b"authorization", b"")
        if given is None and authorization[:7].lower() == b"bearer ":
            given = authorization[7:].strip()
        if given is not None and hmac.compare_digest(given, self._api_key):
            return None
        return error_response(scope, 401, "missing or wrong API key (send 'Authorization: Bearer KEY' or "
                                          "'X-API-Key: KEY')", "authorization", {"WWW-Authenticate": "Bearer"})

    async def _read_body(self, scope: Scope, receive: Receive,
                         deadline: float) -> tuple[bytes | None, Response | None]:
        """The whole body, or a refusal: over ``max_body`` (413), not complete by ``deadline`` (408).

        A body a little over the limit (up to `DRAIN_FACTOR` times) is read to its end and dropped before
        the 413: a server that answers and closes while the client still sends makes the client's
        kernel see a reset, and the client loses the answer. Larger ones are refused at once."""
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body * DRAIN_FACTOR:
            return None, self._too_large(scope)
        chunks, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                if size > self.max_body:
                    return None, self._too_large(scope)
                return None, error_response(scope, 408, f"the request body did not arrive within {self.timeout:g} s",
                                            "body", {"Connection": "close"})
            if message["type"] == "http.disconnect":
                return None, None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body * DRAIN_FACTOR:
                return None, self._too_large(scope)
            if size <= self.max_body:
                chunks.append(chunk)
            if not message.get("more_body"):
                return (b"".join(chunks), None) if size <= self.max_body else (None, self._too_large(scope))

    def _too_large(self, scope: Scope) -> Response:
        return error_response(scope, 413, f"the request body is over the limit of {self.max_body:,} bytes "
                                          "(--max-body-mb)", "body", {"Connection": "close"})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the body read already, then whatever the client sends next
    (a disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
