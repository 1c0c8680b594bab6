"""The one record schema every stage, loader and the REST API share.

media reference -> VQA example / caption, plus the QA generator's target text
``<q>Q<q><a>A<a>`` (paper Eq. 1) and a tolerant parser for it; and the handoffs between stages:
judged pseudo-QA candidates, a sharded stage's counts (``_SUCCESS.json``), evaluated rows.

I/O: JSONL (readable, diffable) and parquet, on a local path or ``s3://`` URI; one record as a
JSON document (:func:`save_json` / :func:`load_json`).
"""
from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from typing import ClassVar, Iterable, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer, model_validator

from leaml import storage

MediaKind = Literal["image", "video"]
Split = Literal["train", "val", "test"]
Source = Literal["labeled", "pseudo"]

OPTIONS_LEAD = " Choose one of the following options: "
Q_TAG, A_TAG = "<q>", "<a>"


class Record(BaseModel):
    """Base of every record: an unknown key is an error naming it, and a record never changes once
    made (a stage that revises one makes a new one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class MediaRef(Record):
    """Where one image or video lives (local path, ``s3://`` URI or a path relative to a dataset)."""

    id: str = Field(min_length=1)
    uri: str = Field(min_length=1)
    kind: MediaKind = "image"


class VQAExample(Record):
    """One multiple-choice question about one media item.

    ``question`` is the bare question; ``options`` are listed separately and joined into the prompt
    by :func:`question_with_options` so the model sees them exactly as the paper writes them.
    """

    id: str = Field(min_length=1)
    media: MediaRef
    question: str = Field(min_length=1)
    options: list[str] = Field(default_factory=list)
    answer: str
    category: str = "all"
    split: Split = "train"
    source: Source = "labeled"
    template: str | None = None  # question family, for "options = all answers seen for the template"
    meta: dict = Field(default_factory=dict)  # provenance (sample index, scores, difficulty, ...)

    @model_validator(mode="after")
    def _answer_is_an_option(self) -> "VQAExample":
        if self.options and self.answer not in self.options:
            raise ValueError(f"answer {self.answer!r} is not one of the options {self.options}")
        if len(set(self.options)) != len(self.options):
            raise ValueError(f"options repeat: {self.options}")
        if any("|" in o or not o.strip() for o in self.options):
            # the prompt joins options with "|": such an option would not survive parse_qa_target
            raise ValueError(f"an option is empty or contains '|': {self.options}")
        return self


class Caption(Record):
    media_id: str = Field(min_length=1)
    text: str
    model: str = "unknown"
    meta: dict = Field(default_factory=dict)


class ErrorRecord(Record):
    """A media item a stage could not process, with why: inputs = outputs + errors."""

    media_id: str
    uri: str = ""
    stage: str
    reason: str


# ---------------------------------------------------------------------------------------------
# Stage handoffs: what one stage writes and another reads


class SparseRecord(Record):
    """A record whose ``sparse`` fields are written only when set. Today's files leave such a key
    out (a candidate the filter never scored, a row evaluated outside a run): writing ``null``
    there would change every such file, and readers that test for the key."""

    sparse: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _leave_out_unset_sparse(self, handler):
        return {k: v for k, v in handler(self).items() if v is not None or k not in self.sparse}


class CandidateScores(Record):
    """The filter's view of a valid candidate: the generator's probability of its answer, and the
    option the generator finds most likely."""

    p_answer: float = Field(ge=0, le=1)
    argmax: str


class PseudoCandidate(SparseRecord):
    """One sampled QA text for one media item, as judged (``pseudo_qa/<variant>/shard-*.jsonl``):
    every candidate stays in the artifact; a dropped one says why."""

    media_id: str = Field(min_length=1)
    sample: int = Field(ge=0)
    """Its index among the item's candidates (the seed of its pair's id)."""
    text: str
    """What the generator wrote (constrained decoding: the valid pair it drew)."""
    kept: bool = False
    reason: str = ""
    """Why it was dropped (``unparsable: ...``, ``unknown question``, ``duplicate``, ``filter: ...``)."""
    example: VQAExample | None = None
    """The pair its text makes, once that is valid (the filter may still drop it)."""
    scores: CandidateScores | None = None
    """Set when a filter scored it."""

    sparse: ClassVar[tuple[str, ...]] = ("scores",)

    @model_validator(mode="after")
    def _kept_has_its_pair_and_dropped_says_why(self) -> "PseudoCandidate":
        if self.kept and (self.example is None or self.reason):
            raise ValueError("a kept candidate has its example and no reason")
        if not self.kept and not self.reason:
            raise ValueError("a dropped candidate says why it was dropped (reason)")
        return self


class StreamCounts(Record):
    """What a sharded stage holds: every input is an item with records, or an error row."""

    inputs: int = Field(ge=0)
    errors: int = Field(ge=0)
    records: int = Field(ge=0)


class CaptionStats(StreamCounts):
    """``captions/_SUCCESS.json``: the stream's counts and how its captions were decoded."""

    decoding: dict


class PseudoQAStats(StreamCounts):
    """``pseudo_qa/<variant>/_SUCCESS.json``: the stream's counts and what the judge made of the
    candidates."""

    candidates: int = Field(ge=0)
    kept: int = Field(ge=0)
    dropped: dict[str, int]
    """Dropped candidates by the head of their reason (``unparsable``, ``duplicate``, ``filter``, ...)."""


class CategoryScore(Record):
    accuracy: float = Field(ge=0, le=1)
    n: int = Field(ge=1)


class EvalScores(SparseRecord):
    """One model's accuracy on a split (fractions in [0, 1]), as
    :func:`leaml.evaluate.matching.score_predictions` counts it."""

    categories: dict[str, CategoryScore]
    mean_of_categories: float = Field(ge=0, le=1)
    """The paper's "Average"; on a real benchmark the mean over its columns only."""
    overall: float = Field(ge=0, le=1)
    """Accuracy over all questions."""
    n: int = Field(ge=0)
    no_match_rate: float | None = Field(None, ge=0, le=1)
    """Share of answers that match no option; rows scored before it was counted have none."""
    mean_of_all_categories: float | None = Field(None, ge=0, le=1)
    """Set once the Average is restricted to a benchmark's columns: the mean over every category."""

    sparse: ClassVar[tuple[str, ...]] = ("no_match_rate", "mean_of_all_categories")

    def accuracy(self, category: str) -> float | None:
        """The accuracy on ``category``; None when the split has no question of it."""
        found = self.categories.get(category)
        return None if found is None else found.accuracy


class EvalRow(SparseRecord):
    """One evaluated model: ``eval/rows/<row>.json`` of a run, and each row of ``report.json``."""

    method: str
    """Its label in the report."""
    model: str
    """The checkpoint it answered with."""
    scores: EvalScores
    row: str | None = None
    """The run's row name (``full``, ``leaml``, ...); none when evaluated outside a run."""

    sparse: ClassVar[tuple[str, ...]] = ("row",)


# ---------------------------------------------------------------------------------------------
# Question text with options, and the generator's target text (Eq. 1)


def question_with_options(question: str, options: list[str]) -> str:
    """``"Q Choose one of the following options: a|b|c|"`` as in the paper's examples."""
    if not options:
        return question
    return question.rstrip() + OPTIONS_LEAD + "".join(f"{o}|" for o in options)


def split_question_options(text: str) -> tuple[str, list[str]]:
    """Inverse of :func:`question_with_options`; a question without options gives ``[]``."""
    head, sep, tail = text.partition(OPTIONS_LEAD.strip())
    if not sep:
        return text.strip(), []
    options = [o.strip() for o in tail.split("|") if o.strip()]
    return head.strip(), options


def format_qa_target(question: str, options: list[str], answer: str) -> str:
    return f"{Q_TAG}{question_with_options(question, options)}{Q_TAG}{A_TAG}{answer}{A_TAG}"


@dataclass(frozen=True)
class ParsedQA:
    question: str
    options: list[str]
    answer: str


class QAParseError(ValueError):
    """Raised with a human-readable reason why a generated string is not a valid QA pair."""


_QA_RE = re.compile(r"<q>(?P<q>.*?)<q>\s*<a>(?P<a>.*?)(?:<a>|$)", re.DOTALL)


def parse_qa_target(text: str, require_options: bool = True) -> ParsedQA:
    """Parse ``<q>Q<q><a>A<a>`` tolerantly (whitespace, a missing final ``<a>``, trailing text).

    Raises :class:`QAParseError` saying why the text does not parse, so a pseudo-QA artifact can
    keep the reason a candidate was dropped.
    """
    if Q_TAG not in text:
        raise QAParseError("no <q> tag")
    m = _QA_RE.search(text)
    if m is None:
        if text.count(Q_TAG) < 2:
            raise QAParseError("question is not closed by a second <q>")
        raise QAParseError("no <a> answer after the question")
    question, options = split_question_options(" ".join(m.group("q").split()))
    answer = " ".join(m.group("a").split())
    if not question:
        raise QAParseError("empty question")
    if not answer:
        raise QAParseError("empty answer")
    if require_options:
        if not options:
            raise QAParseError("question lists no options")
        if len(options) < 2:
            raise QAParseError("question lists fewer than two options")
        if len(set(options)) != len(options):
            raise QAParseError("options repeat")
        if answer not in options:
            raise QAParseError(f"answer {answer!r} is not one of the options")
    return ParsedQA(question=question, options=options, answer=answer)


# ---------------------------------------------------------------------------------------------
# I/O

R = TypeVar("R", bound=BaseModel)


def save_jsonl(uri: str, records: Iterable[BaseModel]) -> int:
    """Write records atomically as JSONL; returns the count."""
    lines = [r.model_dump_json() for r in records]
    storage.write_bytes(uri, ("\n".join(lines) + ("\n" if lines else "")).encode())
    return len(lines)


def load_jsonl(uri: str, model: type[R]) -> list[R]:
    """Read JSONL; a bad line is an error naming the file and line number."""
    out: list[R] = []
    # split("\n"), not splitlines(): JSON leaves U+2028, U+0085 etc. unescaped inside strings, and
    # splitlines() would cut a record there.
    for n, line in enumerate(storage.read_bytes(uri).decode().split("\n"), start=1):
        if not line.strip():
            continue
        try:
            out.append(model.model_validate(json.loads(line)))
        except Exception as e:  # noqa: BLE001 - re-raised with the location
            raise ValueError(f"{uri}:{n}: not a valid {model.__name__}: {e}") from e
    return out


def save_json(uri: str, record: BaseModel, indent: int | None = None) -> None:
    """One record as a JSON document: ``json.dumps`` of its JSON dump, so a stage's file keeps the
    bytes it had before it was a record (pydantic's own JSON spaces and escapes differently)."""
    storage.write_text(uri, json.dumps(record.model_dump(mode="json"), indent=indent))


def load_json(uri: str, model: type[R]) -> R:
    """One JSON document as a record; a bad one is an error naming the file and the field."""
    try:
        return model.model_validate_json(storage.read_text(uri))
    except ValidationError as e:
        raise ValueError(f"{uri}: not a valid {model.__name__}: {e}") from e


def save_parquet(uri: str, records: Iterable[BaseModel]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [_to_parquet_row(r.model_dump()) for r in records]
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    storage.write_bytes(uri, buf.getvalue())
    return len(rows)


def load_parquet(uri: str, model: type[R]) -> list[R]:
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(storage.read_bytes(uri)))
    return [model.model_validate(_from_parquet_row(row)) for row in table.to_pylist()]


def save_records(uri: str, records: Iterable[BaseModel]) -> int:
    """JSONL or parquet by suffix."""
    return (save_parquet if uri.endswith(".parquet") else save_jsonl)(uri, records)


def load_records(uri: str, model: type[R]) -> list[R]:
    return (load_parquet if uri.endswith(".parquet") else load_jsonl)(uri, model)


# Free-form ``meta`` dicts vary per row, which parquet's fixed schema cannot hold: store as JSON text.
def _to_parquet_row(row: dict) -> dict:
    return {k: (json.dumps(v) if k == "meta" else v) for k, v in row.items()}


def _from_parquet_row(row: dict) -> dict:
    return {k: (json.loads(v) if k == "meta" and isinstance(v, str) else v) for k, v in row.items()}
