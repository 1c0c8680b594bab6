"""Shared pieces of the serving tests: media bytes, a deterministic fake predictor, a tiny checkpoint."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from leaml.serve.auth import ApiKeySource
from leaml.serve.vqa_app import ModelCard, Prediction, Query, ServiceLimits, ServiceSettings

KEY = "test-key-0123456789"
OTHER_KEY = "second-key-abcdef"
KEY_ENV = "LEAML_TEST_SERVE_KEYS"


def png_bytes(size=(32, 24), color=(200, 30, 90)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise(size, 50).convert("RGB").save(buf, "JPEG")
    return buf.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header claiming ``width x height`` pixels, with almost no data behind it."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def mp4_bytes(tmp_path_factory) -> bytes:
    """A 6-frame 32x32 H.264 clip."""
    from leaml.media import write_video

    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    write_video(str(path), [np.full((32, 32, 3), 40 * i, np.uint8) for i in range(6)], fps=6)
    return path.read_bytes()


class FakePredictor:
    """Deterministic stand-in for VQAPredictor: scores grow with option length, free answers name
    the frame count. Records what reached it, so tests can assert a refused request reached nothing."""

    def __init__(self, ready: bool = True, fail: bool = False):
        self.card = ModelCard(id="fake-vqa", checkpoint_version="v-test", arch="fake", max_batch_size=1)
        self.ready, self.fail = ready, fail
        self.queries: list[Query] = []

    def is_ready(self) -> bool:
        return self.ready

    async def predict(self, query: Query) -> Prediction:
        self.queries.append(query)
        if self.fail:  # a message quoting the input, as a careless model error might
            raise RuntimeError(f"model exploded on question {query.question!r}")
        if query.options:
            w = [len(o) + 1.0 for o in query.options]
            scores = [x / sum(w) for x in w]
            return Prediction(answer=query.options[scores.index(max(scores))], scores=scores)
        return Prediction(answer=f"{len(query.frames)} frames")


def settings(**limits) -> ServiceSettings:
    return ServiceSettings(limits=ServiceLimits(**limits), api_keys=ApiKeySource(env=KEY_ENV))


@pytest.fixture
def api_keys_env(monkeypatch):
    monkeypatch.setenv(KEY_ENV, f"{KEY}, {OTHER_KEY}")


TOKENIZER_TEXTS = [
    "Is there a polyp in the image? Choose one of the following options: yes|no| Answer:",
    "What colour is the abnormality? red|pink|white|green| Answer:",
    "How many instruments are in the image? 0|1|2|3| Answer:",
    "Describe the image.",
] * 20


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
    """A randomly initialised tiny Qwen2.5-VL saved like a training run's output."""
    from leaml.models.builders import ModelSpec, build_model, save_model

    out = tmp_path_factory.mktemp("ckpt") / "vqa_model"
    model, processor = build_model(ModelSpec(preset="tiny-qwen2.5-vl"), tokenizer_texts=TOKENIZER_TEXTS)
    save_model(model, processor, str(out))
    return str(out)
