"""Kvasir-VQA (Hugging Face ``SimulaMet-HOST/Kvasir-VQA``) -> multiple-choice VQAExamples.

Input: a parquet file, a directory of them (the HF export's ``data/*.parquet``) or ``.arrow`` files
(``datasets.save_to_disk``), local or ``s3://``, with columns ``image, source, question, answer,
img_id``. ``image`` is ``{"bytes": ..., "path": ...}`` in HF exports, or a path (relative to the
file that names it).

Output: one :class:`VQAExample` per row, with each image written once to ``media_out/<img_id>.<ext>``
(the suffix sniffed from the bytes). The paper's conversion to multiple choice: a question's options
are all answers seen for its question template anywhere in the dataset, sorted (numbers by value),
so their number varies per template.

Rules worth knowing:
- Multi-label answers (``"polyp; oesophagitis"``) stay ONE option: the full answer string, with
  whitespace around ``;`` normalised to ``"; "`` so spacing variants do not split an option.
- The template key normalises spelling (``instrumnets`` -> ``instruments``, ``artifact`` ->
  ``artefact``, case, trailing ``?`` and the "Check all that are present." / "If more than one
  separate with ;" tails); the question text itself is kept exactly as the data spells it.
- ``category`` is the image's finding, from :func:`image_category`.
- The train/test split is by image (:func:`split_by_media`, or :func:`split_to_sizes` for the
  paper's sizes), so no image is in both.
- A bad row never aborts a load: an empty answer or question, an answer containing ``|`` (the
  prompt's option separator), an image that does not decode, or a repeat of an (image, question)
  pair is appended to ``errors`` as an :class:`ErrorRecord` whose reason starts with a code
  (``empty_answer: ...``), so rows in = examples + errors. Options are built from the good rows only.
"""
from __future__ import annotations

import io
import logging
import math
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Callable, Iterable, Iterator

from leaml import storage
from leaml.media import IMAGE_FORMATS, MediaError, decode_image, sniff_format
from leaml.records import ErrorRecord, MediaRef, VQAExample

log = logging.getLogger(__name__)

PAPER_CATEGORIES = ("colitis", "esophagitis", "instrument", "polyps")  # Table 1's columns
PAPER = {"benchmark": "Kvasir-VQA", "table": "Table 1", "categories": list(PAPER_CATEGORIES), "gap_closure": 0.49}
"""What the report compares a Kvasir run with: Table 1's columns (its Average is their mean, no
normal / other) and the paper's gap closure (LEAML - full) / (fully supervised - full)."""
STAGE = "load_kvasir"
COLUMNS = ("image", "question", "answer", "img_id")  # required; ``source`` is optional
ABNORMALITY = "are there any abnormalities in the image"
INSTRUMENTS = "are there any instruments in the image"
INSTRUMENT_COUNT = "how many instruments are in the image"

# The dataset's own spellings -> the template key's; whole words only.
_SPELLING = {"instrumnets": "instruments", "artifact": "artefact"}
_TAILS = ("check all that are present.", "if more than one separate with ;")


@dataclass(frozen=True)
class _Row:
    img_id: str
    source: str
    question: str
    answer: str
    template: str


# ---------------------------------------------------------------------------------------------
# Public API


def load_kvasir(
    path_or_dir: str, media_out: str, *, test_fraction: float = 0.5, seed: int = 0,
    errors: list[ErrorRecord] | None = None,
) -> list[VQAExample]:
    """Read the export, write its images under ``media_out``, return split MC examples; bad rows
    go to ``errors`` (see the module docstring)."""
    examples = read_examples(path_or_dir, media_out, errors if errors is not None else [])
    return split_by_media(examples, test_fraction=test_fraction, seed=seed)


def read_examples(path_or_dir: str, media_out: str, errors: list[ErrorRecord],
                  uri_prefix: str | None = None) -> list[VQAExample]:
    """Every good row as an unsplit MC example (one per image and question), images written once
    to ``media_out``; each bad row appended to ``errors``. ``uri_prefix`` names the media in the
    examples (``"media"``: URIs relative to a dataset directory) instead of ``media_out`` itself."""
    before = len(errors)
    rows, uris, n_in = _read_rows(path_or_dir, media_out, errors, uri_prefix)
    rows = _dedupe(rows, errors)
    if not rows:
        raise ValueError(f"no usable Kvasir-VQA rows under {path_or_dir} ({n_in} read, "
                         f"{len(errors) - before} bad; first: {errors[before].reason if n_in else 'none'})")
    if len(errors) > before:
        log.warning("Kvasir-VQA: %d of %d rows skipped (see errors)", len(errors) - before, n_in)
    options = template_options(rows)
    categories = _image_categories(rows)
    return [_example(r, uris[r.img_id], options[r.template], categories[r.img_id]) for r in rows]


def template_key(question: str) -> str:
    """Normalised question family: ``"How many instrumnets are in the image?"`` ->
    ``"how many instruments are in the image"``."""
    q = " ".join(question.lower().split())
    for tail in _TAILS:
        q = q.replace(tail, "")
    for wrong, right in _SPELLING.items():
        q = re.sub(rf"\b{wrong}\b", right, q)
    return q.strip().rstrip("?").strip()


def normalise_answer(answer: object) -> str:
    """Whitespace-normalised answer text; a multi-label answer keeps its order, joined by ``"; "``."""
    parts = [" ".join(p.split()) for p in str(answer).split(";")]
    return "; ".join(p for p in parts if p)


def template_options(rows: Iterable[_Row]) -> dict[str, list[str]]:
    """template -> every answer seen for it, sorted naturally (``"2"`` before ``"10"``)."""
    seen: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        seen[r.template].add(r.answer)
    return {t: sorted(answers, key=_natural_key) for t, answers in seen.items()}


def image_category(source: str, answers: dict[str, str]) -> str:
    """The image's finding, first rule that fires:

    1. ``instrument``: ``source`` names Kvasir-Instrument, or the instruments answer lists one,
       or the instrument count is above 0;
    2. ``colitis`` / ``esophagitis`` / ``polyps``: the abnormality answer mentions it (checked in
       that order, so an image with colitis and a polyp counts as colitis);
    3. ``normal``: no abnormality answer, or it is ``none``;
    4. ``other``: any other finding (barretts, hemorrhoids, ...).

    The paper's Table 1 reports only the first four (:data:`PAPER_CATEGORIES`).
    """
    instruments = answers.get(INSTRUMENTS, "none").lower()
    count = answers.get(INSTRUMENT_COUNT, "0")
    if "instrument" in source.lower() or instruments not in ("", "none") or count not in ("", "0"):
        return "instrument"
    finding = answers.get(ABNORMALITY, "").lower()
    # "esophagitis" also matches the data's British "oesophagitis"
    for needle, category in (("colitis", "colitis"), ("esophagitis", "esophagitis"), ("polyp", "polyps")):
        if needle in finding:
            return category
    return "normal" if finding in ("", "none") else "other"


def _image_categories(rows: list[_Row]) -> dict[str, str]:
    answers: dict[str, dict[str, str]] = defaultdict(dict)
    sources: dict[str, str] = {}
    for r in rows:
        answers[r.img_id].setdefault(r.template, r.answer)
        sources.setdefault(r.img_id, r.source)
    return {img: image_category(sources[img], answers[img]) for img in answers}


def split_by_media(examples: list[VQAExample], test_fraction: float = 0.5, seed: int = 0,
                   group: Callable[[VQAExample], str] | None = None) -> list[VQAExample]:
    """Assign ``split`` by media id (or by ``group(example)``, e.g. a video's scene): a seeded
    shuffle of the sorted ids, the first ``n * test_fraction`` (half rounds up) are test. Same ids
    + seed -> same split, whatever the row order."""
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
    key = group or (lambda e: e.media.id)
    ids = sorted({key(e) for e in examples})
    random.Random(seed).shuffle(ids)
    test = set(ids[: math.floor(len(ids) * test_fraction + 0.5)])  # not round(): 2.5 -> 2
    return [e.model_copy(update={"split": "test" if key(e) in test else "train"}) for e in examples]


def split_to_sizes(examples: list[VQAExample], train_qa: int, test_qa: int,
                   seed: int = 0) -> tuple[list[VQAExample], list[VQAExample]]:
    """(train, test) by whole images: a seeded shuffle of the sorted image ids fills the test split
    until it holds ``test_qa`` pairs, then train until ``train_qa`` (each within one image's
    questions, ~9 on Kvasir-VQA); the images left over are in neither. Order-free like
    :func:`split_by_media`."""
    by_image: dict[str, list[VQAExample]] = defaultdict(list)
    for e in examples:
        by_image[e.media.id].append(e)
    ids = sorted(by_image)
    random.Random(seed).shuffle(ids)
    train: list[VQAExample] = []
    test: list[VQAExample] = []
    for img in ids:
        if len(test) < test_qa:
            test += [e.model_copy(update={"split": "test"}) for e in by_image[img]]
        elif len(train) < train_qa:
            train += [e.model_copy(update={"split": "train"}) for e in by_image[img]]
        else:
            break
    return train, test


# ---------------------------------------------------------------------------------------------
# Reading


def _read_rows(path_or_dir: str, media_out: str, errors: list[ErrorRecord],
               uri_prefix: str | None) -> tuple[list[_Row], dict[str, str], int]:
    """The good rows without their image bytes, img_id -> media uri (each image decoded and written
    once), and the number of rows read."""
    rows: list[_Row] = []
    uris: dict[str, str] = {}
    bad_images: dict[str, str] = {}  # img_id -> why its image is unusable (judged on first sight)
    n_in = 0
    for file in _data_files(path_or_dir):
        for k, rec in enumerate(_records(file)):
            n_in += 1
            where = f"{file}#{k}"
            img_id = str(rec.get("img_id") or "").strip()
            if img_id and img_id not in uris and img_id not in bad_images:
                try:
                    uris[img_id] = _write_image(rec["image"], file, img_id, media_out, uri_prefix)
                except (MediaError, ValueError, OSError) as e:  # one bad image, not the load
                    bad_images[img_id] = f"bad_image: {e}"
            reason = _row_problem(rec, img_id, bad_images)
            if reason:
                errors.append(ErrorRecord(media_id=img_id or "?", uri=where, stage=STAGE, reason=reason))
                continue
            question = str(rec["question"]).strip()
            rows.append(_Row(img_id, str(rec.get("source") or ""), question,
                             normalise_answer(rec["answer"]), template_key(question)))
    return rows, uris, n_in


def _row_problem(rec: dict, img_id: str, bad_images: dict[str, str]) -> str:
    """Why a row cannot become an example ("" when it can)."""
    if not img_id:
        return "missing_img_id: the row has no img_id"
    if img_id in bad_images:
        return bad_images[img_id]
    if not str(rec.get("question") or "").strip():
        return "empty_question: the row has no question"
    answer = normalise_answer(rec.get("answer") if rec.get("answer") is not None else "")
    if not answer:
        return "empty_answer: the row has no answer"
    if "|" in answer:  # the prompt joins options with "|": such an option could not be parsed back
        return f"pipe_in_answer: {answer!r} contains '|', the option separator"
    return ""


def _data_files(path_or_dir: str) -> list[str]:
    """The data files of a hub download (``data/*.parquet``), ``save_to_disk`` output or the
    ``datasets`` cache (``*.arrow``; its ``cache-*.arrow`` are results of ``.map()`` calls,
    copies of the rows, and are left out)."""
    if path_or_dir.endswith((".parquet", ".arrow")):
        return [path_or_dir]
    files = [f for f in storage.list_files(path_or_dir) if f.endswith((".parquet", ".arrow"))
             and not f.rsplit("/", 1)[-1].startswith("cache-")]
    if not files:
        raise FileNotFoundError(f"no .parquet or .arrow files under {path_or_dir}")
    return files


def _records(file: str) -> Iterator[dict]:
    """Rows of one file, a record batch at a time (the images make whole files large). A file
    without the Kvasir-VQA columns is an error naming them: a wrong dataset, not bad rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = storage.read_bytes(file)
    if file.endswith(".parquet"):
        pf = pq.ParquetFile(io.BytesIO(data))
        _check_columns(file, pf.schema_arrow.names)
        batches = pf.iter_batches(batch_size=256)
    else:
        batches = _arrow_batches(pa, data)
        _check_columns(file, batches[0].schema.names if batches else list(COLUMNS))
    for batch in batches:
        yield from batch.to_pylist()


def _check_columns(file: str, names: list[str]) -> None:
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise ValueError(f"{file} is not Kvasir-VQA: it lacks the columns {missing} "
                         f"(expected {list(COLUMNS)} and optionally 'source'; it has {names})")


def _arrow_batches(pa, data: bytes):
    try:  # datasets.save_to_disk writes the IPC stream format; plain pyarrow often the file format
        return list(pa.ipc.open_stream(io.BytesIO(data)))
    except pa.ArrowInvalid:
        reader = pa.ipc.open_file(io.BytesIO(data))
        return [reader.get_batch(i) for i in range(reader.num_record_batches)]


def _image_bytes(image: object, file: str) -> bytes:
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, dict) and image.get("bytes"):
        return bytes(image["bytes"])
    path = image.get("path") if isinstance(image, dict) else image
    if not path:
        raise ValueError(f"{file}: a row has neither image bytes nor an image path")
    return storage.read_bytes(_beside(file, str(path)))


def _beside(file: str, path: str) -> str:
    if storage.is_s3(path) or PurePosixPath(path).is_absolute():
        return path
    parent = file.rsplit("/", 1)[0] if "/" in file else "."
    return storage.join(parent, path)


def _write_image(image: object, file: str, img_id: str, media_out: str, uri_prefix: str | None) -> str:
    """Check the image decodes (every pixel: a truncated JPEG would fail later, in training), write
    its bytes unchanged; returns the uri the examples carry."""
    data = _image_bytes(image, file)
    fmt = sniff_format(data)
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"image {img_id!r} is not an image we accept (sniffed {fmt})")
    decode_image(data)
    name = f"{img_id}.{IMAGE_FORMATS[fmt]}"
    storage.write_bytes(storage.join(media_out, name), data)
    return storage.join(uri_prefix, name) if uri_prefix else storage.join(media_out, name)


# ---------------------------------------------------------------------------------------------
# Building examples


def _dedupe(rows: list[_Row], errors: list[ErrorRecord]) -> list[_Row]:
    """One example per (image, template): the first row wins (so the example id stays unique);
    each repeat goes to ``errors``, as ``duplicate`` or, answering differently, ``conflicting_duplicate``."""
    first: dict[tuple[str, str], _Row] = {}
    for r in rows:
        prev = first.setdefault((r.img_id, r.template), r)
        if prev is r:
            continue
        code = "duplicate" if prev.answer == r.answer else "conflicting_duplicate"
        errors.append(ErrorRecord(media_id=r.img_id, stage=STAGE, reason=(
            f"{code}: {r.question!r} asked again (answer {r.answer!r}; kept the first, {prev.answer!r})")))
    return list(first.values())


def _example(r: _Row, uri: str, options: list[str], category: str) -> VQAExample:
    return VQAExample(
        id=f"kvasir/{r.img_id}/{_slug(r.template)}",
        media=MediaRef(id=r.img_id, uri=uri, kind="image"),
        question=r.question,
        options=options,
        answer=r.answer,
        category=category,
        template=r.template,
        meta={"dataset": "kvasir-vqa", "source": r.source},
    )


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _natural_key(s: str) -> list:
    # re.split with a group alternates text, number, text...: positions always compare like types
    return [int(t) if i % 2 else t for i, t in enumerate(re.split(r"(\d+)", s))]
