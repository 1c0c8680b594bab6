"""Tokenizer: exact round trip, single-token tags that survive skip_special_tokens, chat templates."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the hub, even by accident

import pytest
from transformers import AutoTokenizer

from leaml.models.tokenizer import (
    EOS,
    LLAVA_IMAGE_TOKEN,
    PAD,
    QWEN_IMAGE_TOKENS,
    ROLE_TOKENS,
    SPECIAL_TOKENS,
    chat_template,
    train_tokenizer,
)
from leaml.records import format_qa_target

CORPUS = [
    "What color is the polyp? Choose one of the following options: red|pink|white|",
    "Describe the image: a red circle at 3 o'clock, 2 instruments.",
    "How many findings are there? Choose one of the following options: 0|1|2|3|",
] * 10

ROUND_TRIP = [
    "Is there a polyp? Choose one of the following options: yes|no|",
    "Where? upper-left|center|lower-right| 12:30 (x=3; y=4) 100%!",
    "  two  spaces, a tab\tand\na newline  ",
    "unseen words: zygote quixotic, unicode é ü 日本",
    format_qa_target("How many?", ["1", "2", "10"], "10"),
]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, vocab_size=512)


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_decode_encode_round_trips_exactly(tok, text):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert tok.decode(ids, skip_special_tokens=True) == text  # the tags are not special


def test_tags_are_single_non_special_tokens(tok):
    for tag in ("<q>", "<a>"):
        ids = tok(tag, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1
        assert ids[0] not in tok.all_special_ids
    ids = tok("<q>Q?<q><a>yes<a>", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids).count("<q>") == 2


def test_special_tokens_are_single_ids_and_skipped(tok):
    for s in SPECIAL_TOKENS:
        assert len(tok(s, add_special_tokens=False)["input_ids"]) == 1, s
    assert (tok.pad_token, tok.eos_token) == (PAD, EOS)
    assert tok.pad_token_id != tok.eos_token_id
    text = f"{ROLE_TOKENS[1]}{LLAVA_IMAGE_TOKEN}hi<q>{EOS}{PAD}"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == "hi<q>"


def test_vocab_size_is_bounded_and_training_is_deterministic(tok):
    assert 256 + len(SPECIAL_TOKENS) < len(tok) <= 512 + 2  # + the two tags
    again = train_tokenizer(CORPUS, vocab_size=512)
    assert again.get_vocab() == tok.get_vocab()


def test_too_small_vocab_is_an_error():
    with pytest.raises(ValueError, match="no room for merges"):
        train_tokenizer(CORPUS, vocab_size=100)


MESSAGES = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}
]


@pytest.mark.parametrize(
    "arch, image",
    [("qwen2_5_vl", "".join(QWEN_IMAGE_TOKENS[i] for i in (0, 2, 1))), ("llava", LLAVA_IMAGE_TOKEN)],
)
def test_chat_template_renders_short_prompt(tok, arch, image):
    tok.chat_template = chat_template(arch)
    text = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert text == f"<|user|>{image}Describe the image.<|assistant|>"
    full = MESSAGES + [{"role": "assistant", "content": [{"type": "text", "text": "red"}]}]
    assert tok.apply_chat_template(full, tokenize=False).endswith("<|assistant|>red<|end|>")
    assert len(tok(text, add_special_tokens=False)["input_ids"]) <= 12


def test_unknown_arch_has_no_template():
    with pytest.raises(ValueError, match="no chat template"):
        chat_template("gpt2")


def test_save_load_round_trip(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    for text in ROUND_TRIP:
        assert again(text)["input_ids"] == tok(text)["input_ids"]
    assert again.decode(again("<q>x<a>")["input_ids"], skip_special_tokens=True) == "<q>x<a>"
