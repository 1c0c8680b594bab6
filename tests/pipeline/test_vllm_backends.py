"""The QA generator's vLLM backend (and the engine module it shares with the captioner), without vLLM.

A small deterministic stand-in for the ``vllm`` module (put in ``sys.modules`` per test) records the
engine's arguments and every request, and answers with canned outputs: sampled texts named by their
seed, and prompt log-probabilities of a fixed rule, so option scores can be computed by hand. One
variant reads the log-probabilities off the tiny transformers model itself, so the two backends'
option scores and constrained samples are compared number for number.
"""
from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leaml.pipeline.qa_generator import QAGenConfig, QAGenerator, generation_limit, item_seed
from leaml.records import format_qa_target

KNOWN = {"Is there text?": ["no", "yes"], "How many polyps are in the image?": ["0", "1", "2", "3"]}


@dataclass
class Logprob:
    logprob: float


@dataclass
class Completion:
    text: str


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    prompt_logprobs: list
    outputs: list[Completion]


class SamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


class CharTokenizer:
    """One token per character (id = its code point); '$' is eos; a one-line chat template."""

    eos_token = "$"

    def __call__(self, text, add_special_tokens=False):
        ids = [[ord(c) for c in t] for t in ([text] if isinstance(text, str) else text)]
        return {"input_ids": ids[0] if isinstance(text, str) else ids}

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        parts = [c["type"] if c["type"] != "text" else c["text"] for c in messages[0]["content"]]
        return "<user>" + "|".join(parts) + "<assistant>"


def canned_logprob(token: int) -> float:
    return -(token % 5 + 1) / 10


class FakeLLM:
    """``vllm.LLM``: keeps its engine arguments and every ``generate`` call; a sampling request gets
    ``n`` texts named by its seed, a scoring request (``prompt_logprobs``) :func:`canned_logprob`
    of every prompt token after the first."""

    tokenizer = CharTokenizer()
    built: list[FakeLLM] = []

    def __init__(self, **args):
        self.args, self.calls = args, []
        FakeLLM.built.append(self)

    def get_tokenizer(self):
        return self.tokenizer

    def generate(self, requests, params, use_tqdm=True):
        self.calls.append((requests, params))
        per_request = params if isinstance(params, list) else [params] * len(requests)
        return [self.answer(r, p.kwargs) for r, p in zip(requests, per_request, strict=True)]

    def answer(self, request: dict, params: dict) -> RequestOutput:
        if params.get("prompt_logprobs") is not None:
            ids, logprobs = self.score(request)
            return RequestOutput(ids, [None] + [{t: Logprob(lp)} for t, lp in zip(ids[1:], logprobs)], [Completion("")])
        texts = [f"cand {params.get('seed')} {k}" for k in range(params.get("n", 1))]
        return RequestOutput([], [], [Completion(t) for t in texts])

    def score(self, request: dict) -> tuple[list[int], list[float]]:
        ids = self.tokenizer(request["prompt"], add_special_tokens=False)["input_ids"]
        return ids, [canned_logprob(t) for t in ids[1:]]


def install(monkeypatch, llm_class=FakeLLM) -> None:
    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = llm_class, SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setattr(FakeLLM, "built", [])


def vllm_generator(**settings) -> tuple[QAGenerator, FakeLLM]:
    gen = QAGenerator(QAGenConfig(backend="vllm", model="gen", **settings).model_dump())
    return gen, FakeLLM.built[-1]


def frames(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (32, 24), (40 * i, 0, 0)) for i in range(n)]


PROMPT = "<user>image|Write a question and answer about the image.<assistant>"


# ---------------------------------------------------------------------------------------------
# Engine and deployment settings


def test_engine_args_carry_the_caps_memory_bounds_and_executor(monkeypatch):
    from leaml import storage

    install(monkeypatch)
    fetched = []
    monkeypatch.setattr(storage, "local_path", lambda uri: fetched.append(uri) or Path("/cache/gen"))
    QAGenerator(QAGenConfig(backend="vllm", model="s3://bucket/generators/leaml", tensor_parallel_size=2,
                            max_model_len=4096, max_num_batched_tokens=2048, gpu_memory_utilization=0.8,
                            num_frames=8, media={"max_pixels": 200704, "min_pixels": 3136}).model_dump())
    assert fetched == ["s3://bucket/generators/leaml"]  # vLLM reads a local directory: fetched to the cache
    assert FakeLLM.built[-1].args == {
        "model": "/cache/gen", "tensor_parallel_size": 2, "max_model_len": 4096, "max_num_batched_tokens": 2048,
        "gpu_memory_utilization": 0.8, "mm_processor_kwargs": {"max_pixels": 200704, "min_pixels": 3136},
        # a clip is its frames, one image each (the generator's training layout): no video slot
        "limit_mm_per_prompt": {"image": 8, "video": 0},
        "distributed_executor_backend": "ray", "dtype": "bfloat16", "generation_config": "vllm"}


def test_without_vllm_the_backend_names_the_gpu_image(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` fails as on the CPU install
    with pytest.raises(ImportError, match=r"pip install 'leaml\[vllm\]'"):
        QAGenerator(QAGenConfig(backend="vllm", model="gen").model_dump())


def test_vllm_refuses_temperatures_above_two_so_the_config_does():
    QAGenConfig(backend="transformers", temperature=3.0)
    QAGenConfig(backend="vllm", temperature=2.0, question_temperature=50.0)  # the question draw is numpy's
    with pytest.raises(ValueError, match="temperature=3.0: vLLM"):
        QAGenConfig(backend="vllm", temperature=3.0)


def test_a_tensor_parallel_generator_replica_leaves_its_gpus_to_the_engine_workers(monkeypatch):
    from ray import serve

    from leaml.pipeline.qa_generator import build_qa_generator_app

    cfg = QAGenConfig(backend="vllm", tensor_parallel_size=2, replica_gpus=2, replica_cpus=4)
    opts = cfg.deployment_options()
    assert opts["ray_actor_options"] == {"num_cpus": 4, "num_gpus": 0}
    assert opts["placement_group_bundles"] == [{"CPU": 4}, {"GPU": 1}, {"GPU": 1}]
    assert opts["placement_group_strategy"] == "STRICT_PACK"
    for other in (cfg.model_copy(update={"tensor_parallel_size": 1, "replica_gpus": 1}),
                  QAGenConfig(backend="transformers", tensor_parallel_size=2, replica_gpus=1)):
        assert other.deployment_options()["ray_actor_options"]["num_gpus"] == 1
        assert "placement_group_bundles" not in other.deployment_options()
    seen = {}

    class Deployment:
        def bind(self, args):
            return args

    monkeypatch.setattr(serve, "deployment", lambda cls, **kw: seen.update(kw) or Deployment())
    assert build_qa_generator_app(cfg.model_dump()) == cfg.model_dump()  # the builder validates, then binds
    assert seen == {"name": "QAGenerator", **opts}


# ---------------------------------------------------------------------------------------------
# Free sampling


def test_sample_passes_every_setting_and_seeds_each_item_by_its_own_id(monkeypatch):
    install(monkeypatch)
    gen, llm = vllm_generator(n=3, top_p=0.8, temperature=0.7, top_k=5, repetition_penalty=1.1,
                              max_new_tokens=4, seed=7)
    out = gen.sample([frames(1), frames(1)], ["img-a", "img-b"], KNOWN)
    limit = generation_limit(CharTokenizer(), KNOWN, 4)
    assert limit > 4  # the longest labeled target, not the floor
    ((requests, params),) = llm.calls
    assert [p.kwargs for p in params] == [
        {"n": 3, "temperature": 0.7, "top_p": 0.8, "top_k": 5, "min_p": 0.0, "repetition_penalty": 1.1,
         "max_tokens": limit, "seed": item_seed(7, media_id)} for media_id in ("img-a", "img-b")]
    assert out == [[f"cand {item_seed(7, m)} {k}" for k in range(3)] for m in ("img-a", "img-b")]
    assert [r["prompt"] for r in requests] == [PROMPT, PROMPT]
    # an item's candidates do not depend on its batch: alone, img-b gets what it got beside img-a
    assert gen.sample([frames(1)], ["img-b"], KNOWN) == out[1:]
    gen.sample([frames(1)], ["img-b"])  # no known questions: the config's own floor
    assert llm.calls[-1][1][0].kwargs["max_tokens"] == 4


def test_a_clip_goes_to_the_generator_as_its_frames_and_to_the_teacher_as_one_video(monkeypatch, tiny_base):
    from leaml.models.batching import prompt_texts
    from leaml.models.builders import load_model
    from leaml.pipeline.captioner import Captioner
    from leaml.prompts import qagen_prompt

    _, processor = load_model(tiny_base)
    install(monkeypatch, type("TemplatedLLM", (FakeLLM,), {"tokenizer": processor.tokenizer}))
    clip = frames(3)
    gen, llm = vllm_generator(n=2)
    gen.sample([clip], ["clip-1"])
    ((request,), _) = llm.calls[0]
    # the text and images the transformers backend (and training) make of the clip
    assert request["prompt"] == prompt_texts(processor, [clip], [qagen_prompt()])[0]
    assert request["prompt"].count("<|image_pad|>") == 3 and request["multi_modal_data"] == {"image": clip}
    Captioner({"backend": "vllm", "model": "teacher"}).caption([clip])
    ((caption_request,), _) = FakeLLM.built[-1].calls[0]
    assert "<|image_pad|>" not in caption_request["prompt"]
    assert caption_request["multi_modal_data"]["video"].shape == (3, 24, 32, 3)


# ---------------------------------------------------------------------------------------------
# Scores from prompt log-probabilities


def by_hand(question: str, options: list[str], eos: bool = True, reduce: str = "mean") -> np.ndarray:
    """Softmax over options of each target's mean (or total) canned log-probability, eos included."""
    scores = []
    for o in options:
        lps = [canned_logprob(ord(c)) for c in format_qa_target(question, options, o) + ("$" if eos else "")]
        scores.append(sum(lps) if reduce == "sum" else np.mean(lps))
    p = np.exp(np.array(scores) - max(scores))
    return p / p.sum()


def test_option_probs_are_the_softmax_of_mean_option_logprobs_from_prompt_logprobs(monkeypatch):
    install(monkeypatch)
    gen, llm = vllm_generator()
    q, opts = "How many polyps are in the image?", KNOWN["How many polyps are in the image?"]
    (probs,) = gen.option_probs([frames(1)], [q], [opts])
    assert np.allclose(probs, by_hand(q, opts)) and len(set(np.round(probs, 6))) == 4  # 4 distinct scores
    ((requests, params),) = llm.calls
    # one request per option: media + prompt + the full target + eos, scored by its prompt log-probs
    assert [r["prompt"] for r in requests] == [PROMPT + format_qa_target(q, opts, o) + "$" for o in opts]
    assert params.kwargs == {"max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0}


def test_sample_constrained_scores_question_heads_by_total_and_keeps_the_transformers_shape(monkeypatch):
    from leaml.models.vllm_engine import VLLMEngine
    from leaml.pipeline.qa_generator import nucleus
    from leaml.records import parse_qa_target

    install(monkeypatch)
    gen, llm = vllm_generator(n=5, decoding="constrained", top_p=1.0, seed=3)
    spy = []
    real = VLLMEngine.score_options
    monkeypatch.setattr(VLLMEngine, "score_options", lambda self, *a, **kw: spy.append(kw) or real(self, *a, **kw))
    out = gen.sample_constrained([frames(1), frames(1)], ["img-a", "img-b"], KNOWN)
    assert spy[0] == {"eos": False, "reduce": "sum"} and spy[1] == {"eos": True, "reduce": "mean"}
    heads = [r["prompt"][len(PROMPT):] for r in llm.calls[0][0]]
    assert heads == [f"<q>{q}" for q in sorted(KNOWN)] * 2  # the question prefix alone, no eos
    # the same records as the transformers path: n valid texts, option probabilities per question drawn
    for item in out:
        assert set(item) == {"texts", "option_probs"} and len(item["texts"]) == 5
        drawn = {parse_qa_target(t).question for t in item["texts"]}
        assert drawn == set(item["option_probs"]) <= set(KNOWN)
        for q, p in item["option_probs"].items():
            assert np.allclose(p, by_hand(q, KNOWN[q]))
    # the question draw follows the total head log-likelihoods
    totals = np.array([sum(canned_logprob(ord(c)) for c in f"<q>{q}") for q in sorted(KNOWN)])
    p_q = np.exp(totals - totals.max()) / np.exp(totals - totals.max()).sum()
    rng = np.random.default_rng(item_seed(3, "img-a"))
    first = [sorted(KNOWN)[i] for i in rng.choice(2, size=5, p=nucleus(p_q, 1.0, 1.0))]
    assert [parse_qa_target(t).question for t in out[0]["texts"]] == first


def test_a_continuation_that_tokenizes_differently_after_the_prompt_is_an_error():
    from leaml.models.vllm_engine import continuation_logprobs

    out = RequestOutput([5, 6, 7, 8], [None, {6: Logprob(-1.0)}, {7: Logprob(-2.0)}, {8: Logprob(-3.0)}], [])
    assert continuation_logprobs([out], [[7, 8]]) == [[-2.0, -3.0]]
    with pytest.raises(ValueError, match="does not tokenize the same"):
        continuation_logprobs([out], [[9, 8]])


# ---------------------------------------------------------------------------------------------
# The two backends agree on the same model


class ModelLLM(FakeLLM):
    """Scores with the tiny transformers model: one full forward of each prompt, as vLLM would run it."""

    model = processor = None

    def score(self, request: dict) -> tuple[list[int], list[float]]:
        import torch

        images = request["multi_modal_data"]["image"]
        batch = self.processor(text=[request["prompt"]], images=images if isinstance(images, list) else [images],
                               return_tensors="pt")
        with torch.no_grad():
            logp = torch.log_softmax(self.model(**batch).logits[0].float(), dim=-1)
        ids = batch["input_ids"][0].tolist()
        return ids, [logp[i - 1, t].item() for i, t in enumerate(ids) if i > 0]


def test_the_vllm_backend_scores_and_draws_as_the_transformers_backend(monkeypatch, tiny_base, tiny_world):
    from leaml.media import load_media
    from leaml.models.builders import load_model
    from leaml.records import MediaRef, VQAExample, load_records

    model, processor = load_model(tiny_base)
    install(monkeypatch, type("TinyLLM", (ModelLLM,), {"model": model, "processor": processor,
                                                       "tokenizer": processor.tokenizer}))
    refs = load_records(f"{tiny_world}/unlabeled.jsonl", MediaRef)[:2]
    media, ids = [load_media(r, root=tiny_world) for r in refs], [r.id for r in refs]
    labeled = load_records(f"{tiny_world}/labeled.jsonl", VQAExample)
    known = dict(list({e.question: e.options for e in labeled}.items())[:4])
    settings = dict(model=tiny_base, n=4, decoding="constrained", device="cpu", replica_cpus=1)
    hf = QAGenerator(QAGenConfig(**settings).model_dump())
    vl = QAGenerator(QAGenConfig(backend="vllm", **settings).model_dump())
    questions = list(known)
    want, got = (g.option_probs(media[:1] * 4, questions, [known[q] for q in questions]) for g in (hf, vl))
    assert all(np.allclose(w, g, atol=1e-5) for w, g in zip(want, got, strict=True))
    want, got = hf.sample_constrained(media, ids, known), vl.sample_constrained(media, ids, known)
    assert [w["texts"] for w in want] == [g["texts"] for g in got]
    for w, g in zip(want, got):
        assert w["option_probs"].keys() == g["option_probs"].keys()
        assert all(np.allclose(w["option_probs"][q], g["option_probs"][q], atol=1e-5) for q in w["option_probs"])
