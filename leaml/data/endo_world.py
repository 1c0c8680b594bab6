"""The endo world (images; Kvasir-VQA's stand-in): its config, its :data:`SPEC` for
:func:`leaml.data.world.build`, and the base models' own corpus (:func:`build_corpus`).

Each item is drawn by :mod:`leaml.data.synth_endo` from its own seeded RNG: hidden scene
attributes -> a 64x64 endoscopy-like picture, Kvasir-style questions and a noisy caption.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Literal

from pydantic import Field, model_validator

from leaml import storage
from leaml.data import synth_endo
from leaml.data.kvasir import PAPER, PAPER_CATEGORIES
from leaml.data.synth_common import options_by_template, png_bytes, rng_for, with_options
from leaml.data.world import (
    DomainSpec, WorldSettings, WorldSummary, build, build_general, check_question_range, teacher_pool,
)
from leaml.records import Caption, MediaRef, VQAExample, save_records


class WorldConfig(WorldSettings):
    """Settings of the endo world (defaults: runs downstream in minutes on 2 CPU cores)."""

    domain: Literal["endo"] = "endo"
    """Names the builder (``sport`` is the video world, leaml.data.sport_world)."""
    image_size: int = Field(64, ge=16, le=512)
    """Side of the square images in pixels; drawing happens in a fixed 64-unit frame."""
    n_endo_train: int = Field(1500, ge=1)
    """Endo train images; their QA pairs are the fully supervised set, 1% of them the labeled set."""
    n_endo_test: int = Field(300, ge=1)
    """Endo test images (evaluation only)."""
    questions_per_image: tuple[int, int] = (5, 6)
    """Inclusive range of questions asked per endo image, drawn from the templates that apply."""

    @model_validator(mode="after")
    def _check(self) -> "WorldConfig":
        check_question_range(self.questions_per_image, "questions_per_image")
        return self


def build_world(cfg: WorldConfig, out: str, workers: int | None = None) -> WorldSummary:
    """The endo world's dataset directory under ``out`` (see :func:`leaml.data.world.build`)."""
    return build(cfg, out, workers)


def _endo_scene(cfg: WorldConfig, media_id: str) -> tuple[synth_endo.EndoScene, bytes]:
    scene = synth_endo.sample_scene(rng_for(cfg.seed, media_id, "scene"))
    image = synth_endo.render_scene(scene, rng_for(cfg.seed, media_id, "render"), cfg.image_size)
    return scene, png_bytes(image)


def _endo_job(args: tuple[WorldConfig, str, int]) -> tuple[str, bytes, list[VQAExample]]:
    cfg, split, i = args
    media = MediaRef(id=f"endo-{split}-{i:05d}", uri=f"media/endo-{split}-{i:05d}.png")
    scene, png = _endo_scene(cfg, media.id)
    qa = synth_endo.endo_questions(scene, rng_for(cfg.seed, media.id, "questions"), media,
                                   cfg.questions_per_image, split)
    return media.uri, png, qa


def _draw_teacher_item(cfg: WorldConfig, media_id: str) -> tuple[dict, bytes]:
    scene, png = _endo_scene(cfg, media_id)
    return asdict(scene), png


SPEC = DomainSpec(
    name="endo",
    split_sizes=lambda cfg: (cfg.n_endo_train, cfg.n_endo_test),
    item_job=_endo_job,
    draw_teacher_item=_draw_teacher_item,
    noisy_caption=synth_endo.noisy_caption,
    media_suffix=".png",
    general_image_size=lambda cfg: cfg.image_size,
    template_info=lambda t: {"question": synth_endo.TEMPLATES[t].question},
    size_names=("endo_train_images", "endo_test_images"),
    paper=PAPER,
    paper_categories=PAPER_CATEGORIES,
)


# ---------------------------------------------------------------------------------------------
# The base models' own corpus: fixed seed, independent of any downstream world

CORPUS_SEED = 7_000_001
"""Seed of the pretraining corpus: a new ``world.seed`` redraws the domain's media and labels but
reuses the same base models, as official checkpoints do not depend on anyone's dataset."""


TEACHER_DESCRIPTIONS = "teacher_descriptions.jsonl"


def describe(pool: list[Caption], mention_p: float, wrong_p: float, seed: int) -> list[Caption]:
    """The teacher pool's pictures described anew, each fact named with ``mention_p``."""
    return [c.model_copy(update={"text": synth_endo.noisy_caption(c.meta["scene"], rng_for(seed, c.media_id, "description"),
                                                                    mention_p, wrong_p)}) for c in pool]


def build_corpus(out: str, n_general: int = 6000, n_teacher_pool: int = 3000, image_size: int = 64,
                 caption_mention_p: float = 0.7, caption_wrong_p: float = 0.2,
                 description_mention_p: float | None = None,
                 seed: int = CORPUS_SEED, workers: int | None = None) -> dict:
    """The base models' pretraining corpus under ``out``: ``general/`` (captions, QA), the teacher's
    noisy endo captions (``teacher_corpus.jsonl``, media ids disjoint from every world's: the web's
    alt-text of the pool, which the tokenizer reads too), ``vocab.jsonl`` (endo QA texts of those
    images, for the tokenizer only: a real tokenizer's vocabulary covers its domain's words without
    the model being trained on its QA) and, with ``description_mention_p``,
    ``teacher_descriptions.jsonl``: fuller descriptions of the same pictures (each fact named with
    that rate, wrong as often as the alt-text), what an instruction-tuned teacher learned to write.
    They are a file of their own so the tokenizer, and with it the student, stays as it was."""
    cfg = WorldConfig(seed=seed, image_size=image_size, n_general=n_general, n_teacher_pool=n_teacher_pool,
                      caption_mention_p=caption_mention_p, caption_wrong_p=caption_wrong_p)
    workers = workers or os.cpu_count() or 1
    captions, qa = build_general(cfg, cfg.image_size, out, workers)
    teacher = teacher_pool(cfg, out, workers)
    vocab = [qa for c in teacher for qa in synth_endo.endo_questions(
        synth_endo.EndoScene(**c.meta["scene"]), rng_for(seed, c.media_id, "questions"),
        MediaRef(id=c.media_id, uri=c.meta["uri"]), (len(synth_endo.TEMPLATES),) * 2, "train")]
    vocab = with_options(vocab, options_by_template((ex.template, ex.answer) for ex in vocab))
    files = [("general/captions.jsonl", captions), ("general/qa.jsonl", qa),
             ("teacher_corpus.jsonl", teacher), ("vocab.jsonl", vocab)]
    if description_mention_p is not None:
        files.append((TEACHER_DESCRIPTIONS, describe(teacher, description_mention_p, caption_wrong_p, seed)))
    for name, records in files:
        save_records(storage.join(out, name), records)
    info = {"seed": seed, "config": cfg.model_dump(mode="json"), "description_mention_p": description_mention_p,
            "sizes": {"general_images": n_general, "general_qa": len(qa), "teacher_captions": len(teacher)}}
    storage.write_text(storage.join(out, "corpus.json"), json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info
