"""The VQA FastAPI app without Ray: every refusal is a 4xx JSON error with a stable code, nothing
refused reaches the model, logs hold no content, and a real tiny model answers through the app."""
from __future__ import annotations

import asyncio
import base64
import logging
import math
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from pydantic import ValidationError

from leaml.serve.auth import ApiKeyError, ApiKeySource, ApiKeyStore
from leaml.serve.client import AsyncVQAClient, VQAClientError
from leaml.serve.metrics import LocalMetrics
from leaml.serve.vqa_app import ERROR_STATUS, Query, create_app
from tests.serve.conftest import (
    KEY,
    OTHER_KEY,
    FakePredictor,
    bomb_png,
    jpeg_bytes,
    png_bytes,
    settings,
)

AUTH = {"Authorization": f"Bearer {KEY}"}
BODY_LIMIT = 200_000
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake() -> FakePredictor:
    return FakePredictor()


@pytest.fixture
def metrics() -> LocalMetrics:
    return LocalMetrics()


@pytest.fixture
def client(api_keys_env, fake, metrics):
    app = create_app(settings(max_body_bytes=BODY_LIMIT, video_frames=4), fake, metrics=metrics)
    with TestClient(app) as c:
        yield c


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def ask(client, media: bytes, question="Is there a polyp?", options=None, headers=AUTH, **extra):
    body = {"media": b64(media), "question": question, **extra}
    if options is not None:
        body["options"] = options
    return client.post("/v1/vqa", json=body, headers=headers)


def assert_error(resp, code: str) -> None:
    assert resp.status_code == ERROR_STATUS[code], resp.text
    assert 400 <= resp.status_code < 500
    assert resp.headers["content-type"] == "application/json"
    err = resp.json()["error"]
    assert err["code"] == code
    assert err["message"]
    assert err["request_id"] == resp.headers["x-request-id"]


# ---------------------------------------------------------------------------------------------
# Authentication: checked first, before the body is read


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong-key"},
    {"X-API-Key": "wrong-key"},
    {"Authorization": f"Basic {KEY}"},  # the right secret under the wrong scheme
    {"Authorization": "Bearer "},
    {"X-API-Key": KEY[:-1]},  # a prefix of a valid key
], ids=["none", "wrong-bearer", "wrong-x-api-key", "basic-scheme", "empty-bearer", "prefix"])
def test_bad_key_is_401_and_reaches_no_model(client, fake, headers):
    resp = ask(client, png_bytes(), headers=headers)
    assert_error(resp, "unauthorized")
    assert resp.headers["www-authenticate"] == "Bearer"
    assert fake.queries == []


def test_key_is_checked_before_the_body_is_read(client, fake):
    # Over the body limit and not JSON: without a key the answer is still 401, not 413 or 400.
    resp = client.post("/v1/vqa", content=b"x" * (2 * BODY_LIMIT), headers={"Content-Type": "application/json"})
    assert_error(resp, "unauthorized")


@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {KEY}"}, {"X-API-Key": OTHER_KEY},
                                     {"authorization": f"bearer {OTHER_KEY}"}])
def test_every_configured_key_and_header_form_works(client, headers):
    assert ask(client, png_bytes(), headers=headers).status_code == 200


def test_models_needs_a_key_and_health_does_not(client):
    assert_error(client.get("/v1/models"), "unauthorized")
    assert client.get("/v1/models", headers=AUTH).json() == {
        "data": [{"id": "fake-vqa", "checkpoint_version": "v-test", "arch": "fake", "max_batch_size": 1}]
    }
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_keys_from_a_secret_file_are_reloaded_when_it_changes(tmp_path):
    secret = tmp_path / "keys"
    secret.write_text("# rotated monthly\nold-key\n")
    store = ApiKeyStore(ApiKeySource(file=str(secret)))
    assert store.check("old-key") and not store.check("new-key") and not store.check("# rotated monthly")
    secret.write_text("new-key\n")
    import os
    os.utime(secret, (1, 1))  # a distinct mtime even on coarse-timestamp filesystems
    assert store.check("new-key") and not store.check("old-key")


def test_an_empty_or_missing_key_source_fails_closed(monkeypatch, tmp_path):
    monkeypatch.delenv("NO_SUCH_KEYS_VAR", raising=False)
    with pytest.raises(ApiKeyError, match="not set"):
        ApiKeyStore(ApiKeySource(env="NO_SUCH_KEYS_VAR"))
    monkeypatch.setenv("EMPTY_KEYS_VAR", " , ,")
    with pytest.raises(ApiKeyError, match="no API keys"):
        ApiKeyStore(ApiKeySource(env="EMPTY_KEYS_VAR"))
    with pytest.raises(ApiKeyError, match="cannot be read"):
        ApiKeyStore(ApiKeySource(file=str(tmp_path / "missing")))
    with pytest.raises(ValidationError, match="exactly one"):
        ApiKeySource(env="A", file="/b")


# ---------------------------------------------------------------------------------------------
# Bad input: every one a 4xx JSON error with a stable code, none reaching the model


def _broken_video() -> bytes:
    return b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x17" * 500  # MP4 magic, no movie


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


BAD_JSON_INPUTS = {
    "decompression_bomb": dict(media=bomb_png()),
    "truncated": dict(media=_half(jpeg_bytes())),
    "not_an_image": dict(media=b"%PDF-1.4 this is not an image at all"),
    "bad_video": dict(media=_broken_video()),
    "empty_question": dict(media=png_bytes(), question="   \n "),
    "question_too_long": dict(media=png_bytes(), question="why " * 300),
    "too_many_options": dict(media=png_bytes(), options=[f"o{i}" for i in range(27)]),
}


@pytest.mark.parametrize("code", list(BAD_JSON_INPUTS))
def test_bad_media_and_text_are_4xx_with_a_stable_code(client, fake, code):
    assert_error(ask(client, **BAD_JSON_INPUTS[code]), code)
    assert fake.queries == []


@pytest.mark.parametrize("options", [["only"], ["yes", "yes"], ["yes", " "], ["a|b", "c"], ["x" * 201, "y"]],
                         ids=["one", "repeated", "blank", "pipe", "too-long"])
def test_invalid_options(client, fake, options):
    assert_error(ask(client, png_bytes(), options=options), "invalid_options")
    assert fake.queries == []


def test_oversize_body_is_413_whether_or_not_its_length_is_declared(client):
    big = b"{" + b" " * BODY_LIMIT + b"}"
    assert_error(client.post("/v1/vqa", content=big, headers={**AUTH, "Content-Type": "application/json"}),
                 "payload_too_large")

    def chunks():  # no Content-Length: the limit must hold while streaming
        for _ in range(BODY_LIMIT // 10_000 + 2):
            yield b" " * 10_000

    resp = client.post("/v1/vqa", content=chunks(), headers={**AUTH, "Content-Type": "application/json"})
    assert "content-length" not in resp.request.headers
    assert_error(resp, "payload_too_large")


def test_media_over_the_byte_limit_is_413(api_keys_env, fake):
    from leaml.media import MediaLimits

    small = MediaLimits(max_bytes=1_000, max_video_bytes=1_000)
    with TestClient(create_app(settings(media=small, video_frames=4), fake)) as c:
        assert_error(ask(c, jpeg_bytes((256, 256))), "too_large")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "image/png", ""])
def test_wrong_content_type_is_415(client, content_type):
    resp = client.post("/v1/vqa", content=png_bytes(), headers={**AUTH, "Content-Type": content_type})
    assert_error(resp, "unsupported_content_type")


def test_a_png_sent_as_jpeg_or_video_is_sniffed_not_trusted(client):
    png = png_bytes()
    resp = client.post("/v1/vqa", files={"file": ("scan.mp4", png, "video/mp4")}, data={"question": "q?"}, headers=AUTH)
    assert resp.status_code == 200 and resp.json()["media"]["kind"] == "image"
    resp = client.post("/v1/vqa", json={"media": "data:video/mp4;base64," + b64(png), "question": "q?"}, headers=AUTH)
    assert resp.status_code == 200 and resp.json()["media"]["kind"] == "image"


@pytest.mark.parametrize("body, code", [
    (b"{not json", "invalid_json"),
    (b'{"question": "q?"}', "invalid_request"),  # no media
    (b'{"media": "AAAA", "question": "q?", "colour": "red"}', "invalid_request"),  # unknown field
    (b'{"media": "AAAA", "question": 7}', "invalid_request"),  # mistyped
    (b'[1, 2]', "invalid_request"),
    (b'{"media": "not base64!!", "question": "q?"}', "invalid_base64"),
    (b'{"media": "data:image/png,AAAA", "question": "q?"}', "invalid_base64"),
])
def test_malformed_json_bodies(client, fake, body, code):
    assert_error(client.post("/v1/vqa", content=body, headers={**AUTH, "Content-Type": "application/json"}), code)
    assert fake.queries == []


def test_malformed_multipart_bodies(client, fake):
    def post(**kw):
        return client.post("/v1/vqa", headers=AUTH, **kw)

    assert_error(post(data={"question": "q?"}, files={"other": ("x", b"1")}), "invalid_request")  # no `file`
    assert_error(post(files={"file": ("x", png_bytes())}), "invalid_request")  # no question
    assert_error(post(files={"file": ("x", png_bytes())}, data={"question": "q?", "extra": "1"}), "invalid_request")
    assert_error(post(files={"file": (None, b"not a file part")}, data={"question": "q?"}), "invalid_request")
    garbage = {"Content-Type": "multipart/form-data; boundary=xyz", **AUTH}
    assert_error(client.post("/v1/vqa", content=b"--xyz\r\nno headers here", headers=garbage), "invalid_multipart")
    assert_error(client.post("/v1/vqa", content=b"abc", headers={**AUTH, "Content-Type": "multipart/form-data"}),
                 "invalid_multipart")  # no boundary
    too_many = {"question": "q?", "options": [f"o{i}" for i in range(27)]}
    assert_error(post(files={"file": ("x", png_bytes())}, data=too_many), "too_many_options")
    flood = {"question": "q?", "options": [f"o{i}" for i in range(500)]}  # over max_fields, under the body limit
    assert_error(post(files={"file": ("x", png_bytes())}, data=flood), "invalid_multipart")
    assert fake.queries == []


def test_unknown_routes_and_methods_are_json_errors(client):
    assert_error(client.get("/v1/nope"), "not_found")
    assert_error(client.get("/v1/vqa", headers=AUTH), "method_not_allowed")


# ---------------------------------------------------------------------------------------------
# Happy paths (fake predictor)


def test_image_with_options_answers_the_top_option_with_scores(client, fake):
    resp = ask(client, png_bytes((40, 30)), question="  What colour?  ", options=["red", "pink", "white"])
    assert resp.status_code == 200
    out = resp.json()
    assert out["answer"] == "white"  # the fake scores the longest option highest
    assert [s["option"] for s in out["scores"]] == ["red", "pink", "white"]
    assert math.isclose(sum(s["score"] for s in out["scores"]), 1.0)
    assert out["model_id"] == "fake-vqa" and out["checkpoint_version"] == "v-test"
    assert out["media"] == {"kind": "image", "frames": 1, "width": 40, "height": 30}
    assert out["timing"]["total_ms"] >= out["timing"]["decode_ms"] >= 0
    (q,) = fake.queries
    assert q.question == "What colour?" and q.options == ("red", "pink", "white")
    assert q.frames[0].size == (40, 30) and q.frames[0].mode == "RGB"


def test_without_options_the_answer_is_the_generation_and_no_scores(client):
    out = ask(client, jpeg_bytes()).json()
    assert out["answer"] == "1 frames" and out["scores"] is None


def test_multipart_upload_with_repeated_options(client, fake):
    resp = client.post("/v1/vqa", files={"file": ("scan.jpg", jpeg_bytes())},
                       data={"question": "Polyp?", "options": ["yes", "no"]}, headers=AUTH)
    assert resp.status_code == 200, resp.text
    assert resp.json()["answer"] == "yes"
    assert fake.queries[0].options == ("yes", "no")


def test_video_is_sampled_to_the_configured_frame_count(client, fake, mp4_bytes):
    out = ask(client, mp4_bytes, question="What happens?").json()
    assert out["media"] == {"kind": "video", "frames": 4, "width": 32, "height": 32}
    assert len(fake.queries[0].frames) == 4


def test_request_id_is_echoed_when_safe_and_replaced_when_not(client):
    assert ask(client, png_bytes(), headers={**AUTH, "X-Request-ID": "app-42.a"}).json()["request_id"] == "app-42.a"
    rid = ask(client, png_bytes(), headers={**AUTH, "X-Request-ID": "bad id\x7f" + "x" * 80}).json()["request_id"]
    assert len(rid) == 32 and rid.isalnum()


def test_not_ready_is_503_on_readyz_and_vqa(api_keys_env):
    fake = FakePredictor(ready=False)
    with TestClient(create_app(settings(), fake)) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 503
        resp = ask(c, png_bytes())
        assert resp.status_code == 503 and resp.json()["error"]["code"] == "not_ready"
    assert fake.queries == []


def test_metrics_count_requests_by_outcome_and_code(client, metrics):
    ask(client, png_bytes())
    ask(client, png_bytes(), headers={})
    ask(client, b"junk")
    client.get("/healthz")
    assert metrics.count("/v1/vqa", "ok", "ok") == 1
    assert metrics.count("/v1/vqa", "unauthorized", "unauthorized") == 1
    assert metrics.count("/v1/vqa", "rejected", "not_an_image") == 1
    assert metrics.count("/healthz") == 1
    assert sum(metrics.latency_buckets.values()) == 4


def test_openapi_documents_both_body_types_the_limits_and_the_keys(client):
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/v1/vqa"]["post"]
    content = op["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data"}
    assert content["application/json"]["schema"]["properties"]["question"]["maxLength"] == 1000
    assert {k for s in op["security"] for k in s} == {"HTTPBearer", "APIKeyHeader"}
    assert {"400", "401", "413", "415", "422"} <= set(op["responses"])


def test_async_client_round_trip_and_error(client, api_keys_env):
    app = client.app

    async def run():
        transport = httpx.ASGITransport(app=app)
        async with AsyncVQAClient("http://test", api_key=KEY, transport=transport) as c:
            ok = await c.ask(png_bytes(), "Polyp?", options=["yes", "no"], multipart=True)
            with pytest.raises(VQAClientError) as err:
                await c.ask(b"junk", "Polyp?")
            return ok, err.value

    ok, err = asyncio.run(run())
    assert ok["answer"] == "yes"
    assert (err.status, err.code) == (415, "not_an_image") and err.request_id


# ---------------------------------------------------------------------------------------------
# Logs and failures


CANARY_Q = "CANARYQUESTION7f3a what is this lesion"
CANARY_OPT = "CANARYOPTION91"


def test_no_log_line_contains_question_text_or_media_bytes(caplog, api_keys_env, mp4_bytes):
    caplog.set_level(logging.DEBUG)
    img = jpeg_bytes((64, 64))
    fake, failing = FakePredictor(), FakePredictor(fail=True)
    with TestClient(create_app(settings(video_frames=4), fake)) as c, \
            TestClient(create_app(settings(), failing), raise_server_exceptions=False) as bad:
        assert ask(c, img, question=CANARY_Q, options=[CANARY_OPT, "no"]).status_code == 200
        assert ask(c, mp4_bytes, question=CANARY_Q).status_code == 200
        c.post("/v1/vqa", files={"file": ("x.jpg", img)}, data={"question": CANARY_Q}, headers=AUTH)
        ask(c, img[: len(img) // 2], question=CANARY_Q)  # truncated
        ask(c, img, question=CANARY_Q, options=[CANARY_OPT] * 2)  # repeated options
        ask(c, img, question=CANARY_Q * 40)  # too long
        ask(c, img, question=CANARY_Q, headers={})  # no key
        resp = ask(bad, img, question=CANARY_Q, options=[CANARY_OPT, "no"])
    assert resp.status_code == 500 and resp.json()["error"]["code"] == "internal"
    assert CANARY_Q not in resp.text  # the model's message quoted the question; the client sees none of it
    assert failing.queries  # the failure did happen, and was logged
    assert any("predictor failed" in r.getMessage() and "RuntimeError" in r.getMessage() for r in caplog.records)

    secrets = [CANARY_Q, "CANARYQUESTION", CANARY_OPT, b64(img)[:24], b64(img)[-24:], b64(mp4_bytes)[40:64],
               repr(img[2:18])[2:-1], img[100:116].hex()]
    access = [r.getMessage() for r in caplog.records if r.getMessage().startswith("request id=")]
    assert len(access) >= 8
    for record in caplog.records:
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        for s in secrets:
            assert s not in text, f"log line leaks content: {text[:200]!r}"


# ---------------------------------------------------------------------------------------------
# A real tiny model behind the same app


@pytest.fixture(scope="module")
def tiny_predictor(tiny_checkpoint):
    from leaml.serve.vqa_deployment import ServeArgs, VQAPredictor

    return VQAPredictor.load(ServeArgs(checkpoint=tiny_checkpoint, max_new_tokens=4))


def test_tiny_model_answers_through_the_app(api_keys_env, tiny_predictor, mp4_bytes):
    assert len(tiny_predictor.card.checkpoint_version) == 12 and tiny_predictor.card.id == "tiny-qwen2.5-vl"
    with TestClient(create_app(settings(video_frames=2), tiny_predictor)) as c:
        mc = ask(c, png_bytes(), question="What colour is the abnormality?", options=["red", "pink", "white"]).json()
        free = ask(c, jpeg_bytes(), question="Is there a polyp in the image?").json()
        clip = ask(c, mp4_bytes, question="How many instruments are in the image?", options=["0", "1"]).json()
    scores = [s["score"] for s in mc["scores"]]
    assert math.isclose(sum(scores), 1.0, rel_tol=1e-5) and all(0 < s < 1 for s in scores)
    assert mc["answer"] == ["red", "pink", "white"][scores.index(max(scores))]
    assert isinstance(free["answer"], str) and free["scores"] is None
    assert clip["media"]["frames"] == 2 and clip["answer"] in ("0", "1")
    assert mc["checkpoint_version"] == tiny_predictor.card.checkpoint_version


def test_batched_answers_equal_one_at_a_time(tiny_predictor):
    from PIL import Image

    imgs = [Image.new("RGB", (64, 64), c) for c in [(200, 30, 30), (30, 200, 30), (30, 30, 200)]]
    queries = [
        Query([imgs[0]], "What colour is the abnormality?", ("red", "pink", "white", "green")),
        Query([imgs[1]], "Is there a polyp in the image?"),
        Query([imgs[2], imgs[0]], "How many instruments are in the image?", ("0", "1", "2")),
        Query([imgs[1]], "Is there a polyp in the image?", ("yes", "no")),
    ]
    batched = tiny_predictor.predict_batch(queries)
    alone = [tiny_predictor.predict_batch([q])[0] for q in queries]
    for b, a in zip(batched, alone):
        assert b.answer == a.answer
        if a.scores is not None:
            assert b.scores == pytest.approx(a.scores, abs=1e-4)


# ---------------------------------------------------------------------------------------------
# Builder args and the shipped Serve config


def test_serve_args_reject_typos_and_bad_values():
    from leaml.serve.vqa_deployment import ServeArgs

    with pytest.raises(ValidationError, match="max_batch_sise"):
        ServeArgs.model_validate({"checkpoint": "/m", "batching": {"max_batch_sise": 4}})
    with pytest.raises(ValidationError, match="device"):
        ServeArgs(checkpoint="/m", device="gpu0")
    with pytest.raises(ValidationError, match="video_frames"):
        ServeArgs.model_validate({"checkpoint": "/m", "limits": {"video_frames": 64, "media": {"max_frames": 8}}})


def test_shipped_serve_config_validates():
    from ray.serve.schema import ServeDeploySchema

    from leaml.serve.gateway import GATEWAY_NAME, MODEL_NAME, GatewayArgs, build_app

    config = yaml.safe_load((REPO / "serve_configs" / "vqa.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)
    (app,) = schema.applications
    assert app.import_path == "leaml.serve.gateway:build_app"  # the gateway split is the shipped setup
    args = GatewayArgs.model_validate(app.args)
    deps = {d["name"]: d for d in config["applications"][0]["deployments"]}
    assert set(deps) == {GATEWAY_NAME, MODEL_NAME}  # a config entry naming no deployment fails the deploy
    gateway, model = deps[GATEWAY_NAME], deps[MODEL_NAME]
    assert model["max_ongoing_requests"] >= args.batching.max_batch_size  # or batches never fill
    # every request waiting for a model waits in a gateway: they hold at least what the models run
    assert (gateway["max_ongoing_requests"] * gateway["autoscaling_config"]["max_replicas"]
            >= model["max_ongoing_requests"] * model["autoscaling_config"]["max_replicas"])
    assert gateway["max_ongoing_requests"] >= 64 and gateway["ray_actor_options"]["num_cpus"] <= 0.5
    assert gateway["ray_actor_options"].get("num_gpus", 0) == 0  # the gateway holds no model
    bound = build_app(app.args)._bound_deployment  # binds without a cluster
    assert bound.name == GATEWAY_NAME and bound.init_args[1]._bound_deployment.name == MODEL_NAME


def test_a_failing_query_does_not_fail_its_batch_neighbours():
    from PIL import Image

    from leaml.serve.vqa_app import ModelCard, Prediction
    from leaml.serve.vqa_deployment import VQAPredictor

    class Poisoned(VQAPredictor):
        def predict_batch(self, queries):
            if any(q.question == "poison" for q in queries):
                raise ValueError("tokenizer choked")
            return [Prediction(answer=q.question.upper(), batch_size=len(queries)) for q in queries]

    p = Poisoned(None, None, ModelCard(id="m", checkpoint_version="v"))
    img = Image.new("RGB", (8, 8))
    out = p.predict_many([Query([img], "a"), Query([img], "poison"), Query([img], "b")])
    # the poison fails alone while the model still answers its warm-up: the input's fault
    assert [o.answer if isinstance(o, Prediction) else o.code for o in out] == ["A", "model_rejected_input", "B"]
    assert p.predict_many([Query([img], "c"), Query([img], "d")])[0].batch_size == 2


def _poisoned_predictor(broken: bool = False):
    """A VQAPredictor whose model refuses the question "poison" (or, ``broken``, every query)."""
    from leaml.serve.vqa_app import ModelCard, Prediction
    from leaml.serve.vqa_deployment import VQAPredictor

    class Poisoned(VQAPredictor):
        def predict_batch(self, queries):
            if broken or any(q.question == "poison" for q in queries):
                raise RuntimeError("CUDA error" if broken else "index out of range in self")
            return [Prediction(answer="yes", scores=[0.6, 0.4] if q.options else None) for q in queries]

    p = Poisoned(None, None, ModelCard(id="m", checkpoint_version="v"))
    p._ready = True
    return p


def test_an_input_the_model_refuses_is_a_422_with_a_stable_code(api_keys_env):
    with TestClient(create_app(settings(), _poisoned_predictor())) as c:
        assert_error(ask(c, png_bytes(), question="poison"), "model_rejected_input")
        assert ask(c, png_bytes(), question="fine").json()["answer"] == "yes"
    with TestClient(create_app(settings(), _poisoned_predictor(broken=True))) as c:
        resp = ask(c, png_bytes(), question="fine")  # the model itself is broken: a server error
        assert resp.status_code == 500 and resp.json()["error"]["code"] == "internal"
        assert c.get("/readyz").status_code == 503  # and the replica says so: Serve replaces it


def test_processor_limits_are_refused_before_the_model_runs(api_keys_env, tiny_predictor):
    with TestClient(create_app(settings(), tiny_predictor)) as c:
        resp = ask(c, png_bytes(size=(1, 300)), question="Is there a polyp?", options=["yes", "no"])
        assert_error(resp, "unsupported_aspect_ratio")
        assert resp.status_code == 422 and "200:1" in resp.json()["error"]["message"]
        assert ask(c, png_bytes(), question="Is there a polyp?", options=["yes", "no"]).status_code == 200
