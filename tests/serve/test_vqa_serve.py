"""The VQA service on a local Ray Serve, deployed from the shipped serve_configs/vqa.yaml the way
``serve run`` does (the config handed to the controller, which imports the builder and applies the
``deployments:`` entries by name), with a tiny saved model, test keys and fractions of a CPU; real
HTTP on 127.0.0.1 through the gateway to the model replica. Checks the app behaves the same behind
Serve's proxy, and that concurrent requests are batched into shared forward passes."""
from __future__ import annotations

import os
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

from leaml.serve.client import VQAClient, VQAClientError
from tests.serve.conftest import KEY, jpeg_bytes, png_bytes

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shipped_config(port: int, checkpoint: str, keys_file: Path) -> dict:
    """serve_configs/vqa.yaml with what a test machine changes: port, checkpoint, keys, CPUs."""
    config = yaml.safe_load((REPO / "serve_configs" / "vqa.yaml").read_text())
    config["http_options"]["port"] = port
    (app,) = config["applications"]
    app["args"].update({"checkpoint": checkpoint, "max_new_tokens": 4, "api_keys": {"file": str(keys_file)}})
    app["args"]["limits"]["video_frames"] = 2
    app["args"]["batching"].update({"max_batch_size": 8, "batch_wait_timeout_s": 0.2})
    for dep in app["deployments"]:  # 2 CPUs here: one replica each, a quarter CPU each
        dep["autoscaling_config"].update({"min_replicas": 1, "initial_replicas": 1, "max_replicas": 1})
        dep["ray_actor_options"]["num_cpus"] = 0.25
    return config


@pytest.fixture(scope="module")
def ray_session(tiny_checkpoint, tmp_path_factory):
    """A running Serve app; yields (base URL, Ray session dir)."""
    import ray
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    secret = tmp_path_factory.mktemp("secret") / "api-keys"
    secret.write_text(f"# test keys\n{KEY}\n")
    port = _free_port()
    config = ServeDeploySchema.model_validate(shipped_config(port, tiny_checkpoint, secret))
    # Workers import leaml from this checkout (it need not be pip-installed).
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    ctx = ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                   runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
    try:
        serve.start(http_options=config.http_options.model_dump())
        # What `serve run serve_configs/vqa.yaml` does with a config file; blocking returns once the
        # app is RUNNING: the model replica loaded and warmed up, the gateway holds its card.
        _get_global_client().deploy_apps(config, _blocking=True)
        yield f"http://127.0.0.1:{port}", Path(ctx.address_info["session_dir"])
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def service(ray_session) -> str:
    return ray_session[0]


def test_health_models_and_auth_over_http(service):
    assert httpx.get(f"{service}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{service}/readyz").json() == {"status": "ready"}
    with VQAClient(service, api_key=KEY) as c:
        (card,) = c.models()
    assert card["id"] == "tiny-qwen2.5-vl" and card["max_batch_size"] == 8 and len(card["checkpoint_version"]) == 12
    resp = httpx.post(f"{service}/v1/vqa", json={"media": "", "question": "q?"})
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "unauthorized"


def test_answers_and_refusals_through_the_serve_proxy(service, mp4_bytes):
    with VQAClient(service, api_key=KEY) as c:
        mc = c.ask(png_bytes(), "What colour is the abnormality?", options=["red", "pink", "white"])
        free = c.ask(jpeg_bytes(), "Is there a polyp in the image?", multipart=True)
        clip = c.ask(mp4_bytes, "How many instruments are in the image?", options=["0", "1"])
        with pytest.raises(VQAClientError) as bad:
            c.ask(jpeg_bytes()[:200], "Is there a polyp?")
    assert mc["answer"] in ("red", "pink", "white")
    assert sum(s["score"] for s in mc["scores"]) == pytest.approx(1.0, abs=1e-5)
    assert isinstance(free["answer"], str) and free["scores"] is None
    assert clip["media"] == {"kind": "video", "frames": 2, "width": 32, "height": 32}
    assert bad.value.status in (415, 422) and bad.value.code in ("truncated", "corrupt")


def test_concurrent_requests_share_forward_passes(service):
    n = 8

    def one(i: int) -> dict:
        with VQAClient(service, api_key=KEY) as c:
            return c.ask(png_bytes(color=(30 * i, 80, 120)), "Is there a polyp in the image?", options=["yes", "no"])

    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(one, range(n)))
    assert all(r["answer"] in ("yes", "no") for r in results)
    # With a 0.2 s batch window, 8 simultaneous requests cannot all run alone.
    assert max(r["batch_size"] for r in results) > 1
    assert sum(1 for r in results if r["batch_size"] > 1) >= n // 2


def test_replica_logs_have_access_lines_but_no_question_text(ray_session):
    url, session_dir = ray_session
    canary = "CANARYSERVEQUESTION what is this lesion"
    with VQAClient(url, api_key=KEY) as c:
        c.ask(png_bytes(), canary, options=["CANARYSERVEOPTION", "no"])
        with pytest.raises(VQAClientError):
            c.ask(jpeg_bytes()[:300], canary)
    logs = [p for p in (session_dir / "logs").rglob("*") if p.is_file()]
    text = "\n".join(p.read_text(errors="replace") for p in logs)
    assert "request id=" in text and "endpoint=/v1/vqa" in text  # our access log reached Serve's files
    assert "CANARYSERVE" not in text
