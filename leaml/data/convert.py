"""A downloaded Kvasir-VQA or SPORTU -> a dataset directory (:mod:`leaml.data.dataset_dir`).

    leaml data convert kvasir --src ~/Kvasir-VQA --out s3://bucket/data/kvasir-vqa
    leaml data convert sportu --src ~/sportu/SportU_Video_mc.json --videos ~/sportu/videos --out DIR

Kvasir-VQA (``SimulaMet-HOST/Kvasir-VQA``: one split ``raw`` of 58,849 rows; the hub's parquet
shards, ``save_to_disk`` output or the ``datasets`` cache): read by :mod:`leaml.data.kvasir` (the
paper's multiple choice: options = every answer seen for the question; a multi-answer
``"polyp; oesophagitis"`` is ONE option, the whole normalised string, so a model must name the
full set of findings, as the paper scores it). There is no official split, so it is split by image
to the paper's sizes, 18,499 train and 18,075 test of the 58,849 QA pairs (fractions of the rows
read, each within one image's ~9 questions, seeded); the images left over are in neither split and
not written.

SPORTU (``SportU_Video_mc.json`` + the clips of the per-sport archives, ``<id>.mp4``): read by
:mod:`leaml.data.sportu`, every entry validated, each clip decoded once and copied into
``media/``; split by scene (the angles of one play stay together), half the scenes test by default.

Both: the 1% labeled pick of the train QA pairs (:func:`leaml.data.world.select_labeled`), bad
rows and entries in ``errors.jsonl`` with a reason, never an abort; the counts reconcile and are
returned (and printed by the CLI).
"""
from __future__ import annotations

import time
from pathlib import PurePosixPath

from pydantic import BaseModel, ConfigDict, Field, model_validator

from leaml import storage
from leaml.config import StrictModel
from leaml.data import kvasir, sportu
from leaml.data.dataset_dir import remove_unused_media, write_dataset_dir
from leaml.data.world import accuracy_by_category, prior_only_accuracy
from leaml.media import MediaError, decode_video
from leaml.records import ErrorRecord, VQAExample

KVASIR_PAPER_ROWS, KVASIR_PAPER_TRAIN, KVASIR_PAPER_TEST = 58_849, 18_499, 18_075


class ConvertSettings(StrictModel):
    """What every conversion shares: the seed and the labeled pick."""

    model_config = ConfigDict(use_attribute_docstrings=True)  # + StrictModel's extra="forbid"

    seed: int = 0
    """Seeds the split (the same input and seed give the same split, whatever the row order)."""
    labeled_fraction: float = Field(0.01, gt=0.0, le=1.0)
    """Fraction of the train QA pairs that keep their labels (the paper: 1%)."""
    labeled_seed: int | None = None
    """Seed of the labeled pick alone (default: ``seed``)."""


class KvasirConvertConfig(ConvertSettings):
    train_fraction: float = Field(KVASIR_PAPER_TRAIN / KVASIR_PAPER_ROWS, gt=0.0, le=1.0)
    """Train QA pairs as a fraction of the rows read (default: the paper's 18,499 of 58,849)."""
    test_fraction: float = Field(KVASIR_PAPER_TEST / KVASIR_PAPER_ROWS, gt=0.0, le=1.0)
    """Test QA pairs as a fraction of the rows read (default: the paper's 18,075 of 58,849)."""

    @model_validator(mode="after")
    def _fractions_fit(self) -> "KvasirConvertConfig":
        if self.train_fraction + self.test_fraction > 1.0 + 1e-9:
            raise ValueError(f"train_fraction + test_fraction = {self.train_fraction + self.test_fraction:.3f} > 1")
        return self


class SportuConvertConfig(ConvertSettings):
    test_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    """Fraction of the scenes (plays, all their angles) in the test split."""
    check_videos: bool = True
    """Decode every clip once while converting, so a broken one is an error row now, not a crash
    in the middle of captioning."""


class ConversionSummary(BaseModel):
    out: str
    counts: dict
    seconds: float


# ---------------------------------------------------------------------------------------------
# Kvasir-VQA


def convert_kvasir(cfg: KvasirConvertConfig, src: str, out: str) -> ConversionSummary:
    """Hub download at ``src`` -> dataset directory at ``out`` (local or ``s3://``)."""
    start = time.perf_counter()
    errors: list[ErrorRecord] = []
    examples = kvasir.read_examples(src, storage.join(out, "media"), errors, uri_prefix="media")
    rows_in = len(examples) + len(errors)  # every row read is one or the other
    train, test = kvasir.split_to_sizes(examples, round(cfg.train_fraction * rows_in),
                                        round(cfg.test_fraction * rows_in), cfg.seed)
    remove_unused_media(out, {e.media.id: e.media.uri for e in examples}, train + test)
    meta = {"domain": "kvasir", "title": "Kvasir-VQA", "source": src, "paper": kvasir.PAPER,
            "prior_only": prior_only_accuracy(train, test, kvasir.PAPER_CATEGORIES),
            "split_rule": "by image; test filled first, then train, to the fractions of the rows read",
            "multi_answer": "an answer listing several findings ('a; b') is one option, the whole "
                            "normalised string; options = every answer seen for the question template"}
    counts = write_dataset_dir(out, train, test, errors, cfg, rows_in, meta)
    return ConversionSummary(out=out, counts=counts, seconds=time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------
# SPORTU


def convert_sportu(cfg: SportuConvertConfig, src: str, out: str, video_dir: str | None = None) -> ConversionSummary:
    """``SportU_Video_mc.json`` at ``src`` (or a directory holding it) and the clips under
    ``video_dir`` (default: beside the json) -> dataset directory at ``out``."""
    start = time.perf_counter()
    json_path = _sportu_json(src)
    video_dir = video_dir or (json_path.rsplit("/", 1)[0] if "/" in json_path else ".")
    errors: list[ErrorRecord] = []
    examples = sportu.read_examples(json_path, video_dir, errors)
    rows_in = len(examples) + len(errors)
    examples = _copy_clips(examples, out, errors, cfg.check_videos)
    split = sportu.split_by_media(examples, cfg.test_fraction, cfg.seed, group=lambda e: e.meta["scene"])
    train = [e for e in split if e.split == "train"]
    test = [e for e in split if e.split == "test"]
    meta = {"domain": "sportu", "title": "SPORTU", "source": json_path, "videos": video_dir, "paper": sportu.PAPER,
            "prior_only": _letter_prior(train, test),
            "split_rule": "by scene (the angles of one play together), seeded"}
    counts = write_dataset_dir(out, train, test, errors, cfg, rows_in, meta)
    return ConversionSummary(out=out, counts=counts, seconds=time.perf_counter() - start)


def _sportu_json(src: str) -> str:
    if src.endswith(".json"):
        return src
    found = [f for f in storage.list_files(src) if PurePosixPath(f).name == "SportU_Video_mc.json"]
    if not found:
        raise FileNotFoundError(f"no SportU_Video_mc.json under {src}")
    return found[0]


def _copy_clips(examples: list[VQAExample], out: str, errors: list[ErrorRecord], check: bool) -> list[VQAExample]:
    """Copy each clip once into ``<out>/media/`` and point the examples there (relative URIs);
    the examples of a clip that does not decode go to ``errors``."""
    done: dict[str, tuple[str | None, str]] = {}  # media id -> (new uri or None, why not)
    kept = []
    for e in examples:
        if e.media.id not in done:
            done[e.media.id] = _copy_clip(e, out, check)
        uri, problem = done[e.media.id]
        if uri is None:
            errors.append(ErrorRecord(media_id=e.media.id, uri=e.media.uri, stage=sportu.STAGE,
                                      reason=f"bad_video: {problem}"))
        else:
            kept.append(e.model_copy(update={"media": e.media.model_copy(update={"uri": uri})}))
    return kept


def _copy_clip(e: VQAExample, out: str, check: bool) -> tuple[str | None, str]:
    data = storage.read_bytes(e.media.uri)
    if check:
        try:
            decode_video(data, num_frames=1)
        except (MediaError, ValueError, OSError) as err:
            return None, f"{PurePosixPath(e.media.uri).name} does not decode: {err}"
    rel = f"media/{e.media.id}{PurePosixPath(e.media.uri).suffix.lower()}"
    storage.write_bytes(storage.join(out, rel), data)
    return rel, ""


def _letter_prior(train: list[VQAExample], test: list[VQAExample]) -> dict:
    """The floor: answer every test question with the train split's most common answer letter."""
    letters = [e.meta["answer_letter"] for e in train]
    best = max(sorted(set(letters)), key=letters.count)
    by_letter = {e.id: (e.options[ord(best) - ord("A")] if ord(best) - ord("A") < len(e.options) else "")
                 for e in test}
    return accuracy_by_category(test, lambda e: by_letter[e.id]) | {"letter": best}
