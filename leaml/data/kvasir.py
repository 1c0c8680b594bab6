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
- The train/test split is by image (:func:`split_by_media`), so no image is in both.
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
from typing import Iterable, Iterator

from leaml import storage
from leaml.media import IMAGE_FORMATS, sniff_format
from leaml.records import MediaRef, VQAExample

log = logging.getLogger(__name__)

PAPER_CATEGORIES = ("colitis", "esophagitis", "instrument", "polyps")  # Table 1's columns
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
    path_or_dir: str, media_out: str, *, test_fraction: float = 0.5, seed: int = 0
) -> list[VQAExample]:
    """Read the export, write its images under ``media_out``, return split MC examples."""
    rows, uris = _read_rows(path_or_dir, media_out)
    options = template_options(rows)
    categories = _image_categories(rows)
    examples = [_example(r, uris[r.img_id], options[r.template], categories[r.img_id]) for r in _dedupe(rows)]
    return split_by_media(examples, test_fraction=test_fraction, seed=seed)


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


def split_by_media(examples: list[VQAExample], test_fraction: float = 0.5, seed: int = 0) -> list[VQAExample]:
    """Assign ``split`` by media id: a seeded shuffle of the sorted ids, the first
    ``n * test_fraction`` (half rounds up) are test. Same ids + seed -> same split, whatever the
    row order."""
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
    ids = sorted({e.media.id for e in examples})
    random.Random(seed).shuffle(ids)
    test = set(ids[: math.floor(len(ids) * test_fraction + 0.5)])  # not round(): 2.5 -> 2
    return [e.model_copy(update={"split": "test" if e.media.id in test else "train"}) for e in examples]


# ---------------------------------------------------------------------------------------------
# Reading


def _read_rows(path_or_dir: str, media_out: str) -> tuple[list[_Row], dict[str, str]]:
    """All rows without their image bytes, and img_id -> written media uri (once per image)."""
    rows: list[_Row] = []
    uris: dict[str, str] = {}
    for file in _data_files(path_or_dir):
        for rec in _records(file):
            img_id = str(rec["img_id"])
            if img_id not in uris:
                uris[img_id] = _write_image(_image_bytes(rec["image"], file), img_id, media_out)
            question = str(rec["question"]).strip()
            rows.append(_Row(img_id, str(rec.get("source") or ""), question,
                             normalise_answer(rec["answer"]), template_key(question)))
    if not rows:
        raise ValueError(f"no Kvasir-VQA rows under {path_or_dir}")
    return rows, uris


def _data_files(path_or_dir: str) -> list[str]:
    if path_or_dir.endswith((".parquet", ".arrow")):
        return [path_or_dir]
    files = [f for f in storage.list_files(path_or_dir) if f.endswith((".parquet", ".arrow"))]
    if not files:
        raise FileNotFoundError(f"no .parquet or .arrow files under {path_or_dir}")
    return files


def _records(file: str) -> Iterator[dict]:
    """Rows of one file, a record batch at a time (the images make whole files large)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = storage.read_bytes(file)
    if file.endswith(".parquet"):
        batches = pq.ParquetFile(io.BytesIO(data)).iter_batches(batch_size=256)
    else:
        batches = _arrow_batches(pa, data)
    for batch in batches:
        yield from batch.to_pylist()


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


def _write_image(data: bytes, img_id: str, media_out: str) -> str:
    fmt = sniff_format(data)
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"image {img_id!r} is not an image we accept (sniffed {fmt})")
    uri = storage.join(media_out, f"{img_id}.{IMAGE_FORMATS[fmt]}")
    storage.write_bytes(uri, data)
    return uri


# ---------------------------------------------------------------------------------------------
# Building examples


def _dedupe(rows: list[_Row]) -> list[_Row]:
    """One example per (image, template): the first row wins, and a repeat that answers
    differently is logged (kept out, so the example id stays unique)."""
    first: dict[tuple[str, str], _Row] = {}
    for r in rows:
        prev = first.setdefault((r.img_id, r.template), r)
        if prev.answer != r.answer:
            log.warning("image %s answers %r twice (%r, %r); keeping the first",
                        r.img_id, r.question, prev.answer, r.answer)
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
