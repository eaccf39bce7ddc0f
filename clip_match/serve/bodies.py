"""Request bodies: their JSON schemas (pydantic models, shown in the OpenAPI docs) and reading a JSON
or multipart body into them.

JSON carries images as base64 strings (a ``data:...;base64,`` prefix is allowed) and is validated
strictly (``"k": "2"`` or ``"k": true`` is a wrong type); a multipart form carries them as file
uploads under the same field names, its other fields as plain form fields (converted, so ``k=2`` is
an integer). Structural faults (malformed JSON, wrong types, missing or unknown fields) are 422s
naming the field; values out of range are 400s, raised by the endpoints.
"""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

MAX_INPUTS = 256   # images or texts in one request
MAX_TOP_K = 1000



@dataclass(frozen=True)
class Upload:
    """One image of a request: the field that carried it (``images[2]``, what errors name), the name
    answers give it (its file name when uploaded with one, else the field) and its bytes."""

    field: str
    name: str
    data: bytes


class RequestError(Exception):
    """A request the server refuses: its HTTP status, a message for the client and the field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


_B64 = "base64 of the file's bytes (in a multipart form: a file upload)"


class Body(BaseModel):
    """Fields every request may carry; ``files`` lists the image fields (True: several images)."""

    model_config = ConfigDict(extra="forbid")
    files: ClassVar[dict[str, bool]] = {}
    lists: ClassVar[tuple[str, ...]] = ()     # non-file fields that take several values
    bundle: str | None = Field(None, description="model bundle name (default: the server's first)")


class GridRequest(Body):
    files: ClassVar[dict[str, bool]] = {"image": False, "tiles": True, "example": False}
    image: str | None = Field(None, description=f"the puzzle image: {_B64}")
    tiles: list[str] | None = Field(None, description=f"or its 6 or 9 tile images, row-major: {_B64}")
    text: str | None = Field(None, description="the prompt, e.g. 雨伞 (without text or example: read from the image)")
    example: str | None = Field(None, description=f"or an example image to match instead of a text: {_B64}")
    prompt_pattern: str | None = Field(None, description="reading the prompt: a regular expression with one named "
                                                         "group, the target, e.g. 找到(?P<target>.+?)的图片")
    layout: str = Field("auto", description="auto, 2x3 or 3x3 (rows x columns)")
    k: int | None = Field(None, description="number of matching tiles, when known (1 to the tile count)")
    threshold: float | None = Field(None, description="k unknown: choose tiles scoring at least this cosine (-1 to 1)")
    zero_based: bool = Field(False, description="0-based [row, col] instead of 1-based")


class QueryRequest(Body):
    files: ClassVar[dict[str, bool]] = {"images": True}
    images: list[str] | None = Field(None, description=f"images to label: {_B64}")
    index: str = Field(description="candidate index name")
    top_k: int = Field(5, description=f"results per image, 1 to {MAX_TOP_K}")


class EmbedRequest(Body):
    files: ClassVar[dict[str, bool]] = {"images": True}
    lists: ClassVar[tuple[str, ...]] = ("texts",)
    images: list[str] | None = Field(None, description=f"images to embed: {_B64}")
    texts: list[str] | None = Field(None, description="or texts to embed")


async def read_body(request: Request, model: type[Body]) -> tuple[Body, dict[str, list[Upload]]]:
    """The validated fields and the uploaded images by field (only those given)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        return await _read_json(request, model)
    if content_type == "multipart/form-data":
        return await _read_form(request, model)
    raise RequestError(415, f"send application/json or multipart/form-data, not {content_type or 'no content type'}",
                       "content-type")


async def _read_json(request: Request, model: type[Body]) -> tuple[Body, dict[str, list[Upload]]]:
    try:
        data = json.loads(await request.body())
    except (ValueError, RecursionError) as error:  # (UnicodeDecodeError included; RecursionError: nested too deep)
        raise RequestError(422, f"malformed JSON: {error}", "body") from None
    if not isinstance(data, dict):
        raise RequestError(422, f"the body must be a JSON object, not {type(data).__name__}", "body")
    fields = _validated(model, data, strict=True)
    uploads = {}
    for name, many in model.files.items():
        value = getattr(fields, name)
        if value is not None:
            values = value if many else [value]
            uploads[name] = [_base64(item, _item_name(name, index, many)) for index, item in enumerate(values)]
    return fields, uploads


async def _read_form(request: Request, model: type[Body]) -> tuple[Body, dict[str, list[Upload]]]:
    try:
        form = await request.form(max_files=MAX_INPUTS + 2, max_fields=MAX_INPUTS + 16)
    except HTTPException as error:  # a malformed multipart body
        raise RequestError(422, f"malformed multipart body: {error.detail}", "body") from None
    try:
        data, uploads = {}, {}
        for name in dict.fromkeys(form.keys()):
            values = form.getlist(name)
            if name in model.files:
                many = model.files[name]
                if not many and len(values) > 1:
                    raise RequestError(422, f"field '{name}': one file, not {len(values)}", name)
                uploads[name] = [await _file(value, _item_name(name, index, many))
                                 for index, value in enumerate(values)]
                continue
            if any(isinstance(value, UploadFile) for value in values):
                raise RequestError(422, f"field '{name}': a plain form field, not a file", name)
            if name in model.lists:
                data[name] = values
            elif len(values) > 1:
                raise RequestError(422, f"field '{name}': given {len(values)} times", name)
            else:
                data[name] = values[0]
    finally:
        await form.close()
    return _validated(model, data, strict=False), uploads


def _validated(model: type[Body], data: dict, strict: bool) -> Body:
    try:
        return model.model_validate(data, strict=strict)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "body"
        message = "field required" if first["type"] == "missing" else first["msg"]
        raise RequestError(422, f"field '{field}': {message}", field) from None


def _base64(value: str, name: str) -> Upload:
    if value.startswith("data:") and ";base64," in value[:200]:
        value = value.split(",", 1)[1]
    try:
        return Upload(name, name, base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError):
        raise RequestError(422, f"field '{name}': not valid base64", name) from None


async def _file(value: object, name: str) -> Upload:
    if not isinstance(value, UploadFile):
        raise RequestError(422, f"field '{name}': a file upload, not a plain form field", name)
    return Upload(name, value.filename or name, await value.read())


def _item_name(field: str, index: int, many: bool) -> str:
    return f"{field}[{index}]" if many else field


# ---- answers (for the OpenAPI schema; the endpoints build plain dicts) ----------------------
class GridAnswer(BaseModel):
    """`GridResult.to_dict()`, the fields of `clip-match grid --json`, and the warnings."""

    layout: str
    coordinates: list[list[int]]
    scores: list[float]
    selected: list[bool]
    rule: str
    split: str
    zero_based: bool
    tile_crop: float
    prompt_source: str = Field(description="given, or read from the image: ocr-text or header-icon")
    prompt: str | None = Field(description="the target read (null when given, or an icon)")
    prompt_read: str | None = Field(description="the text read around the grid, lines joined by newlines")
    prompt_box: list[int] | None = Field(description="the icon's left, top, right, bottom in the image")
    warnings: list[str] = Field(description="what `clip-match grid` would warn of, e.g. a prompt truncated")


class HitAnswer(BaseModel):
    rank: int
    id: str
    text: str
    key: str
    score: float
    probability: float
    metadata: dict


class SoftmaxAnswer(BaseModel):
    scope: str
    over: int


class RankingAnswer(BaseModel):
    """One line of `clip-match query --json`."""

    image: str
    results: list[HitAnswer]
    softmax: SoftmaxAnswer


class QueryAnswer(BaseModel):
    rankings: list[RankingAnswer]
    warnings: list[str] = Field(description="what `clip-match query` would note, e.g. top_k over the candidates")


class EmbedAnswer(BaseModel):
    bundle: str
    dim: int
    vectors: list[list[float]] = Field(description="L2-normalised float32 vectors, one per input")


class ErrorAnswer(BaseModel):
    error: str
    field: str | None
    request_id: str
