"""The gateway's model side without a cluster: a fake deployment handle stands in for VQAModel
replicas. A replica that dies mid-request, or none answering in time, is a 503 model_unavailable with
Retry-After; an input the model refuses is still its 422; the builder binds without a cluster."""
from __future__ import annotations

import asyncio

import pytest
from PIL import Image
from fastapi.testclient import TestClient

from leaml.models.limits import ModelInputError
from leaml.serve.gateway import (GATEWAY_NAME, MODEL_NAME, GatewayArgs, GatewaySettings, RemotePredictor,
                                 WaitBoundedPredictor, build_app)
from leaml.serve.vqa_app import ModelCard, Prediction, PredictorUnavailable, Query, create_app
from tests.serve.conftest import png_bytes, settings
from tests.serve.test_vqa_app import ask

CARD = ModelCard(id="m", checkpoint_version="v")


class FakeHandle:
    """``handle.predict_many.remote(queries)`` -> an awaitable that does what ``behaviour`` says;
    ``calls`` counts the handle calls."""

    def __init__(self, behaviour: str):
        self.behaviour, self.calls = behaviour, 0
        self.predict_many = self

    def remote(self, queries):
        self.calls += 1
        return self._answer(queries)

    async def _answer(self, queries):
        from ray.exceptions import ActorDiedError

        if self.behaviour == "dies":
            raise ActorDiedError()
        if self.behaviour == "hangs":
            await asyncio.sleep(30)
        return [ModelInputError("unsupported_aspect_ratio", "a 1x300 frame")
                if self.behaviour == "refuses" or q.question == "refuse me"
                else Prediction(answer=q.options[0], scores=[0.7, 0.3], batch_size=len(queries)) for q in queries]


def _client(behaviour: str, timeout_s: float = 5.0) -> TestClient:
    gateway = GatewaySettings(model_timeout_s=timeout_s, retry_after_s=2)
    predictor = RemotePredictor(FakeHandle(behaviour), CARD, gateway)
    return TestClient(create_app(settings(), predictor))


@pytest.mark.parametrize("behaviour, timeout_s", [("dies", 5.0), ("hangs", 0.2)])
def test_a_dead_or_silent_model_replica_is_a_retryable_503(api_keys_env, behaviour, timeout_s):
    with _client(behaviour, timeout_s) as c:
        resp = ask(c, png_bytes(), options=["yes", "no"])
        assert resp.status_code == 503 and resp.json()["error"]["code"] == "model_unavailable"
        assert resp.headers["retry-after"] == "2"
        assert c.get("/healthz").status_code == 200  # the gateway itself is fine


def test_the_model_side_answer_and_refusal_cross_the_handle(api_keys_env):
    with _client("answers") as c:
        assert ask(c, png_bytes(), options=["yes", "no"]).json()["answer"] == "yes"
    with _client("refuses") as c:
        resp = ask(c, png_bytes(), options=["yes", "no"])
        assert resp.status_code == 422 and resp.json()["error"]["code"] == "unsupported_aspect_ratio"


def test_a_batch_is_one_handle_call_and_each_query_keeps_its_own_outcome():
    """What the gateway's batcher sends: answers and a refusal cross one call in their places; a
    replica that dies takes the whole call, each of its queries a retryable PredictorUnavailable."""
    img = Image.new("RGB", (8, 8))
    queries = [Query([img], "a", ("yes", "no")), Query([img], "refuse me", ("yes", "no")), Query([img], "b", ("no", "yes"))]
    handle = FakeHandle("answers")
    out = asyncio.run(RemotePredictor(handle, CARD, GatewaySettings()).predict_many(queries))
    assert handle.calls == 1 and [o.answer for o in out[::2]] == ["yes", "no"] and out[0].batch_size == 3
    assert isinstance(out[1], ModelInputError) and out[1].code == "unsupported_aspect_ratio"
    dead = asyncio.run(RemotePredictor(FakeHandle("dies"), CARD, GatewaySettings(retry_after_s=3)).predict_many(queries))
    assert all(isinstance(e, PredictorUnavailable) and e.retry_after_s == 3 for e in dead)


def test_a_request_waiting_in_the_gateway_queue_is_bounded_by_the_model_timeout():
    """Behind a batch that hangs, a request's wait (queue included) still ends at model_timeout_s."""
    class Stuck:
        card = CARD

        def is_ready(self):
            return True

        async def predict(self, query):
            await asyncio.sleep(30)

    bounded = WaitBoundedPredictor(Stuck(), GatewaySettings(model_timeout_s=0.1, retry_after_s=2))
    with pytest.raises(PredictorUnavailable, match="within 0.1 s") as e:
        asyncio.run(bounded.predict(Query([Image.new("RGB", (8, 8))], "q")))
    assert e.value.retry_after_s == 2


def test_behind_the_gateway_the_model_replicas_do_not_wait_for_a_batch_again():
    args = GatewayArgs.model_validate({"checkpoint": "x", "batching": {"batch_wait_timeout_s": 0.05}})
    assert args.model_args()["batching"]["batch_wait_timeout_s"] == 0.0 and args.batching.batch_wait_timeout_s == 0.05


def test_bad_input_and_missing_keys_never_wait_for_a_model(api_keys_env):
    with _client("hangs", timeout_s=30) as c:  # a model that never answers: none of these may reach it
        assert ask(c, b"not an image at all").status_code == 415
        assert ask(c, png_bytes(), question="q" * 1001).status_code == 422
        assert ask(c, png_bytes(), headers={}).status_code == 401


def test_builder_validates_args_and_binds_the_gateway_to_the_model(tmp_path):
    gateway = build_app({"checkpoint": str(tmp_path), "gateway": {"model_timeout_s": 5}})._bound_deployment
    gateway_args, model = gateway.init_args
    assert gateway.name == GATEWAY_NAME and model._bound_deployment.name == MODEL_NAME
    assert gateway_args["gateway"]["model_timeout_s"] == 5 and gateway_args["checkpoint"] == str(tmp_path)
    assert "gateway" not in model._bound_deployment.init_args[0]  # the model replica gets ServeArgs only
    with pytest.raises(ValueError, match="model_timeout"):  # a typo'd key names itself
        GatewayArgs.model_validate({"checkpoint": "x", "gateway": {"model_timeout": 5}})


def test_the_gateway_imports_no_torch():
    """The gateway holds no model: importing it (as its replica does) must not load torch or
    transformers (~300 MiB of its RSS when it did, measured with benchmarks/serve_load.py)."""
    import subprocess
    import sys

    code = ("import sys, leaml.serve.gateway, leaml.serve.vqa_app; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-2000:] or out.stdout
