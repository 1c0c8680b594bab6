"""The answering core: shared-prefix option scores equal one full forward per option, on both tiny
architectures; the media is encoded once per prompt; the per-option fallback; ``answer``.

The models' weights are scaled up: at init (std 0.02) an untrained model scores every option
almost alike, so a wrong continuation position would move the numbers by less than any tolerance.
Scaled, a wrong position moves them by > 0.1 (``test_positions_after_media_come_from_rope_deltas``).
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from PIL import Image

from leaml.models import answer as core
from leaml.models.answer import Answer, answer, score_options, shared_prefix_supported
from leaml.models.batching import generate
from leaml.models.builders import ModelSpec, build_model
from leaml.models.tokenizer import train_tokenizer
from leaml.prompts import qagen_prompt, vqa_prompt

PRESETS = ["tiny-qwen2.5-vl", "tiny-llava"]
OPTIONS_8 = ["red", "pink", "white", "green", "blue", "a yellow one", "black", "no"]
CORPUS = [vqa_prompt("What color is the polyp?", OPTIONS_8), "Describe the image: a red circle at 3 o'clock."] * 20
RED, BLUE = (Image.new("RGB", (64, 64), c) for c in [(220, 30, 30), (30, 30, 220)])
NOISE = Image.effect_noise((80, 48), 60).convert("RGB")
# prompts of different lengths (left padding), 1 or 2 frames, 2 and 8 options, an empty option
# (eos alone, or no token at all with eos=False), and one item without options
MEDIA = [[RED], [BLUE, NOISE], [NOISE], [RED], [BLUE]]
PROMPTS = [vqa_prompt("What color?", OPTIONS_8[:2]),
           vqa_prompt("What color is the polyp in this long and oddly shaped image, please?", OPTIONS_8),
           qagen_prompt(), "Describe the image.", "Is it?"]
OPTIONS = [OPTIONS_8[:2], OPTIONS_8, ["<q>What color?", "<q>How many?", "<q>Is"], [], ["", "blue"]]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, vocab_size=400)


@pytest.fixture(scope="module", params=PRESETS)
def tiny(request, tok):
    model, processor = build_model(ModelSpec(preset=request.param), tokenizer=tok, seed=0)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.mul_(8.0)
    return model.eval(), processor


@pytest.mark.parametrize("eos, reduce", [(True, "mean"), (False, "sum")])
def test_shared_prefix_scores_equal_one_forward_per_option(tiny, eos, reduce):
    model, processor = tiny
    assert shared_prefix_supported(model)
    kw = dict(eos=eos, reduce=reduce)
    per_option = score_options(model, processor, MEDIA, PROMPTS, OPTIONS, path="per_option", **kw)
    # batch_size=2: two prefills, each of prompts of different lengths and option counts
    shared = score_options(model, processor, MEDIA, PROMPTS, OPTIONS, batch_size=2, path="shared_prefix", **kw)
    assert [len(p) for p in shared] == [2, 8, 3, 0, 2]
    for s, p in zip(shared, per_option):
        assert torch.allclose(torch.tensor(s), torch.tensor(p), atol=1e-4)
        assert s == [] or max(range(len(s)), key=s.__getitem__) == max(range(len(p)), key=p.__getitem__)
    assert max(per_option[1]) > 0.3  # not near uniform: the comparison has teeth
    raw = dict(batch_size=16, eos=eos, reduce=reduce)
    a = torch.tensor(core._per_option_scores(model, processor, MEDIA, PROMPTS, OPTIONS, **raw))
    b = torch.tensor(core._shared_prefix_scores(model, processor, MEDIA, PROMPTS, OPTIONS, **raw))
    assert torch.allclose(a, b, atol=1e-4)  # the log-likelihoods themselves, before the softmax


def test_positions_after_media_come_from_rope_deltas(tiny, monkeypatch):
    model, processor = tiny
    if model.config.model_type != "qwen2_5_vl":
        pytest.skip("1-D RoPE: positions are the token count")
    args = (model, processor, MEDIA[:2], PROMPTS[:2], OPTIONS[:2], 16, True, "mean")
    right = torch.tensor(core._shared_prefix_scores(*args))
    assert torch.allclose(right, torch.tensor(core._per_option_scores(*args)), atol=1e-4)
    monkeypatch.setitem(core.CONTINUATION_POSITIONS, "qwen2_5_vl", core._text_positions)
    wrong = torch.tensor(core._shared_prefix_scores(*args))  # positions by token count, no rope_delta
    assert (wrong - right).abs().max() > 0.1


def test_the_media_is_encoded_once_per_prompt(tiny):
    model, processor = tiny
    vision = next(m for n, m in model.named_modules() if n.rsplit(".", 1)[-1] in ("visual", "vision_tower"))
    rows: list[int] = []
    hook = vision.register_forward_hook(lambda mod, args, out: rows.append(args[0].shape[0]))
    try:
        score_options(model, processor, [[NOISE]], PROMPTS[1:2], [OPTIONS_8], path="shared_prefix")
        score_options(model, processor, [[NOISE]], PROMPTS[1:2], [OPTIONS_8[:1]], path="per_option")
        score_options(model, processor, [[NOISE]], PROMPTS[1:2], [OPTIONS_8], path="per_option")
    finally:
        hook.remove()
    shared, one, per_option = rows
    assert shared == one and per_option == 8 * one


def test_eager_attention_takes_the_block_mask_as_an_additive_mask(tiny):
    model, processor = tiny
    expected = score_options(model, processor, MEDIA, PROMPTS, OPTIONS, path="per_option")
    model.set_attn_implementation("eager")
    try:
        assert shared_prefix_supported(model)
        shared = score_options(model, processor, MEDIA, PROMPTS, OPTIONS, path="shared_prefix")
    finally:
        model.set_attn_implementation("sdpa")
    for s, e in zip(shared, expected):
        assert torch.allclose(torch.tensor(s), torch.tensor(e), atol=1e-4)


@pytest.mark.parametrize("unsupported", ["architecture", "attention"])
def test_a_model_without_the_shared_prefix_path_is_scored_per_option(tiny, monkeypatch, unsupported):
    model, processor = tiny
    expected = score_options(model, processor, MEDIA, PROMPTS, OPTIONS, path="per_option")
    if unsupported == "architecture":  # no continuation position rule
        monkeypatch.setattr(model.config, "model_type", "mystery_vlm")
    else:  # an attention kernel that takes no custom 4-D mask (as flash-attention's varlen kernels)
        monkeypatch.delitem(core._BLOCK_MASKS, model.config.get_text_config()._attn_implementation)
    assert not shared_prefix_supported(model)
    calls = []
    real = core._per_option_scores
    monkeypatch.setattr(core, "_per_option_scores", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(core, "_shared_prefix_scores", None)  # never reached
    assert score_options(model, processor, MEDIA, PROMPTS, OPTIONS) == expected and calls == [1]
    with pytest.raises(ValueError, match="not available"):
        score_options(model, processor, MEDIA, PROMPTS, OPTIONS, path="shared_prefix")


def test_a_model_training_with_activation_checkpointing_still_shares_the_prefix(tiny):
    model, processor = tiny
    expected = score_options(model, processor, MEDIA[:2], PROMPTS[:2], OPTIONS[:2], path="per_option")
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    disable = getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable
    enable()
    model.train()  # no dropout in the tiny presets: the same numbers as in eval mode
    try:
        assert shared_prefix_supported(model)
        shared = score_options(model, processor, MEDIA[:2], PROMPTS[:2], OPTIONS[:2], path="shared_prefix")
    finally:
        disable()
        model.eval()
    for s, e in zip(shared, expected):
        assert torch.allclose(torch.tensor(s), torch.tensor(e), atol=1e-4)


def test_answer_scores_items_with_options_and_generates_the_rest(tiny):
    model, processor = tiny
    out = answer(model, processor, MEDIA, PROMPTS, OPTIONS, max_new_tokens=5, rows_per_forward=4)
    mc = [0, 1, 2, 4]
    probs = score_options(model, processor, [MEDIA[i] for i in mc], [PROMPTS[i] for i in mc],
                          [OPTIONS[i] for i in mc])
    free = generate(model, processor, MEDIA[3:4], PROMPTS[3:4], max_new_tokens=5)
    for i, p in zip(mc, probs):
        assert out[i].text == OPTIONS[i][max(range(len(p)), key=p.__getitem__)]
        assert out[i].scores == pytest.approx(p, abs=1e-5)
    assert out[3] == Answer(free[0][0]) and out[3].scores is None
    with pytest.raises(ValueError, match="option lists"):
        answer(model, processor, MEDIA, PROMPTS, OPTIONS[:2])
