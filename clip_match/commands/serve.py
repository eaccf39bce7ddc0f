"""`clip-match serve`: the HTTP service for grid puzzles, candidate ranking and embeddings.

    clip-match serve [--host 127.0.0.1] [--port 8000] [--bundle NAME=DIR ...] [--index NAME=DIR ...]
                     [--api-key-file F] [--max-batch N] [--max-wait-ms MS] [--threads N] [--providers cuda,cpu]

Without ``--bundle`` it serves the packaged demo model as "demo". Bundles and indexes are loaded
before the server listens: a bad one stops the command with a one-line error. SIGINT or SIGTERM
finish the requests in flight, then stop it (exit status 0). The API: /docs on the running server.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from ..errors import ClipMatchError
from ..runtime.bundle import TOWER_PRECISIONS
from ..serve.models import BATCHING, Models

PROVIDERS = ("cuda", "cpu")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine "
                                                             "only; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--bundle", action="append", default=[], metavar="NAME=DIR",
                        help="a model bundle to serve under NAME (repeatable; the first is the default; "
                             "default: the packaged demo model as 'demo')")
    parser.add_argument("--index", action="append", default=[], metavar="NAME=DIR",
                        help="a candidate index to serve under NAME (repeatable), with the bundle of its model")
    parser.add_argument("--api-key-file", type=Path, metavar="F",
                        help="require this file's key (its first line) on /v1 requests")
    parser.add_argument("--max-batch", type=int, default=64, help="images or texts per encoder call (default 64)")
    parser.add_argument("--max-wait-ms", type=float, default=10.0,
                        help="how long queued work waits for the requests still decoding (default 10)")
    parser.add_argument("--max-queue", type=int, default=64,
                        help="/v1 requests in progress at once; more are answered 503 (default 64)")
    parser.add_argument("--batching", choices=BATCHING, default="auto",
                        help="merge requests into one encoder call: auto (only where results stay the in-process "
                             "API's bit for bit), merge (always: for GPUs; dynamic int8 scores then move, by up to "
                             "0.01 on the demo model), off")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds for a request's body to arrive and for its answer (default 30)")
    parser.add_argument("--max-body-mb", type=float, default=16.0, help="request body limit in MiB (default 16)")
    parser.add_argument("--threads", type=int, help="onnxruntime threads per encoder (default: its choice)")
    parser.add_argument("--decode-threads", type=int, help="threads decoding images and cutting tiles "
                                                           "(default: one per CPU)")
    parser.add_argument("--providers", default="auto", metavar="cuda,cpu",
                        help="onnxruntime providers in order: cuda,cpu (CUDA, else fail), cpu (default: CUDA when "
                             "this onnxruntime has it)")
    parser.add_argument("--precision", choices=TOWER_PRECISIONS,
                        help="tower precision (default: fp16 on CUDA, else fp32, else what the bundle has)")


def run(args: argparse.Namespace) -> int:
    settings_values = _checked(args)
    api_key = _api_key(args.api_key_file)
    device = _device(args.providers)
    try:
        from ..serve.app import Settings, create_app
        from ..serve.server import address, bind, serve_forever
    except ImportError as error:
        raise ClipMatchError(f"serving needs the serve extra ({error.name} is missing): "
                             "pip install 'clip-match[serve]'") from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    models = Models.load(_pairs(args.bundle, "--bundle"), _pairs(args.index, "--index"), device=device,
                         precision=args.precision, threads=args.threads)
    settings = Settings(**settings_values, api_key=api_key)
    app = create_app(models, settings)
    try:
        sock = bind(args.host, args.port)
    except OSError as error:
        raise ClipMatchError(str(error)) from None
    served = ", ".join(f"{name} ({bundle.encoder.precision}, {bundle.encoder.device})"
                       for name, bundle in models.bundles.items())
    indexes = ", ".join(f"{name} ({len(index.index)} candidates)" for name, index in models.indexes.items())
    print(f"clip-match serve: listening on {address(sock)} (docs: {address(sock)}/docs); bundles: {served}"
          + (f"; indexes: {indexes}" if indexes else ""), file=sys.stderr, flush=True)
    stopped_by = serve_forever(app, sock, settings.timeout)
    print(f"clip-match serve: stopped{f' ({signal.Signals(stopped_by).name})' if stopped_by else ''}",
          file=sys.stderr, flush=True)
    return 0


def _checked(args: argparse.Namespace) -> dict:
    """The numeric options as `Settings` fields, or an error naming the option."""
    for option, value, low in (("--max-batch", args.max_batch, 1), ("--max-queue", args.max_queue, 1),
                               ("--max-wait-ms", args.max_wait_ms, 0), ("--timeout", args.timeout, 0.001),
                               ("--max-body-mb", args.max_body_mb, 0.001),
                               ("--threads", args.threads, 1), ("--decode-threads", args.decode_threads, 1),
                               ("--port", args.port, 0)):
        if value is not None and not value >= low:
            raise ClipMatchError(f"{option} must be at least {low:g}, got {value}")
    return {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "max_queue": args.max_queue,
            "timeout": args.timeout, "max_body": int(args.max_body_mb * 2**20), "batching": args.batching,
            "decode_threads": args.decode_threads}


def _pairs(values: list[str], option: str) -> list[tuple[str, str]]:
    """``NAME=DIR`` values as pairs; a bare DIR is named after its folder."""
    pairs = []
    for value in values:
        name, separator, path = value.partition("=")
        if not separator:
            name, path = Path(value).name, value
        if not path:
            raise ClipMatchError(f"{option} {value!r}: expected NAME=DIR")
        pairs.append((name, path))
    return pairs


def _device(providers: str) -> str:
    """``--providers`` as an `Encoder` device: the first provider named decides."""
    if providers == "auto":
        return "auto"
    names = [name.strip().lower() for name in providers.split(",")]
    unknown = [name for name in names if name not in PROVIDERS]
    if unknown or not names:
        raise ClipMatchError(f"--providers {providers!r}: use cuda and/or cpu, comma-separated, e.g. cuda,cpu")
    return names[0]


def _api_key(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ClipMatchError(f"{path}: cannot read the API key: {getattr(error, 'strerror', None) or error}") from None
    key = lines[0].strip() if lines else ""
    if not key:
        raise ClipMatchError(f"{path}: the API key file is empty")
    return key
