"""Shared fixtures: a local moto S3 server (never the network) and a fresh bucket per test."""
from __future__ import annotations

import uuid

import pytest

from leaml import storage


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 endpoint on 127.0.0.1 and a free port, for the whole session; yields its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()  # returns once the socket is bound: no polling needed
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch, tmp_path):
    """``"s3://<unique bucket>"`` on the moto server, with boto3 pointed at it for this test only."""
    env = {
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        # a developer's ~/.aws must not leak in (profiles, SSO, a real endpoint)
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(k, raising=False)
    storage.reset_s3_client()
    bucket = f"leaml-test-{uuid.uuid4().hex[:12]}"
    storage._s3_client().create_bucket(Bucket=bucket)
    yield f"s3://{bucket}"
    storage.reset_s3_client()  # the next test must not reuse a client bound to this endpoint


# ---------------------------------------------------------------------------------------------
# A tiny synthetic world and an untrained tiny base model, built once per test session.

TINY_WORLD = dict(seed=0, n_general=40, n_endo_train=60, n_endo_test=20, n_teacher_pool=20, labeled_fraction=0.1)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> str:
    from leaml.data.endo_world import WorldConfig, build_world

    out = str(tmp_path_factory.mktemp("world"))
    build_world(WorldConfig(**TINY_WORLD), out)
    return out


@pytest.fixture(scope="session")
def tiny_base(tiny_world, tmp_path_factory) -> str:
    """An untrained tiny Qwen2.5-VL whose tokenizer was trained on the tiny world."""
    from leaml.models.init import init_base_model

    return init_base_model("tiny-qwen2.5-vl", tiny_world, str(tmp_path_factory.mktemp("base") / "model"))


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    # Tiny models on a 2-core machine: a second intra-op thread costs more in sync than it gives.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
