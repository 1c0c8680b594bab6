"""The VQA model on Ray Serve: checkpoint -> predictor -> :class:`VQAModel` replicas behind the gateway.

- :class:`VQAPredictor` (plain class, no Ray): a model + processor behind the
  :class:`~leaml.serve.vqa_app.Predictor` protocol. ``predict_batch`` answers a list of queries
  through the answering core (:func:`leaml.models.answer.answer`, as evaluation does): those with
  options scored (answer = the most likely option), the others generated greedily. Each query is
  first checked against the backbone's processor limits (:mod:`leaml.models.limits`); a batch
  that fails is retried one query at a time, so one bad query cannot fail its neighbours, and a
  query that fails alone while the model still answers its warm-up query is the input's fault:
  ``ModelInputError("model_rejected_input")``, a 422.
- :class:`BatchedPredictor`: the same interface with ``@serve.batch`` dynamic batching, so
  concurrent requests share forward passes (and, on the gateway, handle calls). Built inside a
  replica (``serve.batch`` needs a replica context), from the batch size and wait in the args.
- :class:`VQAModel` (plain class): one model replica, the predictor behind handle methods
  (``card``, ``predict_many``) and Serve's health check. Its HTTP front is
  :class:`~leaml.serve.gateway.VQAGateway`, and the one Serve application (the ``import_path``
  of ``serve_configs/vqa.yaml``) is :func:`leaml.serve.gateway.build_app`, which applies the Ray
  decorators, so this module imports and unit-tests without a cluster.
"""
from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import re
from pathlib import Path
from typing import Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator

from leaml.serve.auth import ApiKeySource
from leaml.serve.vqa_app import ModelCard, Prediction, Query, ServiceLimits, ServiceSettings, answer_or_raise

log = logging.getLogger("leaml.serve.vqa")
MODEL_NAME = "VQAModel"


class BatchingArgs(BaseModel):
    """Dynamic batching on a replica (``@serve.batch``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    enabled: bool = True
    """Off: one request per forward pass, in arrival order (the baseline of benchmarks/serving.py)."""
    max_batch_size: int = Field(8, ge=1, le=256)
    """Most requests per forward pass; keep max_ongoing_requests >= this, or batches never fill."""
    batch_wait_timeout_s: float = Field(0.01, ge=0.0, le=10.0)
    """Longest wait for a batch to fill; adds at most this to latency at low load."""


class ServeArgs(BaseModel):
    """What a :class:`VQAModel` replica is built from: the model part of the ``args`` of
    :func:`leaml.serve.gateway.build_app` (``serve_configs/vqa.yaml``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    checkpoint: str = Field(min_length=1)
    """A saved model: local directory, ``s3://`` prefix, or a hub id where the cluster reaches one."""
    model_id: str | None = None
    """Name reported to clients; default: the checkpoint's preset name or its last path component."""
    checkpoint_version: str | None = None
    """Version reported to clients; default: a hash of the checkpoint's weights and config files."""
    device: str = "cpu"
    """torch device (``cpu``, ``cuda``, ``cuda:1``); with ``cuda`` give the deployment ``num_gpus``."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Parameter dtype; bfloat16 halves GPU memory, float32 is the CPU default."""
    max_new_tokens: int = Field(16, ge=1, le=512)
    """Longest generated answer (questions without options); VQA answers are short."""
    score_rows_per_forward: int = Field(64, ge=1)
    """Sequences per forward pass when scoring options (``score_options``' ``batch_size``): queries,
    each continued by all its options, or (query, option) rows on the per-option fallback; bounds
    activation memory."""
    warmup: bool = True
    """Run one dummy query before reporting ready, so the first client does not pay for lazy init."""
    batching: BatchingArgs = BatchingArgs()
    """Dynamic batching settings."""
    limits: ServiceLimits = ServiceLimits()
    """Request limits (body bytes, pixels, video frames/length, question length, options)."""
    api_keys: ApiKeySource = ApiKeySource()
    """API keys source: ``{env: VAR_NAME}`` or ``{file: /path/to/secret}``."""
    docs: bool = True
    """Serve ``/docs`` and ``/openapi.json``."""

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", v):
            raise ValueError(f"device must be cpu, cuda, cuda:<n> or mps; got {v!r}")
        return v

    def service_settings(self) -> ServiceSettings:
        return ServiceSettings(limits=self.limits, api_keys=self.api_keys, docs=self.docs)


# ---------------------------------------------------------------------------------------------
# Predictor


def checkpoint_version(local_dir: Path) -> str:
    """First 12 hex digits of SHA-256 over the checkpoint's weight and config files (name + bytes)."""
    files = sorted(p for p in local_dir.glob("*") if p.is_file() and p.suffix in (".safetensors", ".json", ".bin"))
    if not files:
        return "unversioned"
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode() + b"\0")
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:12]


class VQAPredictor:
    """model + processor -> answers; implements :class:`~leaml.serve.vqa_app.Predictor`."""

    def __init__(self, model, processor, card: ModelCard, max_new_tokens: int = 16, score_rows_per_forward: int = 64):
        self.model, self.processor, self.card = model, processor, card
        self.max_new_tokens, self.score_rows_per_forward = max_new_tokens, score_rows_per_forward
        self._ready = False
        self._lock: asyncio.Lock | None = None

    @classmethod
    def load(cls, args: ServeArgs) -> "VQAPredictor":
        from leaml import storage
        from leaml.models.builders import INFO_ATTR, load_model

        model, processor = load_model(args.checkpoint, dtype=args.dtype, device=args.device)
        info = getattr(model, INFO_ATTR, {})
        local = storage.local_path(args.checkpoint)  # an s3:// prefix is in the cache once loaded
        version = args.checkpoint_version or (checkpoint_version(local) if local.is_dir() else "unversioned")
        card = ModelCard(
            id=args.model_id or info.get("preset") or args.checkpoint.rstrip("/").rsplit("/", 1)[-1],
            checkpoint_version=version,
            arch=model.config.model_type,
            max_batch_size=args.batching.max_batch_size if args.batching.enabled else 1,
        )
        predictor = cls(model, processor, card, args.max_new_tokens, args.score_rows_per_forward)
        if args.warmup:
            predictor.warmup()
        predictor._ready = True
        return predictor

    def is_ready(self) -> bool:
        return self._ready

    def warmup(self) -> None:
        img = Image.new("RGB", (64, 64), (128, 128, 128))
        self.predict_batch([Query([img], "warm up", ()), Query([img], "warm up", ("a", "b"))])

    def predict_batch(self, queries: list[Query]) -> list[Prediction]:
        """All queries through :func:`leaml.models.answer.answer`: the ones with options scored
        (answer = the most likely option), the others generated (answer stripped)."""
        from leaml.models.answer import answer
        from leaml.prompts import vqa_prompt

        answers = answer(
            self.model, self.processor, [q.frames for q in queries],
            [vqa_prompt(q.question, list(q.options)) for q in queries], [list(q.options) for q in queries],
            max_new_tokens=self.max_new_tokens, rows_per_forward=self.score_rows_per_forward,
        )
        return [Prediction(answer=a.text if a.scores is not None else a.text.strip(), scores=a.scores,
                           batch_size=len(queries)) for a in answers]

    def predict_many(self, queries: list[Query]) -> list[Prediction | Exception]:
        """:meth:`predict_batch` on the queries within the processor's limits, falling back to one
        query at a time if the batch fails; an exception in place of each query that failed."""
        from leaml.models.limits import ModelInputError, check_media, context_length

        results: dict[int, Prediction | Exception] = {}
        for i, q in enumerate(queries):
            try:
                check_media(self.processor, q.frames, context_length(self.model))
            except ModelInputError as e:
                results[i] = e
        todo = [i for i in range(len(queries)) if i not in results]
        results.update(zip(todo, self._predict_isolating([queries[i] for i in todo])))
        return [results[i] for i in range(len(queries))]

    def _predict_isolating(self, queries: list[Query]) -> list[Prediction | Exception]:
        if not queries:
            return []
        try:
            return self.predict_batch(queries)
        except Exception as e:  # noqa: BLE001 - isolate the failing query instead of failing all
            if len(queries) == 1:
                return [self._blame(e)]
            log.warning("batch of %d failed (%s); retrying one by one", len(queries), type(e).__name__)
        results: list[Prediction | Exception] = []
        for q in queries:
            try:
                results.extend(self.predict_batch([q]))
            except Exception as e:  # noqa: BLE001
                results.append(self._blame(e))
        return results

    def _blame(self, error: Exception) -> Exception:
        """A query that failed alone: the input's fault (422) if the model still answers its warm-up
        query, else the model's (500). The check costs one tiny forward, on failures only."""
        from leaml.models.limits import ModelInputError

        if isinstance(error, ModelInputError):
            return error
        try:
            self.warmup()
        except Exception:  # noqa: BLE001 - the model itself is broken (a sticky CUDA error, say):
            self._ready = False  # readyz and Serve's health check fail, and Serve replaces the replica
            log.error("the model fails its warm-up query; marking the replica unhealthy")
            return error
        log.warning("the model refused one input (%s); answered as model_rejected_input", type(error).__name__)
        return ModelInputError("model_rejected_input", "the model cannot process this input")

    async def predict(self, query: Query) -> Prediction:
        """Unbatched: one query per forward pass, one at a time, off the event loop."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            (result,) = await asyncio.to_thread(self.predict_many, [query])
        return answer_or_raise(result)


class BatchedPredictor:
    """A predictor's ``predict_many`` behind ``@serve.batch``, as a :class:`~leaml.serve.vqa_app.Predictor`:
    concurrent ``predict`` calls share one ``predict_many`` call. Construct inside a Serve replica.

    Used twice: on a model replica around :meth:`VQAPredictor.predict_many` (a forward pass, run in
    a worker thread so the replica's event loop keeps accepting and queueing requests), and on the
    gateway around :meth:`~leaml.serve.gateway.RemotePredictor.predict_many` (one handle call per
    batch instead of one per request: on two cores the per-call work of Serve, not the forward
    pass, bounded the batched service; see docs/PERFORMANCE.md)."""

    def __init__(self, predictor, max_batch_size: int, batch_wait_timeout_s: float, max_concurrent_batches: int = 1):
        from ray import serve

        self.predictor, self.card = predictor, predictor.card
        many = predictor.predict_many
        if not inspect.iscoroutinefunction(many):
            def many(queries, _sync=many):
                return asyncio.to_thread(_sync, queries)

        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s,
                     max_concurrent_batches=max_concurrent_batches)
        async def vqa_batch(queries: list[Query]) -> list[Prediction | Exception]:
            return await many(queries)

        self._batch = vqa_batch

    def is_ready(self) -> bool:
        return self.predictor.is_ready()

    async def predict(self, query: Query) -> Prediction:
        return answer_or_raise(await self._batch(query))


# ---------------------------------------------------------------------------------------------
# Serve deployment


def log_through_serve() -> None:
    """Send ``leaml.serve`` records through the replica's Serve logger (its files, format and
    request ids); without this they reach a root logger at WARNING and the access log is lost."""
    serve_logger = logging.getLogger("ray.serve")
    ours = logging.getLogger("leaml.serve")
    ours.setLevel(logging.INFO)
    ours.propagate = False
    for handler in serve_logger.handlers:
        if handler not in ours.handlers:
            ours.addHandler(handler)


class VQAModel:
    """One model replica: the predictor behind handle methods. Ray decorators are applied by
    :func:`leaml.serve.gateway.vqa_application`; the HTTP app runs in the gateway."""

    def __init__(self, args: dict):
        log_through_serve()
        self.args = ServeArgs.model_validate(args)
        self.predictor = VQAPredictor.load(self.args)
        b = self.args.batching
        self.answerer = (BatchedPredictor(self.predictor, b.max_batch_size, b.batch_wait_timeout_s)
                         if b.enabled else self.predictor)

    def card(self) -> ModelCard:
        return self.predictor.card

    async def predict_many(self, queries: list[Query]) -> list[Prediction | Exception]:
        """The gateway's handle method: queries it sent together, each answered or its error in its
        place (a ``ModelInputError`` crosses the handle intact). Each goes through the replica's
        answerer, so batches from several gateway calls that wait while the model is busy merge
        into its next forward pass."""
        return await asyncio.gather(*(self.answerer.predict(q) for q in queries), return_exceptions=True)

    def check_health(self) -> None:
        """Serve's periodic health check: a replica whose model is gone is restarted."""
        if not self.predictor.is_ready():
            raise RuntimeError("VQA model not loaded")
