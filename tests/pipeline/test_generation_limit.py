"""Long option lists: the free-decoding limit follows the longest labeled target, so no candidate is
cut off. Measured on the converted fake Kvasir-VQA (its multi-answer questions have 7-9 options)
with a perfect generator: every train pair's true target, cut at the limit, then judged."""
from __future__ import annotations

import pytest

from leaml.models.builders import load_model
from leaml.pipeline.qa_generator import LIMIT_MARGIN, QAGenConfig, QAGenerator, generation_limit, judge_candidates
from leaml.records import VQAExample, format_qa_target, load_records
from tests.data import fakes


@pytest.fixture(scope="module")
def generator_setup(tmp_path_factory):
    from leaml.models.init import init_base_model

    root = tmp_path_factory.mktemp("limit")
    data = fakes.converted_kvasir(root)
    uri = init_base_model("tiny-qwen2.5-vl", str(data), str(root / "model"))
    train = load_records(str(data / "train.jsonl"), VQAExample)
    return uri, train, {e.question: e.options for e in train}


def valid_share(tokenizer, examples: list[VQAExample], known: dict, limit: int) -> float:
    """Share of the true targets that are still valid pairs when generation stops at ``limit`` tokens."""
    valid = 0
    for e in examples:
        ids = tokenizer(format_qa_target(e.question, e.options, e.answer) + tokenizer.eos_token,
                        add_special_tokens=False)["input_ids"][:limit]
        text = tokenizer.decode(ids, skip_special_tokens=True)
        valid += judge_candidates(e.media, [text], known)[0].kept
    return valid / len(examples)


def test_the_limit_covers_the_longest_target_and_no_candidate_is_cut(generator_setup):
    uri, train, known = generator_setup
    _, processor = load_model(uri)
    tok = processor.tokenizer
    limit = generation_limit(tok, known, floor=24)
    longest = max(len(tok(format_qa_target(q, o, max(o, key=len)) + tok.eos_token, add_special_tokens=False)
                      ["input_ids"]) for q, o in known.items())
    assert limit == longest + LIMIT_MARGIN > 24
    assert valid_share(tok, train, known, limit) == 1.0
    # demo_quick's qagen.max_new_tokens (24) alone cuts the long-option questions off
    assert valid_share(tok, train, known, 24) < 0.7
    assert generation_limit(tok, known, floor=10_000) == 10_000 and generation_limit(tok, None, 24) == 24


def test_the_generator_samples_with_the_limit_and_every_decoding_setting(generator_setup, monkeypatch):
    import leaml.models.batching as batching

    uri, train, known = generator_setup
    seen = {}

    def spy(model, processor, media, prompts, **kwargs):
        seen.update(kwargs)
        return [["<q>x<q><a>y<a>"] * kwargs["num_return_sequences"] for _ in media]

    monkeypatch.setattr(batching, "generate", spy)
    gen = QAGenerator(QAGenConfig(model=uri, n=3, top_k=5, repetition_penalty=1.2, max_new_tokens=24).model_dump())
    gen.sample([[None]], ["img01"], known)
    assert seen["max_new_tokens"] == generation_limit(gen.processor.tokenizer, known, 24)
    assert (seen["top_k"], seen["repetition_penalty"], seen["top_p"], seen["temperature"], seen["do_sample"]) == \
        (5, 1.2, 0.9, 1.0, True)
    gen.sample([[None]], ["img01"])  # no known questions: the config's own limit
    assert seen["max_new_tokens"] == 24
