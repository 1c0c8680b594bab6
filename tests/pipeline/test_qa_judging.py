"""Parsing, validating, deduping and filtering generated QA candidates (garbage included)."""
from __future__ import annotations

from leaml.pipeline.qa_generator import QAGenConfig, apply_filter, judge_candidates
from leaml.records import MediaRef, VQAExample, format_qa_target

MEDIA = MediaRef(id="endo-1", uri="media/endo-1.png")
KNOWN = {"Is there text?": ["no", "yes"], "How many polyps are in the image?": ["0", "1", "2", "3"]}


def good(q="Is there text?", a="yes"):
    return format_qa_target(q, KNOWN[q], a)


def test_garbage_and_valid_candidates():
    texts = [
        good(),
        "",                                                      # empty
        "the image shows a polyp",                               # no tags
        "<q>Is there text?<q>",                                  # no answer
        "<q>Is there text? Choose one of the following options: no|yes|<q><a>maybe<a>",  # answer not an option
        "<q>Is there text?<q><a>yes<a>",                         # options not listed: known question, repaired
        good(),                                                  # duplicate
        format_qa_target("Is the sky blue?", ["no", "yes"], "no"),  # a question never seen in D_l
        format_qa_target("How many polyps are in the image?", ["0", "1"], "1"),  # garbled option set: repaired
        good("How many polyps are in the image?", "2"),
    ]
    rows = judge_candidates(MEDIA, texts, KNOWN, "gen")
    assert [r["kept"] for r in rows] == [True, False, False, False, False, False, False, False, True, True]
    reasons = [r["reason"] for r in rows]
    assert reasons[1].startswith("unparsable: no <q>") and reasons[2].startswith("unparsable: no <q>")
    assert reasons[3].startswith("unparsable:")
    assert "not one of the options" in reasons[4]
    assert reasons[5] == reasons[6] == "duplicate"  # repaired to the same pair as candidate 0
    assert reasons[7] == "unknown question"
    repaired = VQAExample.model_validate(rows[8]["example"])
    assert repaired.options == KNOWN["How many polyps are in the image?"] and repaired.meta["options_repaired"]
    ex = VQAExample.model_validate(rows[9]["example"])
    assert (ex.question, ex.answer, ex.source, ex.media.id) == ("How many polyps are in the image?", "2", "pseudo", "endo-1")
    assert not ex.meta["options_repaired"]
    assert [r["sample"] for r in rows] == list(range(10))


def test_without_known_templates_options_are_required():
    rows = judge_candidates(MEDIA, ["<q>Is there text?<q><a>yes<a>"], None)
    assert not rows[0]["kept"] and "no options" in rows[0]["reason"]


def test_without_known_templates_any_valid_pair_is_kept():
    rows = judge_candidates(MEDIA, [format_qa_target("Is the sky blue?", ["no", "yes"], "no")], None)
    assert rows[0]["kept"]


def test_filters():
    rows = judge_candidates(MEDIA, [good(a="yes"), good("How many polyps are in the image?", "2")], KNOWN)
    apply_filter(rows, [[0.3, 0.7], [0.1, 0.2, 0.6, 0.1]], QAGenConfig(filter="consistent"))
    assert [r["kept"] for r in rows] == [True, True]
    rows = judge_candidates(MEDIA, [good(a="no"), good("How many polyps are in the image?", "2")], KNOWN)
    apply_filter(rows, [[0.3, 0.7], [0.1, 0.2, 0.4, 0.3]], QAGenConfig(filter="threshold", min_prob=0.5))
    assert [r["kept"] for r in rows] == [False, False]
    assert rows[0]["scores"] == {"p_answer": 0.3, "argmax": "yes"}
    assert rows[1]["reason"].startswith("filter: p(answer)=0.40")
