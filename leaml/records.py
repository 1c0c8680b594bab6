"""The one record schema every stage, loader and the REST API share.

media reference -> VQA example / caption, plus the QA generator's target text
``<q>Q<q><a>A<a>`` (paper Eq. 1) and a tolerant parser for it.

I/O: JSONL (readable, diffable) and parquet, on a local path or ``s3://`` URI.
"""
from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from typing import Iterable, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from leaml import storage

MediaKind = Literal["image", "video"]
Split = Literal["train", "val", "test"]
Source = Literal["labeled", "pseudo"]

OPTIONS_LEAD = " Choose one of the following options: "
Q_TAG, A_TAG = "<q>", "<a>"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MediaRef(_Record):
    """Where one image or video lives (local path, ``s3://`` URI or a path relative to a dataset)."""

    id: str = Field(min_length=1)
    uri: str = Field(min_length=1)
    kind: MediaKind = "image"


class VQAExample(_Record):
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


class Caption(_Record):
    media_id: str = Field(min_length=1)
    text: str
    model: str = "unknown"
    meta: dict = Field(default_factory=dict)


class ErrorRecord(_Record):
    """A media item a stage could not process, with why: inputs = outputs + errors."""

    media_id: str
    uri: str = ""
    stage: str
    reason: str


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
