"""The VQA REST API as a plain FastAPI app: ``create_app(settings, predictor)``, no Ray needed.

HTTP request -> API key check -> bounded body read -> JSON or multipart parse -> text checks ->
media sniffed and decoded under :class:`~leaml.media.MediaLimits` -> ``predictor.predict`` -> JSON.

- ``POST /v1/vqa``: an image or short video (base64 in JSON, or a multipart upload), a question and
  optional options. With options the answer is the highest-scoring option and every option gets a
  normalised score (they sum to 1); without options the answer is the model's greedy generation.
- ``GET /healthz`` (process alive), ``GET /readyz`` (model loaded), ``GET /v1/models``.

Every refusal is a 4xx ``{"error": {"code", "message", "request_id"}}`` with a code from
:data:`ERROR_STATUS`; a model that is loading or whose replica died (:class:`PredictorUnavailable`)
is a 503 with ``Retry-After``, which a client may retry as is. The key is checked before the body
is read, so a request without a valid key costs no parsing, decoding or model time. One log line
per request carries the request id, sizes, timings and outcome, never the question, the options or
media bytes; error messages (which may quote client input) go to the client only.

The model side is the :class:`Predictor` protocol (``leaml.serve.vqa_deployment`` implements it
with dynamic batching on Ray Serve); tests pass a deterministic fake with the same interface.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Literal, Protocol, Sequence

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartParser
from starlette.datastructures import UploadFile

from leaml.media import MediaError, MediaLimits, decode_image, decode_video, sniff_kind
from leaml.models.limits import ModelInputError
from leaml.serve.auth import ApiKeySource, ApiKeyStore
from leaml.serve.metrics import LocalMetrics, Metrics, outcome_of

log = logging.getLogger("leaml.serve.vqa")

API_DESCRIPTION = (
    "Visual question answering for clinicians' apps. Send an image or a short video with a question "
    "and, optionally, answer options. With options, the answer is the highest-scoring option and "
    "every option gets a normalised score; without, the answer is the model's greedy generation. "
    "Authenticate with `Authorization: Bearer <key>` or `X-API-Key: <key>`. Every refusal is a 4xx "
    '`{"error": {"code", "message", "request_id"}}` with a stable code.'
)

# Stable error codes -> HTTP status. Media codes are those of leaml.media.MediaError.
ERROR_STATUS: dict[str, int] = {
    "invalid_json": 400,  # the body is not JSON
    "invalid_multipart": 400,  # the body is not well-formed multipart/form-data
    "unauthorized": 401,  # no API key, or not a valid one
    "not_found": 404,
    "method_not_allowed": 405,
    "payload_too_large": 413,  # body over limits.max_body_bytes
    "too_large": 413,  # media bytes, pixels, frames or seconds over limits.media
    "decompression_bomb": 413,  # an image header claiming far more pixels than allowed
    "unsupported_content_type": 415,  # neither application/json nor multipart/form-data
    "not_an_image": 415,  # media bytes of no image or video format we accept (sniffed)
    "unsupported_type": 415,  # a recognised format this server cannot use
    "invalid_request": 422,  # the body does not match the schema (missing/extra/mistyped field)
    "invalid_base64": 422,
    "empty_question": 422,
    "question_too_long": 422,
    "too_many_options": 422,
    "invalid_options": 422,  # fewer than 2, empty, duplicated, too long, or containing '|'
    "truncated": 422,  # an image whose data ends early
    "corrupt": 422,  # an image that fails to decode
    "bad_video": 422,  # a video that cannot be probed or decoded
    "unsupported_aspect_ratio": 422,  # a frame too long and thin for the model's processor (Qwen2.5-VL: 200:1)
    "too_many_tokens": 413,  # frames that need more tokens than the model's context holds
    "model_rejected_input": 422,  # the model fails on this input alone while it answers others
    "not_ready": 503,  # the model is not loaded yet
    "model_unavailable": 503,  # the model replica died or none answered in time; retry after Retry-After
    "internal": 500,  # a bug or model failure; never caused by input alone
}


NOT_READY_RETRY_AFTER_S = 5
"""``Retry-After`` of a 503 ``not_ready``: loading a model takes seconds to minutes."""


class ApiError(Exception):
    """A refusal with a stable ``code``; its message goes to the client, never to the logs.
    ``retry_after_s`` (503s) becomes a ``Retry-After`` header."""

    def __init__(self, code: str, message: str, retry_after_s: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = ERROR_STATUS[code]
        self.retry_after_s = retry_after_s


class PredictorUnavailable(RuntimeError):
    """Raised by a :class:`Predictor` whose model cannot answer now but will soon (its replica died
    mid-request and is being replaced, or none answered in time): a 503 ``model_unavailable``
    with ``Retry-After: retry_after_s``. The request did not fail because of its input."""

    def __init__(self, message: str, retry_after_s: int = 1):
        super().__init__(message)
        self.retry_after_s = retry_after_s


# ---------------------------------------------------------------------------------------------
# Settings


SERVICE_MEDIA_LIMITS = MediaLimits(
    max_bytes=10_000_000,  # endoscopy frames are 1-2 MP; a 10 MB JPEG is already generous
    max_pixels=25_000_000,
    max_video_bytes=10_000_000,  # "short video": seconds of clip, not an examination recording
    max_frames=32,
    max_video_frames=3_600,  # two minutes at 30 fps
    max_video_seconds=120.0,
)


class ServiceLimits(BaseModel):
    """What one request may cost; checked before any expensive work."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    max_body_bytes: int = Field(16_000_000, gt=0)
    """Largest request body; base64 in JSON is 4/3 of the media size, so keep it >= 1.34 x media."""
    max_question_chars: int = Field(1000, gt=0)
    """Longest question, in characters as sent (the schema's maxLength)."""
    max_options: int = Field(26, ge=2)
    """Most answer options per question."""
    max_option_chars: int = Field(200, gt=0)
    """Longest option, in characters as sent (the schema's maxLength)."""
    video_frames: int = Field(8, gt=0)
    """Frames sampled uniformly from a video (more frames: more context, more model time)."""
    max_concurrent_decodes: int = Field(4, gt=0)
    """Media decoded at once per replica; bounds decode memory (a 25 MP frame is 75 MB as RGB)."""
    media: MediaLimits = SERVICE_MEDIA_LIMITS
    """Byte, pixel, frame and duration bounds passed to ``leaml.media``."""

    @field_validator("media", mode="before")
    @classmethod
    def _media_over_service_defaults(cls, v):
        # A partial `media:` mapping in a config overrides the service defaults, not MediaLimits'
        # (which suit offline datasets: 200 MB videos would be wrong for a REST endpoint).
        return {**SERVICE_MEDIA_LIMITS.model_dump(), **v} if isinstance(v, dict) else v

    @model_validator(mode="after")
    def _consistent(self) -> "ServiceLimits":
        if self.video_frames > self.media.max_frames:
            raise ValueError(f"video_frames={self.video_frames} exceeds media.max_frames={self.media.max_frames}")
        return self


class ServiceSettings(BaseModel):
    """Everything the HTTP layer needs besides the predictor."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    limits: ServiceLimits = ServiceLimits()
    """Request limits."""
    api_keys: ApiKeySource = ApiKeySource()
    """Where the API keys come from (env var name or secret file path)."""
    docs: bool = True
    """Serve ``/docs`` and ``/openapi.json`` (public, no key needed: the schema holds no secrets)."""


# ---------------------------------------------------------------------------------------------
# The model side


class ModelCard(BaseModel):
    """What is being served; ``GET /v1/models`` lists it, every answer carries id and version."""

    id: str
    checkpoint_version: str
    arch: str | None = None
    max_batch_size: int = 1


@dataclass(frozen=True)
class Query:
    frames: list[Image.Image]  # one image, or the sampled frames of a video
    question: str
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Prediction:
    answer: str
    scores: list[float] | None = None  # one per option, summing to 1; None without options
    batch_size: int = 1  # queries that shared this forward pass (dynamic batching)


def answer_or_raise(result: Prediction | Exception) -> Prediction:
    """One query's outcome from a batch call (``predict_many``): its prediction, or its error raised."""
    if isinstance(result, Exception):
        raise result
    return result


class Predictor(Protocol):
    card: ModelCard

    def is_ready(self) -> bool: ...

    async def predict(self, query: Query) -> Prediction: ...


# ---------------------------------------------------------------------------------------------
# Wire schema


class VQARequest(BaseModel):
    """JSON body of ``POST /v1/vqa``."""

    model_config = ConfigDict(extra="forbid")

    media: str = Field(description=(
        "Base64 (or a `data:...;base64,` URL) of one image (PNG, JPEG, GIF, WEBP, BMP) or one short "
        "video (MP4, MOV, MKV, WEBM, AVI). The kind is sniffed from the bytes; any declared type is ignored."
    ))
    question: str = Field(description="The question about the media.")
    options: list[str] | None = Field(None, description=(
        "Answer options. When given, the answer is the highest-scoring option and `scores` lists "
        "every option's normalised likelihood."
    ))


class OptionScore(BaseModel):
    option: str
    score: float = Field(description="Normalised likelihood of this option; scores sum to 1.")


class MediaInfo(BaseModel):
    kind: Literal["image", "video"]
    frames: int
    width: int
    height: int


class Timing(BaseModel):
    decode_ms: float
    inference_ms: float = Field(description="Model time, including the wait for a batch to fill.")
    total_ms: float


class VQAResponse(BaseModel):
    request_id: str
    answer: str = Field(description="The highest-scoring option if options were given, else the greedy generation.")
    scores: list[OptionScore] | None = Field(
        None, description="Per-option scores, in request order; null without options.")
    model_id: str
    checkpoint_version: str
    media: MediaInfo
    timing: Timing
    batch_size: int = Field(description="Requests that shared this forward pass (dynamic batching).")


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. `unauthorized`, `truncated`, `too_many_options`.")
    message: str
    request_id: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class Status(BaseModel):
    status: str


class ModelList(BaseModel):
    data: list[ModelCard]


def _request_schemas(limits: ServiceLimits) -> dict:
    """OpenAPI request bodies of ``POST /v1/vqa`` with this deployment's limits filled in."""
    question = {"type": "string", "minLength": 1, "maxLength": limits.max_question_chars}
    options = {
        "type": "array", "maxItems": limits.max_options,
        "items": {"type": "string", "minLength": 1, "maxLength": limits.max_option_chars},
    }
    json_schema = VQARequest.model_json_schema()
    json_schema["properties"]["question"].update(question)
    json_schema["properties"]["options"] = {"anyOf": [options, {"type": "null"}], "default": None,
                                            "description": json_schema["properties"]["options"]["description"]}
    multipart = {
        "type": "object",
        "required": ["file", "question"],
        "properties": {
            "file": {"type": "string", "format": "binary", "description": "The image or video file."},
            "question": question,
            "options": {**options, "description": "Repeat the field once per option."},
        },
    }
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": json_schema},
        "multipart/form-data": {"schema": multipart},
    }}}


_ERROR_RESPONSES = {
    s: {"model": ErrorResponse, "description": ", ".join(c for c, v in ERROR_STATUS.items() if v == s)}
    for s in sorted(set(ERROR_STATUS.values()) - {404, 405})
}


# ---------------------------------------------------------------------------------------------
# Per-request record and middleware


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


@dataclass
class RequestRecord:
    """What the access log and metrics say about one request: ids, sizes, timings, outcome."""

    request_id: str
    start: float = field(default_factory=time.perf_counter)
    code: str | None = None
    body_bytes: int | None = None
    media_kind: str | None = None
    frames: int | None = None
    pixels: int | None = None
    question_chars: int | None = None
    options: int | None = None
    decode_ms: float | None = None
    inference_ms: float | None = None


def _record(request: Request) -> RequestRecord:
    return request.scope["state"]["leaml_record"]


class RequestLogMiddleware:
    """Pure ASGI: assigns the request id, then logs and counts each request once it ends."""

    def __init__(self, app, metrics: Metrics, endpoints: frozenset[str]):
        self.app, self.metrics, self.endpoints = app, metrics, endpoints

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rec = RequestRecord(request_id=given if _REQUEST_ID.match(given) else uuid.uuid4().hex)
        scope.setdefault("state", {})["leaml_record"] = rec
        status = 500

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rec.request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:  # the client went away mid-request
            status, rec.code = 499, "client_closed"
            raise
        except BaseException:
            status, rec.code = 500, rec.code or "internal"
            raise
        finally:
            self._finish(scope, rec, status)

    def _finish(self, scope, rec: RequestRecord, status: int) -> None:
        seconds = time.perf_counter() - rec.start
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):  # behind a Serve route_prefix
            path = path[len(root):]
        endpoint = path if path in self.endpoints else "other"  # never log an arbitrary client path
        outcome = outcome_of(status)
        code = rec.code or ("ok" if status < 400 else f"http_{status}")
        self.metrics.observe(endpoint, outcome, code, seconds)
        sizes = {
            "body_bytes": rec.body_bytes, "media": rec.media_kind, "frames": rec.frames, "pixels": rec.pixels,
            "question_chars": rec.question_chars, "options": rec.options,
            "decode_ms": _ms(rec.decode_ms), "inference_ms": _ms(rec.inference_ms),
        }
        extra = "".join(f" {k}={v}" for k, v in sizes.items() if v is not None)
        log.info("request id=%s method=%s endpoint=%s status=%d outcome=%s code=%s total_ms=%.1f%s",
                 rec.request_id, scope["method"], endpoint, status, outcome, code, seconds * 1000, extra)


def _ms(v: float | None) -> str | None:
    return None if v is None else f"{v:.1f}"


def _error(rec: RequestRecord | None, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    if rec is not None:
        rec.code = code
    body = ErrorResponse(error=ErrorBody(code=code, message=message, request_id=rec and rec.request_id))
    return JSONResponse(body.model_dump(), status_code=ERROR_STATUS[code], headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    def rec_of(request: Request) -> RequestRecord | None:
        return request.scope.get("state", {}).get("leaml_record")

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.code == "unauthorized" else {}
        if exc.retry_after_s is not None:
            headers["Retry-After"] = str(exc.retry_after_s)
        return _error(rec_of(request), exc.code, exc.message, headers or None)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return _error(rec_of(request), "invalid_request", _describe(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        if code is None:  # no other HTTPException is raised by this app; keep the status anyway
            return JSONResponse({"error": {"code": f"http_{exc.status_code}", "message": str(exc.detail)}},
                                status_code=exc.status_code)
        return _error(rec_of(request), code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        return _error(rec_of(request), "internal", "internal error")


def _describe(errors: Sequence[dict]) -> str:
    """A validation error without the offending input values (they may be large or private)."""
    parts = [f"{'.'.join(str(p) for p in e.get('loc', ())) or 'body'}: {e.get('msg', 'invalid')}" for e in errors[:5]]
    return "; ".join(parts)[:500]


# ---------------------------------------------------------------------------------------------
# Request parsing


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError("payload_too_large", f"body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError("payload_too_large", f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass
class ParsedRequest:
    media: bytes
    question: str
    options: list[str]


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def parse_json(body: bytes, limits: ServiceLimits) -> ParsedRequest:
    try:
        req = VQARequest.model_validate_json(body)
    except ValidationError as e:
        errors = e.errors(include_input=False, include_url=False)
        if any(err["type"] == "json_invalid" for err in errors):
            raise ApiError("invalid_json", "body is not valid JSON") from None
        raise ApiError("invalid_request", _describe(errors)) from None
    return ParsedRequest(_decode_base64(req.media, limits), req.question, req.options or [])


def _decode_base64(text: str, limits: ServiceLimits) -> bytes:
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        if not sep or not header.endswith(";base64"):
            raise ApiError("invalid_base64", "a data URL must be of the form data:<type>;base64,<data>")
    text = "".join(text.split())  # MIME-style line breaks are common in base64 from other tools
    cap = max(limits.media.max_bytes, limits.media.max_video_bytes)
    if len(text) // 4 * 3 > cap + 3:
        raise ApiError("too_large", f"media is about {len(text) // 4 * 3} bytes; the limit is {cap}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError("invalid_base64", "`media` is not valid base64") from None


class _InMemoryMultiPartParser(MultiPartParser):
    # Uploads stay in memory (the body is already bounded): medical images never touch /tmp.
    def __init__(self, *args, spool_max_size: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.spool_max_size = spool_max_size


async def parse_multipart(request: Request, body: bytes, limits: ServiceLimits) -> ParsedRequest:
    async def stream():
        yield body

    parser = _InMemoryMultiPartParser(
        # one field over the option limit still parses, so it is refused as too_many_options
        request.headers, stream(), max_files=1, max_fields=limits.max_options + 2,
        max_part_size=4 * max(limits.max_question_chars, limits.max_option_chars) + 1024,
        spool_max_size=limits.max_body_bytes + 1,
    )
    try:
        form = await parser.parse()
    except Exception:  # noqa: BLE001 - hostile bytes: any parser failure is the client's
        raise ApiError("invalid_multipart", "body is not well-formed multipart/form-data") from None
    try:
        return await _form_fields(form)
    finally:
        await form.close()


async def _form_fields(form) -> ParsedRequest:
    unknown = sorted({k for k in form.keys() if k not in ("file", "question", "options")})
    if unknown:
        raise ApiError("invalid_request", f"unknown form fields: {', '.join(unknown)[:200]}")
    files = [v for v in form.getlist("file") if isinstance(v, UploadFile)]
    questions = form.getlist("question")
    if len(files) != 1 or len(form.getlist("file")) != 1:
        raise ApiError("invalid_request", "send exactly one `file` part with a filename")
    if len(questions) != 1 or not isinstance(questions[0], str):
        raise ApiError("invalid_request", "send exactly one `question` text field")
    options = form.getlist("options")
    if not all(isinstance(o, str) for o in options):
        raise ApiError("invalid_request", "`options` must be text fields")
    return ParsedRequest(await files[0].read(), questions[0], list(options))


def check_text(question: str, options: list[str], limits: ServiceLimits) -> tuple[str, tuple[str, ...]]:
    """Trimmed question and options, or an :class:`ApiError` saying which limit they break."""
    # Lengths are of the text as sent, as the OpenAPI schema's maxLength states (schemathesis sent a
    # question of 1,000 characters plus padding, which the trimmed count let through).
    if len(question) > limits.max_question_chars:
        raise ApiError("question_too_long",
                       f"question has {len(question)} characters; the limit is {limits.max_question_chars}")
    q = question.strip()
    if not q:
        raise ApiError("empty_question", "`question` is empty")
    if len(options) > limits.max_options:
        raise ApiError("too_many_options", f"{len(options)} options; the limit is {limits.max_options}")
    opts = tuple(o.strip() for o in options)
    if opts:
        if len(opts) < 2:
            raise ApiError("invalid_options", "give at least 2 options, or none")
        if any(not o or "|" in o or len(raw) > limits.max_option_chars for o, raw in zip(opts, options)):
            raise ApiError("invalid_options",
                           f"options must be non-empty, at most {limits.max_option_chars} characters, without '|'")
        if len(set(opts)) != len(opts):
            raise ApiError("invalid_options", "options repeat")
    return q, opts


def decode_media(data: bytes, limits: ServiceLimits) -> tuple[str, list[Image.Image]]:
    """Bytes -> ("image", [img]) or ("video", frames); the kind is sniffed from the content."""
    kind = "video" if sniff_kind(data) == "video" else "image"  # None: decode_image says not_an_image
    try:
        if kind == "video":
            return kind, decode_video(data, limits.video_frames, limits.media)
        return kind, [decode_image(data, limits.media)]
    except MediaError as e:
        raise ApiError(e.code, e.args[0]) from None
    except ImportError:
        raise ApiError("unsupported_type", f"this server cannot decode {kind}s") from None
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - a decoder tripping on hostile bytes
        log.warning("decoder raised %s on %s input; refused as %s", type(e).__name__, kind,
                    "bad_video" if kind == "video" else "corrupt")
        raise ApiError("bad_video" if kind == "video" else "corrupt", f"{kind} does not decode") from None


# ---------------------------------------------------------------------------------------------
# The app


def create_app(
    settings: ServiceSettings,
    predictor: Predictor,
    *,
    metrics: Metrics | None = None,
    keys: ApiKeyStore | None = None,
) -> FastAPI:
    """The FastAPI app; ``keys`` defaults to ``settings.api_keys`` (an empty source is an error)."""
    keys = keys if keys is not None else ApiKeyStore(settings.api_keys)
    limits = settings.limits
    decode_slots = asyncio.Semaphore(limits.max_concurrent_decodes)
    app = FastAPI(
        title="LEAML VQA", version="1",
        description=API_DESCRIPTION,
        docs_url="/docs" if settings.docs else None, redoc_url=None,
        openapi_url="/openapi.json" if settings.docs else None,
    )
    app.state.metrics = metrics if metrics is not None else LocalMetrics()
    app.state.predictor = predictor
    _install_error_handlers(app)

    bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <key>`")
    header = APIKeyHeader(name="X-API-Key", auto_error=False, description="`X-API-Key: <key>`")

    def require_key(
        creds: HTTPAuthorizationCredentials | None = Depends(bearer), api_key: str | None = Depends(header)
    ) -> None:
        if not keys.check(api_key or (creds.credentials if creds else None)):
            raise ApiError("unauthorized", "a valid API key is required (Authorization: Bearer or X-API-Key)")

    @app.get("/healthz", response_model=Status, tags=["ops"])
    async def healthz() -> Status:
        """The process is alive (no key needed)."""
        return Status(status="ok")

    @app.get("/readyz", response_model=Status, tags=["ops"], responses={503: _ERROR_RESPONSES[503]})
    async def readyz() -> Status:
        """The model is loaded and warmed up (no key needed)."""
        if not predictor.is_ready():
            raise ApiError("not_ready", "the model is still loading")
        return Status(status="ready")

    @app.get("/v1/models", response_model=ModelList, dependencies=[Depends(require_key)],
             responses={401: _ERROR_RESPONSES[401]})
    async def models() -> ModelList:
        """The served model: id, checkpoint version, architecture."""
        return ModelList(data=[predictor.card])

    @app.post("/v1/vqa", response_model=VQAResponse, dependencies=[Depends(require_key)],
              responses=_ERROR_RESPONSES, openapi_extra=_request_schemas(limits))
    async def vqa(request: Request) -> VQAResponse:
        """Answer a question about an image or a short video.

        With `options`, the answer is the highest-scoring option and `scores` gives each option's
        normalised likelihood (use it to show confidence or to abstain). Without options, the
        answer is the model's greedy generation.
        """
        rec = _record(request)
        kind = _content_type(request)
        if kind not in ("application/json", "multipart/form-data"):
            raise ApiError("unsupported_content_type", "send application/json or multipart/form-data")
        body = await read_body(request, limits.max_body_bytes)
        rec.body_bytes = len(body)
        if kind == "application/json":
            parsed = parse_json(body, limits)
        else:
            parsed = await parse_multipart(request, body, limits)
        question, options = check_text(parsed.question, parsed.options, limits)
        rec.question_chars, rec.options = len(question), len(options)
        if not predictor.is_ready():
            raise ApiError("not_ready", "the model is still loading", retry_after_s=NOT_READY_RETRY_AFTER_S)

        t0 = time.perf_counter()
        async with decode_slots:
            media_kind, frames = await run_in_threadpool(decode_media, parsed.media, limits)
        rec.decode_ms = (time.perf_counter() - t0) * 1000
        rec.media_kind, rec.frames = media_kind, len(frames)
        rec.pixels = frames[0].width * frames[0].height

        t1 = time.perf_counter()
        try:
            pred = await predictor.predict(Query(frames=frames, question=question, options=options))
        except ModelInputError as e:  # the input's fault, known before or isolated by the predictor
            raise ApiError(e.code if e.code in ERROR_STATUS else "model_rejected_input", e.message) from None
        except PredictorUnavailable as e:  # not this request's fault: the same request may be retried
            raise ApiError("model_unavailable", str(e), retry_after_s=e.retry_after_s) from None
        except Exception as e:  # noqa: BLE001 - logged by type and frames only: messages may quote input
            log.error("predictor failed id=%s error=%s\n%s", rec.request_id, type(e).__name__,
                      "".join(traceback.format_tb(e.__traceback__)))
            raise ApiError("internal", "the model failed on this request") from None
        rec.inference_ms = (time.perf_counter() - t1) * 1000
        return _response(rec, predictor.card, pred, options, media_kind, frames)

    app.add_middleware(
        RequestLogMiddleware, metrics=app.state.metrics,
        endpoints=frozenset(r.path for r in app.routes if hasattr(r, "path")),
    )
    return app


def _response(rec: RequestRecord, card: ModelCard, pred: Prediction, options: tuple[str, ...],
              kind: str, frames: list[Image.Image]) -> VQAResponse:
    scores = None
    if options:
        if pred.scores is None or len(pred.scores) != len(options):
            raise ApiError("internal", "the model returned no score per option")
        scores = [OptionScore(option=o, score=float(s)) for o, s in zip(options, pred.scores)]
    total = (time.perf_counter() - rec.start) * 1000
    return VQAResponse(
        request_id=rec.request_id, answer=pred.answer, scores=scores, model_id=card.id,
        checkpoint_version=card.checkpoint_version,
        media=MediaInfo(kind=kind, frames=len(frames), width=frames[0].width, height=frames[0].height),
        timing=Timing(decode_ms=rec.decode_ms or 0.0, inference_ms=rec.inference_ms or 0.0, total_ms=total),
        batch_size=pred.batch_size,
    )
