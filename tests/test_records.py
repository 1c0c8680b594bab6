"""leaml.records: the schema's rules, the QA target format both ways, and JSONL/parquet I/O."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from leaml.records import (
    Caption,
    ErrorRecord,
    MediaRef,
    QAParseError,
    VQAExample,
    format_qa_target,
    load_records,
    parse_qa_target,
    question_with_options,
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
