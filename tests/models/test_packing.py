"""Packed training: all QA pairs of one image in one multi-turn sequence, loss on the answers only.

What must hold: labels sit on the answer tokens (+ eos) of every turn and nowhere else; one pair per
image gives exactly the unpacked batch; and a packed batch gives the same loss as the same pairs
unpacked (the image is encoded once, yet every pair weighs as one example).
"""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from leaml.models.batching import IGNORE_INDEX, encode_conversations, encode_for_training
from leaml.models.builders import ModelSpec, build_model
from leaml.models.tokenizer import train_tokenizer
from leaml.prompts import vqa_prompt
from leaml.records import MediaRef
from leaml.train.data import BatchStream, TrainItem, pack_by_media
from leaml.train.loop import target_loss

CORPUS = ["What color is it? Choose one of the following options: red|blue| Answer: red blue",
          "How many? Choose one of the following options: 1|2|3| Answer: 2"] * 20
RED, BLUE = (Image.new("RGB", (64, 64), c) for c in [(220, 30, 30), (30, 30, 220)])
Q1, Q2, Q3 = (vqa_prompt("What color is it?", ["red", "blue"]), vqa_prompt("How many?", ["1", "2", "3"]),
              vqa_prompt("Is it round?", ["yes", "no"]))


@pytest.fixture(scope="module", params=["tiny-qwen2.5-vl", "tiny-llava"])
def model_and_processor(request):
    return build_model(ModelSpec(preset=request.param), tokenizer=train_tokenizer(CORPUS), seed=0)


def _decoded_labels(processor, batch, row: int) -> str:
    ids = batch["input_ids"][row][batch["labels"][row] != IGNORE_INDEX]
    return processor.tokenizer.decode(ids)


def test_labels_cover_every_answer_and_nothing_else(model_and_processor):
    _, processor = model_and_processor
    eos = processor.tokenizer.eos_token
    batch = encode_conversations(processor, [[RED], [BLUE]], [[(Q1, "red"), (Q2, "2"), (Q3, "yes")], [(Q1, "blue")]])
    assert _decoded_labels(processor, batch, 0) == f"red{eos}2{eos}yes{eos}"
    assert _decoded_labels(processor, batch, 1) == f"blue{eos}"
    turns = batch["label_turns"]
    assert sorted(set(turns[turns >= 0].tolist())) == [0, 1, 2, 3]  # one number per pair, over the batch
    assert ((turns >= 0) == (batch["labels"] != IGNORE_INDEX)).all()
    # the image is in the sequence once, however many questions follow it
    assert batch["input_ids"].shape[0] == 2


def test_one_pair_per_image_is_the_unpacked_batch(model_and_processor):
    _, processor = model_and_processor
    packed = encode_conversations(processor, [[RED], [BLUE]], [[(Q1, "red")], [(Q2, "3")]])
    plain = encode_for_training(processor, [[RED], [BLUE]], [Q1, Q2], ["red", "3"])
    for key in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(packed[key], plain[key]), key


def test_one_pair_per_image_gives_the_unpacked_loss(model_and_processor):
    model, processor = model_and_processor
    with torch.no_grad():
        plain = target_loss(model, encode_for_training(processor, [[RED], [BLUE]], [Q1, Q2], ["red", "3"]))
        packed = target_loss(model, encode_conversations(processor, [[RED], [BLUE]], [[(Q1, "red")], [(Q2, "3")]]))
    assert torch.isfinite(plain) and torch.allclose(plain, packed, atol=1e-6)


def test_packed_loss_weighs_each_pair_as_one_example(model_and_processor):
    model, processor = model_and_processor
    batch = encode_conversations(processor, [[RED], [BLUE]], [[(Q1, "red"), (Q2, "2")], [(Q1, "blue")]])
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k not in ("labels", "label_turns")}).logits
        loss = target_loss(model, batch)
    logp = torch.log_softmax(logits[:, :-1].float(), -1)
    labels, turns = batch["labels"][:, 1:], batch["label_turns"][:, 1:]
    per_pair = []
    for k in range(3):  # by hand: each pair's mean token NLL, then the mean of the three
        where = turns == k
        per_pair.append(-logp[where].gather(-1, labels[where].unsqueeze(-1)).mean())
    assert torch.allclose(loss, torch.stack(per_pair).mean(), atol=1e-5)


def test_pack_by_media_groups_in_order_and_caps_turns():
    a, b = MediaRef(id="a", uri="a.png"), MediaRef(id="b", uri="b.png")
    items = [TrainItem(a, "q1", "x"), TrainItem(b, "q2", "y"), TrainItem(a, "q3", "z"), TrainItem(a, "q4", "w")]
    packed = pack_by_media(items, max_turns=2)
    assert [(it.media.id, it.conversation) for it in packed] == [
        ("a", [("q1", "x"), ("q3", "z")]), ("a", [("q4", "w")]), ("b", [("q2", "y")])]


def test_shuffled_turns_move_every_question_to_the_first_turn_and_keep_the_pairs():
    """Evaluation asks one question at a time, as a first turn: packed in the records' order the
    first turn is always the same template. Shuffled per epoch (seeded), each pair leads in some
    epoch, the pairs stay as they were, and a second stream with the same seed draws the same."""
    a, b = MediaRef(id="a", uri="a.png"), MediaRef(id="b", uri="b.png")
    pairs = [("q1", "x"), ("q2", "y"), ("q3", "z")]
    items = pack_by_media([TrainItem(m, q, t) for m in (a, b) for q, t in pairs], max_turns=8)

    def firsts(stream: BatchStream, epochs: int = 12) -> list[str]:
        out = []
        for draw in range(epochs):  # batch = the 2 items: one epoch a draw
            for it in stream.batch_at(draw):
                assert sorted(it.conversation) == pairs and it.media.id in ("a", "b")
                out.append(it.prompt)
        return out

    shuffled = firsts(BatchStream(items, 2, seed=3, shuffle_turns=True))
    assert set(shuffled) == {"q1", "q2", "q3"}
    assert shuffled == firsts(BatchStream(items, 2, seed=3, shuffle_turns=True))
    assert set(firsts(BatchStream(items, 2, seed=3))) == {"q1"}  # as written
