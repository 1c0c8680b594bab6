"""The VQA service as shipped (``serve_configs/vqa.yaml``): two deployments, so that a dead model
replica is a 503, not a 500:
HTTP request -> :class:`VQAGateway` (auth, parsing, decoding, limits) -> handle ->
:class:`~leaml.serve.vqa_deployment.VQAModel`.

With the HTTP app in the model's process (one deployment, ``benchmarks/serve_load.py --topology
single``), a replica that is SIGKILLed (OOM killer, a node lost, a CUDA crash) takes its requests
in flight with it, and Serve's proxy answers each with a plain-text ``500 Internal Server Error``
that no client can tell from a bug. Here the app (:func:`~leaml.serve.vqa_app.create_app`) runs in
a gateway replica that holds no model and calls model replicas through a deployment handle
(:class:`RemotePredictor`):

- a model replica dies mid-request: the request is answered 503 ``model_unavailable`` with
  ``Retry-After``; Serve replaces the replica, and requests that arrive meanwhile wait in the
  handle's queue for it (up to ``gateway.model_timeout_s``, then the same 503: never a hang);
- bad input, a missing key and ``/healthz`` are still answered by the gateway while no model
  replica is up: they never reach, nor wait for, a model.

- with batching on, the gateway collects concurrent requests into one handle call
  (:class:`~leaml.serve.vqa_deployment.BatchedPredictor` around :meth:`RemotePredictor.predict_many`)
  and a model replica runs what is queued as one forward pass: Serve's work per handle call is paid
  once a batch, not once a request.

What it costs: one more process, light (it imports the processor limits, not torch: see
``leaml.models``), and decoded frames cross the object store to the model replica. The gateway
replica itself can still die; it is small and restarts in seconds, but its requests in flight then
get the proxy's 500 as before (with two gateway replicas up, the other keeps serving).
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from leaml.serve.vqa_app import ModelCard, Prediction, PredictorUnavailable, Query, answer_or_raise, create_app
from leaml.serve.vqa_deployment import MODEL_NAME, ServeArgs, VQAModel, log_through_serve

log = logging.getLogger("leaml.serve.vqa")
GATEWAY_NAME = "VQAGateway"


class GatewaySettings(BaseModel):
    """How the gateway waits for model replicas."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    model_timeout_s: float = Field(60.0, gt=0)
    """Longest wait for a model answer (queue + batch + forward); then 503 ``model_unavailable``.
    Keep it above a replica's restart time (model load + warm-up), or a restart turns into 503s."""
    retry_after_s: int = Field(1, ge=0)
    """``Retry-After`` of a 503: a retry waits in the queue for the replacement replica anyway."""
    batches_in_flight: int = Field(4, ge=1, le=64)
    """With batching on: batches one gateway replica has at the model replicas at once. One keeps a
    single model replica's batches full; more let several model replicas work (a replica merges
    the batches that queue while it is busy, so extra ones cost a handle call, not a forward pass)."""


class GatewayArgs(ServeArgs):
    """``args`` of :func:`build_app` (``serve_configs/vqa.yaml``): the model's
    :class:`~leaml.serve.vqa_deployment.ServeArgs` plus the gateway's settings. With batching on,
    the gateway collects each batch (``batching.batch_wait_timeout_s``) and the model replicas take
    what is queued when they are free (no second wait)."""

    gateway: GatewaySettings = GatewaySettings()
    """Model timeout, Retry-After and batches in flight."""

    def model_args(self) -> dict:
        args = self.model_dump(mode="json", exclude={"gateway"})
        args["batching"]["batch_wait_timeout_s"] = 0.0  # the gateway waited for company already
        return args


def _unavailable_errors() -> tuple[type[BaseException], ...]:
    from ray.exceptions import RayActorError
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    # RayActorError covers ActorDiedError (SIGKILL, OOM, node lost) and ActorUnavailableError.
    return RayActorError, BackPressureError, DeploymentUnavailableError


class RemotePredictor:
    """:class:`~leaml.serve.vqa_app.Predictor` over a handle to :class:`VQAModel` replicas; a
    replica that dies or does not answer in time is :class:`~leaml.serve.vqa_app.PredictorUnavailable`.
    ``predict`` sends one query per handle call; :class:`~leaml.serve.vqa_deployment.BatchedPredictor`
    around it sends a batch per call (:meth:`predict_many`)."""

    def __init__(self, handle, card: ModelCard, settings: GatewaySettings):
        self.handle, self.card, self.settings = handle, card, settings
        self._unavailable = _unavailable_errors()

    def is_ready(self) -> bool:
        # Serve routes only to replicas that passed their health check, and queues while none is
        # up; readiness of the model is the model deployment's, not this process's.
        return True

    async def predict_many(self, queries: list[Query]) -> list[Prediction | Exception]:
        """One handle call for all ``queries``: each answer or error in its place; a replica that
        dies or does not answer in time is a ``PredictorUnavailable`` for every query of the call."""
        s = self.settings
        try:
            return await asyncio.wait_for(self.handle.predict_many.remote(list(queries)), s.model_timeout_s)
        except self._unavailable as e:
            log.warning("model replica unavailable (%s); answered model_unavailable", type(e).__name__)
            error = PredictorUnavailable("the model replica serving this request stopped; retry", s.retry_after_s)
        except TimeoutError:  # asyncio.wait_for cancelled the call: it leaves no work behind
            error = _timed_out(s)
        return [error] * len(queries)

    async def predict(self, query: Query) -> Prediction:
        (result,) = await self.predict_many([query])
        return answer_or_raise(result)


class WaitBoundedPredictor:
    """``predictor`` with every request's whole wait (the gateway's batch queue included) bounded by
    ``model_timeout_s``: batches queued behind a dead replica's must not add their timeouts up."""

    def __init__(self, predictor, settings: GatewaySettings):
        self.predictor, self.card, self.settings = predictor, predictor.card, settings

    def is_ready(self) -> bool:
        return self.predictor.is_ready()

    async def predict(self, query: Query) -> Prediction:
        s = self.settings
        try:
            return await asyncio.wait_for(self.predictor.predict(query), s.model_timeout_s)
        except TimeoutError:
            raise _timed_out(s) from None


def _timed_out(s: GatewaySettings) -> PredictorUnavailable:
    return PredictorUnavailable(f"no model replica answered within {s.model_timeout_s:g} s; retry", s.retry_after_s)


class VQAGateway:
    """The HTTP app of :func:`~leaml.serve.vqa_app.create_app` in front of a :class:`VQAModel` handle."""

    def __init__(self, args: dict, model):
        log_through_serve()
        self.args = GatewayArgs.model_validate(args)
        self.model = model  # a DeploymentHandle to VQAModel (Serve passes it for the bound deployment)

    async def __serve_build_asgi_app__(self):
        from leaml.serve.metrics import build_metrics
        from leaml.serve.vqa_deployment import BatchedPredictor

        card = await self.model.card.remote()  # waits for a model replica, as serve.run does
        a, predictor = self.args, RemotePredictor(self.model, card, self.args.gateway)
        if a.batching.enabled:  # in the replica: serve.batch needs its context
            predictor = WaitBoundedPredictor(BatchedPredictor(
                predictor, a.batching.max_batch_size, a.batching.batch_wait_timeout_s,
                max_concurrent_batches=a.gateway.batches_in_flight), a.gateway)
        return create_app(a.service_settings(), predictor, metrics=build_metrics())


def vqa_application(args: GatewayArgs, model_options: dict | None = None, gateway_options: dict | None = None):
    """The Serve application for ``args``; each ``*_options`` as in ``serve.deployment``
    (``ray_actor_options``, ``max_ongoing_requests``, ``autoscaling_config``, ...)."""
    from ray import serve

    batch = args.batching.max_batch_size
    model = serve.deployment(VQAModel, name=MODEL_NAME, **{
        "max_ongoing_requests": max(32, 2 * batch), **(model_options or {})})
    # The gateway holds every request that waits for a model: allow more of them than the models run.
    gateway = serve.deployment(serve.ingress()(VQAGateway), name=GATEWAY_NAME, **{
        "max_ongoing_requests": max(64, 4 * batch), **(gateway_options or {})})
    return gateway.bind(args.model_dump(mode="json"), model.bind(args.model_args()))


def build_app(args: dict):
    """The ``import_path`` target of ``serve_configs/vqa.yaml`` (``leaml.serve.gateway:build_app``):
    validates ``args`` (a typo'd key is an error naming it) -> Application. Resources and
    autoscaling per deployment come from the config's ``deployments:`` (``VQAGateway``,
    ``VQAModel``), which Serve applies on top of the defaults set here."""
    parsed = GatewayArgs.model_validate(args)
    if Path(parsed.checkpoint).exists():  # a relative dir means "from where serve run started"
        parsed = parsed.model_copy(update={"checkpoint": str(Path(parsed.checkpoint).resolve())})
    return vqa_application(parsed)
