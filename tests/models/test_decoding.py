"""Decoding means what the config says: a checkpoint saved with Qwen2.5-VL-Instruct's
generation_config (top_k 1, top_p 0.001, temperature 0.1, repetition_penalty 1.05) changes neither
pseudo-QA sampling nor greedy evaluation."""
from __future__ import annotations

import pytest
import torch

from leaml.media import load_media
from leaml.models.batching import _process, decoding_settings, generate, prompt_texts, to_model_inputs
from leaml.models.builders import load_model
from leaml.prompts import qagen_prompt
from leaml.records import MediaRef
from tests.data import fakes

QWEN_GENERATION_CONFIG = dict(do_sample=True, temperature=0.1, top_k=1, top_p=0.001, repetition_penalty=1.05)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(the tiny model with its default generation_config, the same weights saved Qwen-style), and an image."""
    from leaml.models.init import init_base_model

    root = tmp_path_factory.mktemp("decoding")
    data = fakes.converted_kvasir(root)
    plain_uri = init_base_model("tiny-qwen2.5-vl", str(data), str(root / "plain"))
    model, processor = load_model(plain_uri)
    model.generation_config.update(**QWEN_GENERATION_CONFIG)
    model.save_pretrained(root / "qwen-style")
    processor.save_pretrained(root / "qwen-style")
    image = load_media(MediaRef(id="img01", uri="media/img01.jpg"), root=str(data))
    return load_model(plain_uri), load_model(str(root / "qwen-style")), image


def _raw_generate(model, processor, image, **kwargs) -> list[str]:
    """model.generate as the code called it before: only some settings passed."""
    tok = processor.tokenizer
    batch = to_model_inputs(dict(_process(processor, [image], prompt_texts(processor, [image], [qagen_prompt()]),
                                          "left")), model)
    torch.manual_seed(0)
    out = model.generate(**batch, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                         **({"max_new_tokens": 12} | kwargs))
    return tok.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)


def test_the_checkpoint_really_carries_the_qwen_settings(models):
    _, (qwen, _), _ = models
    got = {k: getattr(qwen.generation_config, k) for k in QWEN_GENERATION_CONFIG}
    assert got == QWEN_GENERATION_CONFIG


def test_nucleus_samples_stay_distinct_under_a_top_k_1_generation_config(models):
    _, (qwen, processor), image = models
    # the trap: top_p and temperature passed, top_k inherited from the checkpoint -> one candidate
    old = _raw_generate(qwen, processor, image, do_sample=True, top_p=0.9, temperature=1.0, num_return_sequences=4)
    assert len(set(old)) == 1
    new = generate(qwen, processor, [image], [qagen_prompt()], do_sample=True, top_p=0.9, temperature=1.0,
                   num_return_sequences=4, max_new_tokens=12, seed=0)
    assert len(set(new[0])) == 4


def test_greedy_answers_ignore_the_checkpoints_repetition_penalty(models):
    (plain, plain_proc), (qwen, qwen_proc), image = models
    prompts = [qagen_prompt(), "What is this?", "Is there a polyp?"]
    args = dict(media=[image] * 3, prompts=prompts, max_new_tokens=24)
    assert generate(qwen, qwen_proc, **args) == generate(plain, plain_proc, **args)
    # and the test can tell: inheriting repetition_penalty 1.05 changes the greedy answer here
    assert _raw_generate(qwen, qwen_proc, image, do_sample=False, max_new_tokens=24)[0] != \
        generate(plain, plain_proc, **args)[0][0]


def test_every_setting_is_explicit_and_greedy_gets_neutral_values():
    assert decoding_settings(False, temperature=0.3, top_p=0.5, top_k=3, repetition_penalty=2.0) == dict(
        do_sample=False, temperature=1.0, top_p=1.0, top_k=None, min_p=None, typical_p=1.0, repetition_penalty=1.0)
    assert decoding_settings(True, 0.7, 0.9, 0, 1.1) == dict(
        do_sample=True, temperature=0.7, top_p=0.9, top_k=0, min_p=None, typical_p=1.0, repetition_penalty=1.1)
