"""Parsing, validating, deduping and filtering generated QA candidates (garbage included)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from leaml.pipeline.qa_generator import QAGenConfig, apply_filter, judge_candidates
from leaml.records import MediaRef, VQAExample, format_qa_target, load_records, parse_qa_target

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


def test_nucleus_keeps_the_smallest_set_reaching_top_p():
    from leaml.pipeline.qa_generator import nucleus

    np.testing.assert_allclose(nucleus([0.5, 0.3, 0.2], top_p=0.7, temperature=1.0), [0.625, 0.375, 0.0])
    np.testing.assert_allclose(nucleus([0.5, 0.3, 0.2], top_p=1.0, temperature=1.0), [0.5, 0.3, 0.2])
    cold = nucleus([0.6, 0.4], top_p=1.0, temperature=0.5)  # p^2 renormalised: sharper
    assert abs(cold[0] - 0.36 / 0.52) < 1e-9


def test_constrained_decoding_yields_only_valid_pairs_deterministically(tiny_base, tiny_world):
    """An untrained generator writes almost no valid pair freely; constrained, every candidate is a
    known question with one of its options, the same on a re-run, and scored for the filter."""
    from leaml.pipeline.qa_generator import QARequester

    refs = load_records(f"{tiny_world}/unlabeled.jsonl", MediaRef)[:3]
    batch = {"item_id": np.array([r.id for r in refs]), "uri": np.array([r.uri for r in refs]),
             "kind": np.array([r.kind for r in refs]), "media_root": np.array([tiny_world] * 3)}
    cfg = QAGenConfig(model=tiny_base, n=3, decoding="constrained", filter="consistent").model_dump()
    requester = QARequester({"local": {}}, cfg, KNOWN)
    runs = [[json.loads(r) for r in requester(dict(batch))["records"]] for _ in range(2)]
    assert runs[0] == runs[1]
    rows = [row for item in runs[0] for row in item]
    assert len(rows) == 9
    for row in rows:  # dropped only as a duplicate or by the filter, never as invalid
        assert row["kept"] or row["reason"] == "duplicate" or row["reason"].startswith("filter:")
        if row["reason"] != "duplicate":
            assert row["scores"]["argmax"] in KNOWN[parse_qa_target(row["text"]).question]
    with pytest.raises(ValueError, match="known_templates is required"):
        QARequester({"local": {}}, cfg, None)


def test_question_temperature_moves_the_question_choice_only(tiny_base, tiny_world):
    from leaml.media import load_media
    from leaml.pipeline.qa_generator import QAGenerator

    refs = load_records(f"{tiny_world}/unlabeled.jsonl", MediaRef)[:6]
    media = [load_media(r, root=tiny_world) for r in refs]

    def draw(**settings):
        cfg = QAGenConfig(model=tiny_base, n=4, decoding="constrained", top_p=1.0, **settings)
        return QAGenerator(cfg).sample_constrained(media, [r.id for r in refs], KNOWN)

    default, same, flat = draw(), draw(question_temperature=1.0), draw(question_temperature=1e6)
    assert same == default  # None falls back to `temperature`
    questions = [parse_qa_target(t).question for item in flat for t in item["texts"]]
    assert set(questions) == set(KNOWN)  # ~uniform over the questions: 24 draws cover both
    for d, f in zip(default, flat):  # answers are scored the same whichever questions were drawn
        for q in d["option_probs"].keys() & f["option_probs"].keys():
            assert np.allclose(d["option_probs"][q], f["option_probs"][q])
