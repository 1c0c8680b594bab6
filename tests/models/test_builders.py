"""Builders: ModelSpec validation, presets, tiny sizes, and an offline save/load round trip."""
from __future__ import annotations

import json
import os
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the hub, even by accident

import pytest
import torch
from PIL import Image
from pydantic import ValidationError
from transformers import AutoModelForImageTextToText, AutoProcessor

from leaml.models import builders
from leaml.models.batching import encode_for_training, to_model_inputs
from leaml.models.builders import (
    INFO_FILE,
    PRESETS,
    ModelSpec,
    build_model,
    build_tiny_llava,
    build_tiny_processor,
    build_tiny_qwen2_5_vl,
    load_model,
    save_model,
)
from leaml.models.tokenizer import train_tokenizer

CORPUS = ["What color is the polyp? Choose one of the following options: red|pink|white|"] * 20
TINY = {"tiny-qwen2.5-vl": "qwen2_5_vl", "tiny-llava": "llava"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Tiny models on a small shared CPU: extra intra-op threads only add contention (7x slower here).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, vocab_size=400)


def _inputs(processor, size=(64, 64)):
    img = Image.new("RGB", size, (200, 40, 40))
    return encode_for_training(processor, [[img]], ["What color?"], ["red"])


def _n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# -- ModelSpec -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "exactly one of `preset`"),
        ({"preset": "tiny-llava", "path": "/m"}, "exactly one of `preset`"),
        ({"preset": "tiny-gpt"}, "unknown preset 'tiny-gpt'"),
        ({"preset": "tiny-llava", "dtype": "float64"}, "dtype"),
        ({"preset": "tiny-llava", "devcie": "cpu"}, "devcie"),
    ],
)
def test_model_spec_rejects(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        ModelSpec(**kwargs)


def test_model_spec_fields_are_documented():
    assert all(f.description for f in ModelSpec.model_fields.values())


def test_production_presets_resolve_to_hub_ids(monkeypatch):
    seen = []

    def fake_load(uri, **kw):
        seen.append((uri, kw))
        return SimpleNamespace(config=SimpleNamespace(model_type="qwen2_5_vl")), None

    monkeypatch.setattr(builders, "load_model", fake_load)
    model, _ = build_model(ModelSpec(preset="qwen2.5-vl-3b"))
    assert model.leaml_info == {"preset": "qwen2.5-vl-3b", "arch": "qwen2_5_vl"}
    build_model(ModelSpec(preset="qwen2.5-vl-72b", dtype="bfloat16", device="cuda"))
    assert seen == [
        ("Qwen/Qwen2.5-VL-3B-Instruct", {"dtype": "float32", "device": "cpu"}),
        ("Qwen/Qwen2.5-VL-72B-Instruct", {"dtype": "bfloat16", "device": "cuda"}),
    ]
    assert {PRESETS[n].role for n in ("qwen2.5-vl-3b", "tiny-qwen2.5-vl", "tiny-llava")} == {"student"}
    assert {PRESETS[n].role for n in ("qwen2.5-vl-72b", "tiny-qwen2.5-vl-teacher")} == {"teacher"}


def test_tiny_preset_needs_a_tokenizer():
    with pytest.raises(ValueError, match="tokenizer_texts"):
        build_model(ModelSpec(preset="tiny-llava"))


# -- tiny models -----------------------------------------------------------------------------


def test_tiny_sizes(tok):
    student = build_model(ModelSpec(preset="tiny-qwen2.5-vl"), tokenizer=tok)[0]
    teacher = build_model(ModelSpec(preset="tiny-qwen2.5-vl-teacher"), tokenizer=tok)[0]
    llava = build_model(ModelSpec(preset="tiny-llava"), tokenizer=tok)[0]
    text = student.config.text_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads) == (128, 4, 4)
    head_dim = text.hidden_size // text.num_attention_heads
    assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2
    big = teacher.config.text_config
    assert (big.hidden_size, big.num_hidden_layers) == (192, 6)
    assert 0.5e6 < _n_params(student) < 1.5e6 and 0.5e6 < _n_params(llava) < 1.5e6
    assert _n_params(teacher) > 2.5 * _n_params(student)
    assert student.config.tie_word_embeddings and text.vocab_size == len(tok)


@pytest.mark.parametrize("preset, arch", TINY.items())
def test_64px_image_is_16_llm_tokens(tok, preset, arch):
    model, processor = build_model(ModelSpec(preset=preset), tokenizer=tok)
    image_id = model.config.image_token_id
    for size in [(64, 64), (128, 128)]:  # larger images are downscaled, not tokenised at full size
        ids = _inputs(processor, size)["input_ids"][0]
        assert int((ids == image_id).sum()) == 16


def test_qwen_accepts_non_square_images(tok):
    processor = build_tiny_processor("qwen2_5_vl", tok)
    batch = _inputs(processor, (80, 48))  # PIL size is (width, height)
    assert batch["image_grid_thw"].tolist() == [[1, 6, 10]]
    assert int((batch["input_ids"] == tok.convert_tokens_to_ids("<|image_pad|>")).sum()) == 15


def test_same_seed_same_weights(tok):
    a, b, c = build_tiny_llava(tok, seed=1), build_tiny_llava(tok, seed=1), build_tiny_llava(tok, seed=2)
    wa, wb, wc = (m.get_input_embeddings().weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    q1, q2 = build_tiny_qwen2_5_vl(tok, seed=1), build_tiny_qwen2_5_vl(tok, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(q1.parameters(), q2.parameters()))


def test_processor_build_leaves_callers_tokenizer_alone(tok):
    before = tok.chat_template
    build_tiny_processor("llava", tok)
    assert tok.chat_template == before
    with pytest.raises(ValueError, match="architecture 'gpt2'"):
        build_tiny_processor("gpt2", tok)


def test_bfloat16_spec(tok):
    model, processor = build_model(ModelSpec(preset="tiny-llava", dtype="bfloat16"), tokenizer=tok)
    assert model.dtype == torch.bfloat16 and not model.training
    batch = to_model_inputs(_inputs(processor), model)  # pixels follow the model's dtype
    assert torch.isfinite(model(**batch).loss)


# -- save / load -----------------------------------------------------------------------------


@pytest.mark.parametrize("preset, arch", TINY.items())
def test_save_load_round_trip_gives_identical_logits(tok, tmp_path, preset, arch):
    model, processor = build_model(ModelSpec(preset=preset), tokenizer=tok)
    save_model(model, processor, str(tmp_path / "m"))
    assert json.loads((tmp_path / "m" / INFO_FILE).read_text()) == {"arch": arch, "preset": preset}

    # Plain Auto classes reload both halves offline (leaml.models registered the Qwen processor).
    auto_model = AutoModelForImageTextToText.from_pretrained(tmp_path / "m").eval()
    auto_processor = AutoProcessor.from_pretrained(tmp_path / "m")
    assert type(auto_model) is type(model) and type(auto_processor) is type(processor)
    assert type(auto_processor.image_processor).__name__.endswith("Pil")

    loaded, loaded_processor = load_model(str(tmp_path / "m"))
    assert loaded.leaml_info["preset"] == preset
    assert loaded_processor.chat_template == processor.chat_template
    batch, again = _inputs(processor), _inputs(loaded_processor)
    assert all(torch.equal(batch[k], again[k]) for k in batch)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded(**again).logits)
        assert torch.equal(model(**batch).logits, auto_model(**batch).logits)


def test_s3_round_trip(tok, s3_bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("LEAML_CACHE", str(tmp_path / "cache"))
    model, processor = build_model(ModelSpec(preset="tiny-qwen2.5-vl"), tokenizer=tok)
    uri = f"{s3_bucket}/models/student"
    save_model(model, processor, uri)
    loaded, loaded_processor = build_model(ModelSpec(path=uri))
    assert loaded.leaml_info == {"arch": "qwen2_5_vl", "preset": "tiny-qwen2.5-vl", "source": uri}
    batch = _inputs(loaded_processor)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded(**batch).logits)
    save_model(loaded, loaded_processor, str(tmp_path / "again"))  # a stage that loads, trains, saves
    info = json.loads((tmp_path / "again" / INFO_FILE).read_text())
    assert info == {"arch": "qwen2_5_vl", "preset": "tiny-qwen2.5-vl"}


def test_auto_device_is_the_gpu_this_process_was_given(monkeypatch):
    # Captioner / QA generator replicas, evaluation actors and mask scoring load with device=auto:
    # Ray hides GPUs from actors that asked for none, so "auto" follows the resource request.
    import torch

    from leaml.models.builders import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda" and resolve_device("cpu") == "cpu" and resolve_device("cuda:1") == "cuda:1"
