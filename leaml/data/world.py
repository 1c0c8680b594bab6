"""The embedded synthetic world: a WorldConfig -> a dataset directory (docs/CONTRACTS.md).

```
<out>/media/<id>.png            endo images: train, test and the teacher pool
<out>/train.jsonl test.jsonl    VQAExample, every label of the split
<out>/labeled.jsonl             the labeled fraction of the train QA pairs
<out>/unlabeled.jsonl           MediaRef of the train media that carry no label
<out>/general/                  media/, captions.jsonl, qa.jsonl (pretraining data of the base models)
<out>/teacher_corpus.jsonl      Caption of a disjoint endo pool, noisy (the teacher's "web knowledge")
<out>/world.json                sizes, seed, settings, templates and options, prior-only accuracy
```

Media URIs are relative to ``<out>`` so the directory can be moved or uploaded to ``s3://`` as is.
The same config gives byte-identical files: every item draws from its own seeded RNG.
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from typing import Callable, Iterable, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

from leaml import storage
from leaml.config import StrictModel
from leaml.data import synth_endo, synth_general
from leaml.data.synth_common import options_by_template, png_bytes, rng_for, with_options
from leaml.records import Caption, MediaRef, VQAExample, save_records


class WorldConfig(StrictModel):
    """Settings of the synthetic world (defaults: runs downstream in minutes on 2 CPU cores)."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)  # + StrictModel's extra="forbid"

    domain: Literal["endo"] = "endo"
    """Names the builder (``sport`` is the video world, leaml.data.sport_world)."""
    seed: int = 0
    """Everything (pixels, questions, splits, the labeled pick) is a function of this seed."""
    image_size: int = Field(64, ge=16, le=512)
    """Side of the square images in pixels; drawing happens in a fixed 64-unit frame."""
    n_general: int = Field(3000, ge=1)
    """General-domain images (captions + generic QA) for pretraining the tiny base models."""
    general_questions_per_image: int = Field(4, ge=1, le=8)
    """Generic QA pairs per general image (distinct templates)."""
    n_endo_train: int = Field(1500, ge=1)
    """Endo train images; their QA pairs are the fully supervised set, 1% of them the labeled set."""
    n_endo_test: int = Field(300, ge=1)
    """Endo test images (evaluation only)."""
    n_teacher_pool: int = Field(1500, ge=0)
    """Endo images, disjoint from train/test, captioned noisily for the teacher's pretraining."""
    labeled_fraction: float = Field(0.01, gt=0.0, le=1.0)
    """Fraction of train QA pairs (not images) that keep their labels, as in the paper."""
    labeled_seed: int | None = None
    """Seed of the labeled pick alone (default: ``seed``): re-draws the 1% without changing a pixel,
    so a multi-seed table varies the labels while the images and the base models stay the same."""
    questions_per_image: tuple[int, int] = (5, 6)
    """Inclusive range of questions asked per endo image, drawn from the templates that apply."""
    caption_mention_p: float = Field(0.7, ge=0.0, le=1.0)
    """Teacher captions: probability that each fact is mentioned at all."""
    caption_wrong_p: float = Field(0.2, ge=0.0, le=1.0)
    """Teacher captions: probability that a mentioned fact is wrong (a real general model's errors)."""

    @model_validator(mode="after")
    def _check(self) -> "WorldConfig":
        lo, hi = self.questions_per_image
        if not 1 <= lo <= hi:
            raise ValueError(f"questions_per_image must be 1 <= min <= max, got {self.questions_per_image}")
        return self


class WorldSummary(BaseModel):
    """What build_world wrote and how long it took."""

    out: str
    sizes: dict[str, int]
    prior_only: dict
    seconds: float


# ---------------------------------------------------------------------------------------------
# Building


def build_world(cfg: WorldConfig, out: str, workers: int | None = None) -> WorldSummary:
    """Write the whole dataset directory for ``cfg`` under ``out`` (local path or ``s3://``).

    ``workers`` processes render the items (default: one per CPU core). Items draw only from their
    own RNG, so the files are byte-identical whatever the number of workers.
    """
    start = time.perf_counter()
    workers = workers or os.cpu_count() or 1
    train = _run_items(out, _endo_job, [(cfg, "train", i) for i in range(cfg.n_endo_train)], workers, "endo train")
    test = _run_items(out, _endo_job, [(cfg, "test", i) for i in range(cfg.n_endo_test)], workers, "endo test")
    options = options_by_template((ex.template, ex.answer) for ex in [*train, *test])
    train, test = with_options(train, options), with_options(test, options)
    labeled = select_labeled(train, cfg.labeled_fraction, labeled_pick_seed(cfg))
    unlabeled = unlabeled_media(train, labeled)
    teacher = _run_items(out, _teacher_job, [(cfg, i) for i in range(cfg.n_teacher_pool)], workers, "teacher pool")
    general_captions, general_qa = build_general(cfg, out, workers)

    prior = prior_only_accuracy(train, test)
    sizes = {"endo_train_images": cfg.n_endo_train, "endo_test_images": cfg.n_endo_test,
             "train_qa": len(train), "test_qa": len(test), "labeled_qa": len(labeled),
             "unlabeled_media": len(unlabeled), "teacher_captions": len(teacher),
             "general_images": cfg.n_general, "general_qa": len(general_qa)}
    for name, records in (("train.jsonl", train), ("test.jsonl", test), ("labeled.jsonl", labeled),
                          ("unlabeled.jsonl", unlabeled), ("teacher_corpus.jsonl", teacher),
                          ("general/captions.jsonl", general_captions), ("general/qa.jsonl", general_qa)):
        save_records(storage.join(out, name), records)
    world = {"domain": cfg.domain, "seed": cfg.seed, "sizes": sizes, "config": cfg.model_dump(mode="json"),
             "templates": {t: {"question": synth_endo.TEMPLATES[t].question, "options": o}
                           for t, o in options.items()},
             "labeled_selection": LABELED_SELECTION, "prior_only": prior}
    storage.write_text(storage.join(out, "world.json"), json.dumps(world, indent=2, sort_keys=True) + "\n")
    return WorldSummary(out=str(out), sizes=sizes, prior_only=prior, seconds=time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------
# The base models' own corpus: fixed seed, independent of any downstream world

CORPUS_SEED = 7_000_001
"""Seed of the pretraining corpus: a new ``world.seed`` redraws the domain's media and labels but
reuses the same base models, as official checkpoints do not depend on anyone's dataset."""


def build_corpus(out: str, n_general: int = 6000, n_teacher_pool: int = 3000, image_size: int = 64,
                 caption_mention_p: float = 0.7, caption_wrong_p: float = 0.2,
                 seed: int = CORPUS_SEED, workers: int | None = None) -> dict:
    """The base models' pretraining corpus under ``out``: ``general/`` (captions, QA), the teacher's
    noisy endo captions (``teacher_corpus.jsonl``, media ids disjoint from every world's) and
    ``vocab.jsonl`` (endo QA texts of those images, for the tokenizer only: a real tokenizer's
    vocabulary covers its domain's words without the model being trained on its QA)."""
    cfg = WorldConfig(seed=seed, image_size=image_size, n_general=n_general, n_teacher_pool=n_teacher_pool,
                      caption_mention_p=caption_mention_p, caption_wrong_p=caption_wrong_p)
    workers = workers or os.cpu_count() or 1
    captions, qa = build_general(cfg, out, workers)
    teacher = _run_items(out, _teacher_job, [(cfg, i) for i in range(n_teacher_pool)], workers, "teacher pool")
    vocab = [qa for c in teacher for qa in synth_endo.endo_questions(
        synth_endo.EndoScene(**c.meta["scene"]), rng_for(seed, c.media_id, "questions"),
        MediaRef(id=c.media_id, uri=c.meta["uri"]), (len(synth_endo.TEMPLATES),) * 2, "train")]
    vocab = with_options(vocab, options_by_template((ex.template, ex.answer) for ex in vocab))
    for name, records in (("general/captions.jsonl", captions), ("general/qa.jsonl", qa),
                          ("teacher_corpus.jsonl", teacher), ("vocab.jsonl", vocab)):
        save_records(storage.join(out, name), records)
    info = {"seed": seed, "config": cfg.model_dump(mode="json"),
            "sizes": {"general_images": n_general, "general_qa": len(qa), "teacher_captions": len(teacher)}}
    storage.write_text(storage.join(out, "corpus.json"), json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info


def build_general(cfg: WorldConfig, out: str, workers: int) -> tuple[list[Caption], list[VQAExample]]:
    """The general domain's ``cfg.n_general`` pictures under ``out``: their captions and QA pairs
    (options = every answer seen for the template across the set)."""
    records = _run_items(out, _general_job, [(cfg, i) for i in range(cfg.n_general)], workers, "general")
    captions = [r for r in records if isinstance(r, Caption)]
    qa = [r for r in records if isinstance(r, VQAExample)]
    return captions, with_options(qa, options_by_template((ex.template, ex.answer) for ex in qa))


# One job per media item: (args) -> (relative uri, PNG bytes, records). Module-level functions, so
# a process pool can pickle them; the main process does all the writing.
Job = Callable[[tuple], tuple[str, bytes, list]]
POOL_MIN_ITEMS = 64  # below this, starting processes costs more than it saves


def _run_items(out: str, job: Job, args: list[tuple], workers: int, desc: str) -> list:
    """Run ``job`` over ``args`` (in order), write each PNG under ``out``, return all records."""
    records: list = []
    if workers > 1 and len(args) >= POOL_MIN_ITEMS:
        with ProcessPoolExecutor(workers) as pool:
            results = _progress(pool.map(job, args, chunksize=32), desc, len(args))
            for uri, png, recs in results:
                storage.write_bytes(storage.join(out, uri), png)
                records += recs
        return records
    for uri, png, recs in _progress(map(job, args), desc, len(args)):
        storage.write_bytes(storage.join(out, uri), png)
        records += recs
    return records


def _progress(items: Iterable, desc: str, total: int):
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency, but a bar is not worth failing for
        return items
    return tqdm(items, desc=desc, total=total, leave=False, mininterval=1.0)


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


def _teacher_job(args: tuple[WorldConfig, int]) -> tuple[str, bytes, list[Caption]]:
    cfg, i = args
    media_id = f"endo-teacher-{i:05d}"
    scene, png = _endo_scene(cfg, media_id)
    attrs = asdict(scene)
    text = synth_endo.noisy_caption(attrs, rng_for(cfg.seed, media_id, "caption"),
                                    cfg.caption_mention_p, cfg.caption_wrong_p)
    uri = f"media/{media_id}.png"
    return uri, png, [Caption(media_id=media_id, text=text, model="synthetic-teacher",
                              meta={"uri": uri, "scene": attrs})]


def _general_job(args: tuple[WorldConfig, int]) -> tuple[str, bytes, list]:
    """A general image's caption and QA pairs (options are filled in over the whole set later)."""
    cfg, i = args
    media = MediaRef(id=f"general-{i:05d}", uri=f"general/media/general-{i:05d}.png")
    scene = synth_general.sample_scene(rng_for(cfg.seed, media.id, "scene"))
    image = synth_general.render_scene(scene, rng_for(cfg.seed, media.id, "render"), cfg.image_size)
    cap, pairs = synth_general.general_item(scene, rng_for(cfg.seed, media.id, "text"), media,
                                            cfg.general_questions_per_image)
    return media.uri, png_bytes(image), [cap.model_copy(update={"meta": {**cap.meta, "uri": media.uri}}), *pairs]


# ---------------------------------------------------------------------------------------------
# Labeled / unlabeled split

LABELED_SELECTION = (
    "n = max(1, round(labeled_fraction * train QA pairs)); when n >= number of templates, one pair per "
    "template first (uniform within the template), then the rest uniformly from the remaining pairs; "
    "otherwise n pairs uniformly. Seeded by (seed, 'labeled'); kept in train order."
)


def labeled_pick_seed(cfg) -> int:
    """``labeled_seed`` when set, else the world's seed (a world config of either domain)."""
    return cfg.seed if cfg.labeled_seed is None else cfg.labeled_seed


def select_labeled(train: Sequence[VQAExample], fraction: float, seed: int) -> list[VQAExample]:
    """The labeled QA pairs: see ``LABELED_SELECTION``."""
    rng = rng_for(seed, "labeled", "select")
    n = min(len(train), max(1, round(fraction * len(train))))
    by_template: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(train):
        by_template[ex.template or ""].append(i)
    chosen: set[int] = set()
    if n >= len(by_template):  # every question type is seen at least once, as a practitioner would ensure
        chosen |= {int(rng.choice(idx)) for _, idx in sorted(by_template.items())}
    rest = [i for i in range(len(train)) if i not in chosen]
    chosen |= {int(i) for i in rng.choice(rest, size=n - len(chosen), replace=False)}
    return [train[i].model_copy(update={"source": "labeled"}) for i in sorted(chosen)]


def unlabeled_media(train: Sequence[VQAExample], labeled: Sequence[VQAExample]) -> list[MediaRef]:
    """Train media that carry no labeled pair, in train order."""
    taken = {ex.media.id for ex in labeled}
    seen: dict[str, MediaRef] = {}
    for ex in train:
        if ex.media.id not in taken:
            seen.setdefault(ex.media.id, ex.media)
    return list(seen.values())


# ---------------------------------------------------------------------------------------------
# The floor: what the answer prior alone gets right


def prior_only_accuracy(train: Sequence[VQAExample], test: Sequence[VQAExample]) -> dict:
    """Answer every test question with its template's most common train answer.

    Returns accuracy per category, ``mean_of_categories`` (the paper's "Average", here over every
    category including normal), ``mean_of_paper_categories`` (over Table 1's four) and
    ``over_questions`` (every question counts once). Ties go to the alphabetically first answer.
    """
    counts: dict[str, Counter] = defaultdict(Counter)
    for ex in train:
        counts[ex.template][ex.answer] += 1
    prior = {t: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for t, c in counts.items()}
    return accuracy_by_category(test, lambda ex: prior.get(ex.template, ""))


PAPER_CATEGORIES = ("colitis", "esophagitis", "instrument", "polyps")  # Table 1 has no "normal" column


def accuracy_by_category(examples: Sequence[VQAExample], predict) -> dict:
    """Accuracy of ``predict(example) -> answer`` per category, their mean, and over all questions."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for ex in examples:
        hits[ex.category].append(predict(ex) == ex.answer)
    per_cat = {c: sum(h) / len(h) for c, h in sorted(hits.items())}
    paper = [per_cat[c] for c in PAPER_CATEGORIES if c in per_cat]
    total = [h for hs in hits.values() for h in hs]
    return {"per_category": per_cat,
            "mean_of_categories": sum(per_cat.values()) / max(1, len(per_cat)),
            "mean_of_paper_categories": sum(paper) / max(1, len(paper)),
            "over_questions": sum(total) / max(1, len(total))}
