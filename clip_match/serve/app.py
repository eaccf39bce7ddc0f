"""The FastAPI app: /v1/grid, /v1/query and /v1/embed over the batcher, plus /healthz, /readyz,
/metrics and the OpenAPI docs.

Each /v1 request reads its body (`clip_match.serve.bodies`), checks its values, decodes its images,
cuts its tiles and reads a screenshot's prompt in a thread pool (so that overlaps other requests'
encoding), hands its inputs to its bundle's `Batcher` and finishes the answer exactly as the
in-process API does: the same checks, the same calls in the same order, the same result fields
(`GridResult.to_dict()`, `query --json`'s). What the command line would print as warnings (a prompt
truncated to the context length) is answered as a ``warnings`` list: issuing them would need the
warnings module's filters, which are the whole process's, not the request's.
"""
from __future__ import annotations

import asyncio
import functools
import os
import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

import numpy as np
from fastapi import FastAPI
from PIL import Image
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import __version__
from ..errors import ClipMatchError
from ..grid.prompt import PatternTimeout, PromptReading, TimedPattern, compile_pattern
from ..grid.select import check_threshold
from ..grid.solver import GridSolver
from ..grid.tiles import LAYOUTS, Grid, check_layout, crop_margins
from ..runtime.encoder import Encoder
from ..runtime.images import open_image
from .batcher import Batcher, DeadlineExceeded, Job
from .bodies import (MAX_INPUTS, MAX_TOP_K, Body, EmbedAnswer, EmbedRequest, ErrorAnswer, GridAnswer, GridRequest,
                     QueryAnswer, QueryRequest, RequestError, Upload, read_body)
from .guard import Guard, error_response
from .metrics import Metrics
from .models import Models, ServedBundle

TILE_COUNTS = (6, 9)
PATTERN_SECONDS = 0.1  # a request's prompt_pattern gets this long per search of the text read
# The batch sizes the in-process API gives the encoder (Encoder.encode_texts / encode_images, Matcher.rank);
# a request encoded alone uses them, so dynamic int8 towers give exactly the in-process results.
TEXT_BATCH, IMAGE_BATCH, QUERY_BATCH = 256, 32, 16
T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    max_batch: int = 64          # inputs (images or texts) per encoder call
    max_wait_ms: float = 10.0    # how long the first queued job waits for others while more are being prepared
    max_queue: int = 64          # /v1 requests admitted at once; more get 503
    timeout: float = 30.0        # seconds for a request's body to arrive and for its answer
    max_body: int = 16 << 20     # bytes
    api_key: str | None = None
    batching: str = "auto"       # models.BATCHING: merge requests in one encoder call where exact, always, never
    decode_threads: int | None = None  # default: one per usable CPU


def create_app(models: Models, settings: Settings = Settings()) -> FastAPI:
    """The ASGI app serving ``models``; its batcher threads start and stop with the app's lifespan."""
    metrics = Metrics()
    service = Service(models, settings, metrics)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(title="clip_match", version=__version__, lifespan=lifespan,
                  description="Grid puzzles, candidate ranking and embeddings with a CN-CLIP model bundle. "
                              "/v1 endpoints take JSON (images as base64) or multipart forms (images as files).")
    app.state.service = service
    app.add_middleware(Guard, metrics=metrics, max_queue=settings.max_queue, max_body=settings.max_body,
                       timeout=settings.timeout, api_key=settings.api_key)

    async def http_error(request: Request, error: HTTPException) -> Response:  # unknown paths, wrong methods
        return error_response(request.scope, error.status_code, str(error.detail))

    app.add_exception_handler(HTTPException, http_error)
    errors = {status: {"model": ErrorAnswer} for status in (400, 401, 404, 408, 413, 415, 422, 503, 504)}
    for path, model, answer, endpoint in (("/v1/grid", GridRequest, GridAnswer, service.grid),
                                          ("/v1/query", QueryRequest, QueryAnswer, service.query),
                                          ("/v1/embed", EmbedRequest, EmbedAnswer, service.embed)):
        app.add_api_route(path, endpoint, methods=["POST"], summary=endpoint.__doc__,
                          responses={200: {"model": answer}, **errors}, openapi_extra=_request_body(model))
    app.add_api_route("/healthz", service.healthz, methods=["GET"], summary=service.healthz.__doc__)
    app.add_api_route("/readyz", service.readyz, methods=["GET"], summary=service.readyz.__doc__)
    app.add_api_route("/metrics", service.metrics, methods=["GET"], summary=service.metrics.__doc__)
    return app


class Service:
    """The endpoints, over the served models, their batchers and the decoding threads."""

    def __init__(self, models: Models, settings: Settings, metrics: Metrics):
        self.models = models
        self.settings = settings
        self._metrics = metrics
        self.batchers = {name: Batcher(name, bundle.encoder, bundle.merge(settings.batching), settings.max_batch,
                                       settings.max_wait_ms / 1000, metrics)
                         for name, bundle in models.bundles.items()}
        self._pool: Executor = ThreadPoolExecutor(settings.decode_threads or _usable_cpus(), "clip_match-decode")

    def start(self) -> None:
        for batcher in self.batchers.values():
            batcher.start()

    def stop(self) -> None:
        for batcher in self.batchers.values():
            batcher.close()
        self._pool.shutdown(wait=True)

    # ---- endpoints ------------------------------------------------------------------------
    async def grid(self, request: Request) -> Response:
        """Solve a grid puzzle: which tiles match a text or an example image."""
        return await self._answer(request, GridRequest, self._grid)

    async def query(self, request: Request) -> Response:
        """Rank an index's candidates for each image (the fields of `clip-match query --json`)."""
        return await self._answer(request, QueryRequest, self._query)

    async def embed(self, request: Request) -> Response:
        """L2-normalised vectors of images or texts."""
        return await self._answer(request, EmbedRequest, self._embed)

    async def healthz(self) -> dict:
        """The process answers."""
        return {"status": "ok"}

    async def readyz(self, request: Request) -> Response:
        """Models loaded and their encoder threads running (503 otherwise)."""
        ready = all(batcher.alive for batcher in self.batchers.values())
        bundles = {name: {"fingerprint": bundle.encoder.fingerprint, "precision": bundle.encoder.precision,
                          "device": bundle.encoder.device,
                          "merged": [tower for tower, merged in self.batchers[name].merge.items() if merged]}
                   for name, bundle in self.models.bundles.items()}
        indexes = {name: {"bundle": served.bundle, "candidates": len(served.index)}
                   for name, served in self.models.indexes.items()}
        if not ready:
            return error_response(request.scope, 503, "the encoder threads are not running")
        return JSONResponse({"ready": True, "bundles": bundles, "indexes": indexes})

    async def metrics(self) -> Response:
        """Prometheus metrics: requests, errors, latencies, encoder batch sizes, queue depth."""
        return Response(self._metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # ---- the work -------------------------------------------------------------------------
    async def _answer(self, request: Request, model: type[Body],
                      work: Callable[[Any, dict[str, list[Upload]], float], Awaitable[dict]]) -> Response:
        """Run ``work`` within the request's deadline; every fault becomes a JSON error naming its field."""
        deadline = request.state.deadline
        try:
            fields, uploads = await read_body(request, model)
            answer = await asyncio.wait_for(work(fields, uploads, deadline), max(0.0, deadline - time.monotonic()))
        except RequestError as error:
            return error_response(request.scope, error.status, error.message, error.field)
        except ClipMatchError as error:
            return error_response(request.scope, 400, str(error))
        except (asyncio.TimeoutError, DeadlineExceeded):
            return error_response(request.scope, 504, f"no answer within the deadline of {self.settings.timeout:g} s")
        return JSONResponse(answer)

    async def _grid(self, fields: GridRequest, uploads: dict[str, list[Upload]], deadline: float) -> dict:
        bundle, batcher = self._bundle(fields.bundle)
        if ("image" in uploads) == ("tiles" in uploads):
            raise RequestError(422, "give the puzzle as 'image' or as 'tiles', one of them", "image")
        if fields.text is not None and "example" in uploads:
            raise RequestError(422, "give the prompt as 'text' or as an 'example' image, not both", "text")
        read = fields.text is None and "example" not in uploads
        if read and "tiles" in uploads:
            raise RequestError(422, "tiles carry no prompt: give 'text' or an 'example' image (a prompt is read only "
                                    "from a whole 'image')", "text")
        if fields.prompt_pattern is not None and not read:
            raise RequestError(422, "'prompt_pattern' applies when the prompt is read from the image, not with "
                                    "'text' or 'example'", "prompt_pattern")
        if fields.k is not None and fields.threshold is not None:
            raise RequestError(422, "give 'k' or 'threshold', not both", "threshold")
        if fields.layout != "auto":
            _checked("layout", check_layout, fields.layout)
        if fields.threshold is not None:
            _checked("threshold", check_threshold, fields.threshold)
        pattern = None if fields.prompt_pattern is None else _checked("prompt_pattern", compile_pattern,
                                                                     fields.prompt_pattern, PATTERN_SECONDS)
        if "tiles" in uploads:
            count = len(uploads["tiles"])
            if count not in TILE_COUNTS:
                raise RequestError(400, f"got {count} tile images; a 2x3 grid needs 6 and a 3x3 grid 9", "tiles")
            made = next(name for name, (rows, cols) in LAYOUTS.items() if rows * cols == count)
            if fields.layout not in ("auto", made):
                raise RequestError(400, f"got {count} tile images, which make a {made} grid, not {fields.layout}",
                                   "layout")
        solver = bundle.solver
        warned = [] if fields.text is None else _checked("text", solver.check_text, fields.text)
        prompt_field = "image" if read else "text" if fields.text is not None else "example"
        with batcher.preparing():
            inputs, count, grid, reading = await self._in_pool(_grid_inputs, solver, uploads, fields.layout, read,
                                                               pattern)
            if fields.k is not None and not 1 <= fields.k <= count:
                raise RequestError(400, f"k must be an integer from 1 to {count} (the number of tiles), "
                                        f"got {fields.k}", "k")
            text = fields.text
            if reading is not None and isinstance(reading.prompt, str):  # (else an icon: encoded with the tiles)
                text, warned = reading.prompt, _checked("image", solver.check_text, reading.prompt)
            if text is not None:
                text_job = batcher.submit(Job("text", [text.strip()], TEXT_BATCH, deadline))
            images = batcher.submit(Job("image", inputs, count + 1, deadline))
        if text is not None:
            query, tile_vectors = (await _vectors(text_job, prompt_field))[0], await _vectors(images, "image")
        else:
            vectors = await _vectors(images, prompt_field)
            tile_vectors, query = vectors[:-1], vectors[-1]
        result = solver.result(tile_vectors @ query, grid, fields.k, fields.threshold, fields.zero_based, reading)
        return {**result.to_dict(), "warnings": warned}

    async def _query(self, fields: QueryRequest, uploads: dict[str, list[Upload]], deadline: float) -> dict:
        served = self.models.indexes.get(fields.index)
        if served is None:
            served_names = ", ".join(self.models.indexes) or "none"
            raise RequestError(404, f"unknown index {fields.index!r}; served: {served_names}", "index")
        bundle, batcher = self._bundle(fields.bundle or served.bundle)
        if bundle.encoder.fingerprint != served.index.fingerprint:
            raise RequestError(400, f"index {served.name!r} was built with another model than bundle {bundle.name!r}; "
                                    f"its bundle is {served.bundle!r}", "bundle")
        images = _inputs(uploads.get("images"), "images")
        if not 1 <= fields.top_k <= MAX_TOP_K:
            raise RequestError(400, f"top_k must be from 1 to {MAX_TOP_K}, got {fields.top_k}", "top_k")
        with batcher.preparing():
            pictures, inputs = await self._in_pool(_decoded, bundle.encoder, images, bool(served.index.layout_weight))
            future = batcher.submit(Job("image", inputs, QUERY_BATCH, deadline))
        vectors = await _vectors(future, "images")
        index = served.index
        names = [image.field for image in images]
        rankings = await self._in_pool(lambda: _checked("images", lambda: index.search(
            index.query_vectors(vectors, pictures, names), fields.top_k)))
        warned = [f"top_k {fields.top_k} is more than the {len(index)} candidates; showing {len(index)}"
                  ] if fields.top_k > len(index) else []   # (what `clip-match query` notes)
        return {"rankings": [{"image": image.name, "results": [vars(hit) for hit in ranking.hits],
                              "softmax": {"scope": ranking.softmax_scope, "over": ranking.softmax_over}}
                             for image, ranking in zip(images, rankings)], "warnings": warned}

    async def _embed(self, fields: EmbedRequest, uploads: dict[str, list[Upload]], deadline: float) -> dict:
        bundle, batcher = self._bundle(fields.bundle)
        if ("images" in uploads) == (fields.texts is not None):
            raise RequestError(422, "give 'images' or 'texts', one of them", "images")
        if fields.texts is not None:
            future = batcher.submit(Job("text", _inputs(fields.texts, "texts"), TEXT_BATCH, deadline))
        else:
            images = _inputs(uploads["images"], "images")
            with batcher.preparing():
                _, inputs = await self._in_pool(_decoded, bundle.encoder, images, False)
                future = batcher.submit(Job("image", inputs, IMAGE_BATCH, deadline))
        vectors = await _vectors(future, "texts" if fields.texts is not None else "images")
        return {"bundle": bundle.name, "dim": int(vectors.shape[1]), "vectors": vectors.tolist()}

    def _bundle(self, name: str | None) -> tuple[ServedBundle, Batcher]:
        name = name or self.models.default_bundle
        if name not in self.models.bundles:
            raise RequestError(404, f"unknown bundle {name!r}; served: {', '.join(self.models.bundles)}", "bundle")
        return self.models.bundles[name], self.batchers[name]

    async def _in_pool(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(function, *args))


async def _vectors(future: Future, field: str) -> np.ndarray:
    """A job's vectors; the encoder's refusal of an input (e.g. a text of unknown tokens only) names ``field``."""
    try:
        return await asyncio.wrap_future(future)
    except ClipMatchError as error:
        raise RequestError(400, str(error), field) from None


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _inputs(items: list | None, field: str) -> list:
    if not items:
        raise RequestError(422, f"field '{field}': field required (one or more)", field)
    if len(items) > MAX_INPUTS:
        raise RequestError(400, f"at most {MAX_INPUTS} {field} per request, got {len(items)}", field)
    return items


def _checked(field: str, function: Callable[..., T], *args: Any) -> T:
    """``function(*args)``, its `ClipMatchError` a 400 naming ``field``."""
    try:
        return function(*args)
    except ClipMatchError as error:
        raise RequestError(400, str(error), field) from None


def _grid_inputs(solver: GridSolver, uploads: dict[str, list[Upload]], layout: str, read: bool,
                 pattern: TimedPattern | None) -> tuple[list, int, Grid, PromptReading | None]:
    """What `GridSolver.solve` encodes: the puzzle's tiles (cropped as the bundle's calibration says),
    then the example image or the icon read as the prompt, if any (`at_model_size`); the tile count,
    the grid, and the prompt read from the image when ``read`` (as `GridSolver.solve` reads it)."""
    reading = None
    if "tiles" in uploads:
        tiles, grid = _checked("tiles", solver.tiles, [upload.data for upload in uploads["tiles"]], layout)
    else:
        image = _checked("image", open_image, uploads["image"][0].data, "puzzle image")
        tiles, grid = _checked("image", solver.tiles, image, layout)
        if read:
            try:
                reading = solver.read_prompt(image, grid, pattern)
            except PatternTimeout as error:  # (the pattern's fault, not the image's)
                raise RequestError(400, str(error), "prompt_pattern") from None
            except ClipMatchError as error:
                raise RequestError(400, str(error), "image") from None
    tiles = crop_margins(tiles, solver.tile_crop)
    count = len(tiles)
    if "example" in uploads:
        tiles.append(_checked("example", open_image, uploads["example"][0].data, "example image"))
    elif reading is not None and not isinstance(reading.prompt, str):
        tiles.append(reading.prompt)
    return at_model_size(solver.encoder, tiles), count, grid, reading


def _decoded(encoder: Encoder, images: list[Upload], keep: bool) -> tuple[list[Image.Image] | None, list]:
    """The encoder's inputs (`at_model_size`), and the decoded images if ``keep`` (an index's layout codes
    need them); otherwise each decoded image is dropped once resized, so a request holds one at a time."""
    pictures, inputs = [], []
    for image in images:
        picture = _checked(image.field, open_image, image.data, image.field)
        inputs += at_model_size(encoder, [picture])
        if keep:
            pictures.append(picture)
    return (pictures if keep else None), inputs


def at_model_size(encoder: Encoder, images: list[Image.Image]) -> list:
    """``images`` resized as `Encoder.encode_images` resizes them (`preprocess`: bicubic to the model's
    square in the image's own mode, then RGB), as uint8 arrays, so the resampling runs on the decoding
    threads instead of the encoder's: the encoder's own resize of an image already at its size is a
    copy (Pillow), so its input, and so each vector, is bit for bit what ``images`` give (tested). A model
    with a framing (crop to the content first) gets ``images`` as they are."""
    if encoder.framing is not None:
        return images
    size = (encoder.resolution, encoder.resolution)
    return [np.asarray(image.resize(size, Image.Resampling.BICUBIC).convert("RGB")) for image in images]


def _request_body(model: type[Body]) -> dict:
    """The OpenAPI request body of a /v1 endpoint: ``model`` as JSON, or as a multipart form with files."""
    form = model.model_json_schema()
    for name, many in model.files.items():
        binary = {"type": "string", "format": "binary"}
        form["properties"][name] = {"type": "array", "items": binary} if many else binary
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()},
                                                          "multipart/form-data": {"schema": form}}}}
