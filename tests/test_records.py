"""leaml.records: the schema's rules, the QA target format both ways, JSONL/parquet I/O, and the stage
handoffs as today's artifacts hold them."""
from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from leaml.records import (
    Caption,
    CaptionStats,
    ErrorRecord,
    EvalRow,
    MediaRef,
    PseudoCandidate,
    PseudoQAStats,
    QAParseError,
    StreamCounts,
    VQAExample,
    format_qa_target,
    load_json,
    load_records,
    parse_qa_target,
    question_with_options,
    save_json,
    save_records,
    split_question_options,
)

IMG = MediaRef(id="m1", uri="media/m1.png")


def _ex(**kw) -> VQAExample:
    base = dict(id="e1", media=IMG, question="What type of polyp is present?",
                options=["none", "paris iia", "paris ip"], answer="paris ip")
    return VQAExample(**{**base, **kw})


# ---------------------------------------------------------------------------------------------
# Schema


def test_answer_must_be_one_of_the_options():
    with pytest.raises(ValidationError, match="not one of the options"):
        _ex(answer="paris is")


def test_open_question_without_options_is_allowed():
    assert _ex(options=[], answer="anything").answer == "anything"


@pytest.mark.parametrize("options, why", [
    (["a", "a", "paris ip"], "options repeat"),
    (["a|b", "paris ip"], r"contains '\|'"),
    (["", "paris ip"], "empty"),
    (["  ", "paris ip"], "empty"),
])
def test_bad_options(options, why):
    with pytest.raises(ValidationError, match=why):
        _ex(options=options)


def test_unknown_keys_and_bad_values_are_errors():
    with pytest.raises(ValidationError, match="categroy"):
        _ex(categroy="polyps")
    with pytest.raises(ValidationError):
        _ex(split="dev")
    with pytest.raises(ValidationError):
        MediaRef(id="m", uri="x.gif", kind="audio")
    with pytest.raises(ValidationError):
        MediaRef(id="", uri="x.png")


def test_records_are_frozen():
    with pytest.raises(ValidationError):
        _ex().answer = "none"


# ---------------------------------------------------------------------------------------------
# Question text and QA target


def test_question_with_options_matches_the_paper():
    text = question_with_options("What type of procedure is the image taken from?",
                                 ["gastroscopy", "colonoscopy", "capsule endoscopy"])
    assert text == ("What type of procedure is the image taken from? Choose one of the following "
                    "options: gastroscopy|colonoscopy|capsule endoscopy|")
    assert split_question_options(text) == ("What type of procedure is the image taken from?",
                                            ["gastroscopy", "colonoscopy", "capsule endoscopy"])
    assert question_with_options("Q?", []) == "Q?"
    assert split_question_options("Q?") == ("Q?", [])


@pytest.mark.parametrize("question, options, answer", [
    ("How many polyps are in the image?", ["0", "1", "2", "10"], "10"),
    ("Where in the image is the abnormality?", ["center", "center; lower-left"], "center; lower-left"),
    ("What is the size of the polyp?", ["<5mm", "5-10mm", ">20mm"], ">20mm"),
    ("Is there text? (yes/no)", ["no", "yes"], "no"),
    ("Quelle est la taille ? ñ", ["petit", "grand"], "grand"),
])
def test_qa_target_round_trips(question, options, answer):
    target = format_qa_target(question, options, answer)
    assert target.startswith("<q>") and target.endswith("<a>")
    parsed = parse_qa_target(target)
    assert (parsed.question, parsed.options, parsed.answer) == (question, options, answer)


def test_parse_is_tolerant_of_whitespace_a_missing_final_tag_and_trailing_text():
    text = "  <q> Is there text?  Choose one of the following options: no | yes |<q>\n<a> yes"
    assert parse_qa_target(text).answer == "yes"
    parsed = parse_qa_target(format_qa_target("Q?", ["a", "b"], "b") + "<q>next pair, cut off")
    assert (parsed.question, parsed.options, parsed.answer) == ("Q?", ["a", "b"], "b")


@pytest.mark.parametrize("text, reason", [
    ("", "no <q> tag"),
    ("a polyp, probably", "no <q> tag"),
    ("<q>Is there text?", "not closed by a second <q>"),
    ("<q>Is there text?<q>", "no <a> answer"),
    ("<a>yes<a><q>Is there text?<q>", "no <a> answer"),
    ("<q>Is there text?<q><a><a>", "empty answer"),
    ("<q> <q><a>yes<a>", "empty question"),
    ("<q>Is there text?<q><a>yes<a>", "lists no options"),
    ("<q>Is there text? Choose one of the following options: <q><a>yes<a>", "lists no options"),
    ("<q>Q? Choose one of the following options: yes|<q><a>yes<a>", "fewer than two options"),
    ("<q>Q? Choose one of the following options: yes|yes|<q><a>yes<a>", "options repeat"),
    ("<q>Q? Choose one of the following options: no|yes|<q><a>maybe<a>", "'maybe' is not one of the options"),
])
def test_parse_says_why_garbage_is_rejected(text, reason):
    with pytest.raises(QAParseError, match=reason):
        parse_qa_target(text)


def test_parse_without_required_options_accepts_open_questions():
    parsed = parse_qa_target("<q>What is shown?<q><a>a polyp<a>", require_options=False)
    assert (parsed.question, parsed.options, parsed.answer) == ("What is shown?", [], "a polyp")


# ---------------------------------------------------------------------------------------------
# I/O


def _mixed() -> list[VQAExample]:
    return [
        _ex(meta={"scores": [0.1, 0.9], "nested": {"k": "v"}}),
        _ex(id="e2", options=[], answer="free text\u2028with a line separator\x85and NEL", template="t"),
        _ex(id="e3", media=MediaRef(id="v", uri="s3://b/v.mp4", kind="video"), split="test",
            source="pseudo", category="hard"),
    ]


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_round_trip_keeps_every_field(tmp_path, suffix):
    uri = str(tmp_path / f"x.{suffix}")
    assert save_records(uri, _mixed()) == 3
    assert load_records(uri, VQAExample) == _mixed()


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_round_trip_of_the_other_records_and_of_nothing(tmp_path, suffix):
    caps = [Caption(media_id="m1", text="A pink mucosa.", model="teacher", meta={"t": 0.7})]
    errs = [ErrorRecord(media_id="m2", uri="x.png", stage="caption", reason="truncated")]
    for name, records, model in [("c", caps, Caption), ("e", errs, ErrorRecord), ("n", [], VQAExample)]:
        uri = str(tmp_path / f"{name}.{suffix}")
        save_records(uri, records)
        assert load_records(uri, model) == records


def test_jsonl_with_crlf_and_blank_lines_loads(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"\r\n".join(e.model_dump_json().encode() for e in _mixed()) + b"\r\n\r\n")
    assert load_records(str(path), VQAExample) == _mixed()


def test_malformed_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "x.jsonl"
    good = _ex().model_dump_json()
    path.write_text(good + "\n" + "{not json\n")
    with pytest.raises(ValueError, match=r"x\.jsonl:2: not a valid VQAExample"):
        load_records(str(path), VQAExample)
    path.write_text(good.replace('"answer":"paris ip"', '"answer":"paris is"') + "\n")
    with pytest.raises(ValueError, match=r"(?s)x\.jsonl:1: .*not one of the options"):
        load_records(str(path), VQAExample)



# ---------------------------------------------------------------------------------------------
# Stage handoffs: lines and documents as a demo run wrote them before they were records

SCORED = ('{"media_id": "endo-train-00006", "sample": 0, "text": "<q>What color is the abnormality? Choose one of '
          'the following options: pink|red|white|yellow|<q><a>white<a>", "kept": true, "reason": "", "example": '
          '{"id": "pseudo/endo-train-00006/0", "media": {"id": "endo-train-00006", '
          '"uri": "media/endo-train-00006.png", "kind": "image"}, "question": "What color is the abnormality?", "options": ["pink", "red", "white", '
          '"yellow"], "answer": "white", "category": "pseudo", "split": "train", "source": "pseudo", "template": '
          'null, "meta": {"sample": 0, "generator": "runs/demo/generators/leaml", "options_repaired": false}}, '
          '"scores": {"p_answer": 0.3033, "argmax": "white"}}')
UNSCORED = ('{"media_id": "endo-train-00008", "sample": 1, "text": "<q>What color is the abnormality?<q><a>white<a>", '
            '"kept": false, "reason": "duplicate", "example": null}')
CAPTIONS_DONE = ('{"inputs": 320, "errors": 0, "records": 320, "decoding": {"backend": "transformers", "model": '
                 '"assets/teacher", "do_sample": false, "max_new_tokens": 32, "num_frames": 8}}')
PSEUDO_DONE = {"candidates": 640, "kept": 159, "dropped": {"filter": 415, "duplicate": 66}, "inputs": 320,
               "errors": 0, "records": 640}
EVAL_ROW = {"method": "Zero-shot (student)", "model": "assets/student", "scores": {
    "categories": {"colitis": {"accuracy": 0.08666666666666667, "n": 300},
                   "polyps": {"accuracy": 0.032679738562091505, "n": 459}},
    "mean_of_categories": 0.0596732026143791, "overall": 0.05533596837944664, "n": 759, "no_match_rate": 0.6640625},
    "row": "zero_shot_student"}


def test_todays_pseudo_candidates_validate_and_are_written_back_byte_for_byte():
    for line in (SCORED, UNSCORED):
        candidate = PseudoCandidate.model_validate_json(line)
        assert json.dumps(candidate.model_dump(mode="json")) == line  # a shard line, as _write_one writes it
    scored, unscored = PseudoCandidate.model_validate_json(SCORED), PseudoCandidate.model_validate_json(UNSCORED)
    assert scored.example.media.id == "endo-train-00006" and scored.scores.argmax == "white"
    assert unscored.example is None and unscored.scores is None and "scores" not in unscored.model_dump()


def test_stage_documents_round_trip_as_they_are_on_disk(tmp_path):
    for name, text, model, indent in [("captions.json", CAPTIONS_DONE, CaptionStats, None),
                                      ("row.json", json.dumps(EVAL_ROW, indent=2), EvalRow, 2)]:
        (tmp_path / name).write_text(text)
        record = load_json(str(tmp_path / name), model)
        save_json(str(tmp_path / f"again-{name}"), record, indent=indent)
        assert (tmp_path / f"again-{name}").read_text() == text
    (tmp_path / "pseudo.json").write_text(json.dumps(PSEUDO_DONE, indent=2))
    stats = load_json(str(tmp_path / "pseudo.json"), PseudoQAStats)
    assert stats.model_dump() == PSEUDO_DONE and stats.dropped == {"filter": 415, "duplicate": 66}
    counts = StreamCounts(inputs=3, errors=1, records=2)
    assert StreamCounts.model_validate(counts.model_dump()) == counts
    assert CaptionStats(**counts.model_dump(), decoding={}).model_dump() == counts.model_dump() | {"decoding": {}}


def test_an_eval_row_of_an_older_shape_keeps_its_shape():
    # `leaml evaluate` rows carry no run row, and rows scored before the no-match share was counted lack it
    old = json.loads(json.dumps(EVAL_ROW))
    del old["row"], old["scores"]["no_match_rate"]
    row = EvalRow.model_validate(old)
    assert row.row is None and row.scores.no_match_rate is None and row.model_dump() == old
    assert row.scores.accuracy("polyps") == pytest.approx(0.0327, abs=1e-4) and row.scores.accuracy("normal") is None


def test_a_bad_stage_document_is_an_error_naming_file_and_field(tmp_path):
    bad = json.loads(json.dumps(EVAL_ROW))
    bad["scores"]["categories"]["polyps"]["accuracy"] = "high"
    (tmp_path / "row.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"(?s)row\.json: not a valid EvalRow.*scores\.categories\.polyps\.accuracy"):
        load_json(str(tmp_path / "row.json"), EvalRow)
    (tmp_path / "pseudo.json").write_text(json.dumps({k: v for k, v in PSEUDO_DONE.items() if k != "kept"}))
    with pytest.raises(ValueError, match=r"(?s)pseudo\.json: not a valid PseudoQAStats.*kept"):
        load_json(str(tmp_path / "pseudo.json"), PseudoQAStats)
    with pytest.raises(ValidationError, match="scores.p_answer"):
        PseudoCandidate.model_validate_json(SCORED.replace('"p_answer": 0.3033', '"p_answer": 3.0'))
