"""Parsing, validating, deduping and filtering generated QA candidates (garbage included)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from leaml.pipeline.qa_generator import QAGenConfig, apply_filter, judge_candidates
from leaml.records import CandidateScores, MediaRef, PseudoCandidate, format_qa_target, load_records, parse_qa_target
from leaml.streaming import StreamItem

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
    assert [r.kept for r in rows] == [True, False, False, False, False, False, False, False, True, True]
    reasons = [r.reason for r in rows]
    assert reasons[1].startswith("unparsable: no <q>") and reasons[2].startswith("unparsable: no <q>")
    assert reasons[3].startswith("unparsable:")
    assert "not one of the options" in reasons[4]
    assert reasons[5] == reasons[6] == "duplicate"  # repaired to the same pair as candidate 0
    assert reasons[7] == "unknown question"
    repaired = rows[8].example
    assert repaired.options == KNOWN["How many polyps are in the image?"] and repaired.meta["options_repaired"]
    ex = rows[9].example
    assert (ex.question, ex.answer, ex.source, ex.media.id) == ("How many polyps are in the image?", "2", "pseudo", "endo-1")
    assert not ex.meta["options_repaired"]
    assert [r.sample for r in rows] == list(range(10))
    assert all(r.example is None for r in rows if not r.kept) and all(r.scores is None for r in rows)


def test_without_known_templates_options_are_required():
    rows = judge_candidates(MEDIA, ["<q>Is there text?<q><a>yes<a>"], None)
    assert not rows[0].kept and "no options" in rows[0].reason


def test_without_known_templates_any_valid_pair_is_kept():
    rows = judge_candidates(MEDIA, [format_qa_target("Is the sky blue?", ["no", "yes"], "no")], None)
    assert rows[0].kept


def test_filters():
    rows = judge_candidates(MEDIA, [good(a="yes"), good("How many polyps are in the image?", "2")], KNOWN)
    rows = apply_filter(rows, [[0.3, 0.7], [0.1, 0.2, 0.6, 0.1]], QAGenConfig(filter="consistent"))
    assert [r.kept for r in rows] == [True, True]
    rows = judge_candidates(MEDIA, [good(a="no"), good("How many polyps are in the image?", "2")], KNOWN)
    rows = apply_filter(rows, [[0.3, 0.7], [0.1, 0.2, 0.4, 0.3]], QAGenConfig(filter="threshold", min_prob=0.5))
    assert [r.kept for r in rows] == [False, False]
    assert rows[0].scores == CandidateScores(p_answer=0.3, argmax="yes")
    assert rows[1].reason.startswith("filter: p(answer)=0.40")


def test_the_filter_makes_new_candidates_and_leaves_its_input_as_judged():
    texts = [good(a="no"), "garbage", good(a="no"), good("How many polyps are in the image?", "2")]
    judged = judge_candidates(MEDIA, texts, KNOWN)
    before = [r.model_dump() for r in judged]
    filtered = apply_filter(judged, [[0.3, 0.7], [0.1, 0.2, 0.6, 0.1]], QAGenConfig(filter="consistent"))
    assert [r.model_dump() for r in judged] == before  # nothing judged was changed
    assert [r.kept for r in judged] == [True, False, False, True]
    assert [r.kept for r in filtered] == [False, False, False, True]
    assert filtered[0].reason == "filter: generator prefers 'yes'" and filtered[0].example == judged[0].example
    assert filtered[1] is judged[1] and filtered[2] is judged[2]  # not kept: not scored
    with pytest.raises(ValueError):  # one probability list per kept candidate
        apply_filter(judged, [[0.3, 0.7]], QAGenConfig(filter="consistent"))


def test_a_candidate_row_is_written_as_today_and_a_bad_one_names_its_field():
    judged = judge_candidates(MEDIA, [good(a="no"), "garbage"], KNOWN, "gen")
    filtered = apply_filter(judged, [[0.3, 0.7]], QAGenConfig(filter="consistent"))
    assert list(filtered[0].model_dump()) == ["media_id", "sample", "text", "kept", "reason", "example", "scores"]
    assert "scores" not in filtered[1].model_dump()  # never scored: no key, as the shards have always had
    assert filtered[1].model_dump()["example"] is None
    for row in filtered:
        assert PseudoCandidate.model_validate(json.loads(json.dumps(row.model_dump(mode="json")))) == row
    with pytest.raises(ValueError, match="media_id"):
        PseudoCandidate.model_validate({"sample": 0, "text": "t", "reason": "duplicate"})
    with pytest.raises(ValueError, match="kept candidate has its example"):
        PseudoCandidate.model_validate({"media_id": "m", "sample": 0, "text": "t", "kept": True})
    with pytest.raises(ValueError, match="says why"):
        PseudoCandidate.model_validate({"media_id": "m", "sample": 0, "text": "t"})


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

    rows = [StreamItem(item_id=r.id, media=r, media_root=tiny_world).to_row()
            for r in load_records(f"{tiny_world}/unlabeled.jsonl", MediaRef)[:3]]
    batch = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    cfg = QAGenConfig(model=tiny_base, n=3, decoding="constrained", filter="consistent").model_dump()
    requester = QARequester({"local": {}}, cfg, KNOWN)
    runs = [[json.loads(r) for r in requester(dict(batch))["records"]] for _ in range(2)]
    assert runs[0] == runs[1]
    judged = [PseudoCandidate.model_validate(row) for item in runs[0] for row in item]
    assert len(judged) == 9
    for c in judged:  # dropped only as a duplicate or by the filter, never as invalid
        assert c.kept or c.reason == "duplicate" or c.reason.startswith("filter:")
        if c.reason != "duplicate":
            assert c.scores.argmax in KNOWN[parse_qa_target(c.text).question]
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
