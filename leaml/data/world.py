"""One world builder: a world config -> a dataset directory (docs/CONTRACTS.md), for every domain.

```
<out>/media/<id>.<png|mp4>      the domain's media: train, test and the teacher pool
<out>/train.jsonl test.jsonl    VQAExample, every label of the split
<out>/labeled.jsonl             the labeled fraction of the train QA pairs
<out>/unlabeled.jsonl           MediaRef of the train media that carry no label
<out>/general/                  media/, captions.jsonl, qa.jsonl (pretraining data of the base models)
<out>/teacher_corpus.jsonl      Caption of a disjoint pool, noisy (the teacher's "web knowledge")
<out>/world.json                sizes, seed, settings, templates and options, the prior-only floor
                                and the domain's other baselines
```

The flow is the same for every domain (:func:`build`); what differs (how an item is drawn, its
templates, its categories and the paper's figures) is the domain's :class:`DomainSpec`, one per
module: :mod:`leaml.data.endo_world` (images, Kvasir-VQA's stand-in) and
:mod:`leaml.data.sport_world` (video, SPORTU's). Media URIs are relative to ``<out>`` so the
directory can be moved or uploaded to ``s3://`` as is. The same config gives byte-identical files:
every item draws from its own seeded RNG.
"""
from __future__ import annotations

import importlib
import json
import os
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field

from leaml import storage
from leaml.config import StrictModel
from leaml.data import synth_general
from leaml.data.synth_common import options_by_template, png_bytes, rng_for, with_options
from leaml.records import Caption, MediaRef, VQAExample, save_records


class WorldSettings(StrictModel):
    """The settings every domain's world has; a domain's config adds its own."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)  # + StrictModel's extra="forbid"

    seed: int = 0
    """Everything (pixels, questions, splits, the labeled pick) is a function of this seed."""
    n_general: int = Field(3000, ge=1)
    """General-domain images (captions + generic QA) for pretraining the tiny base models."""
    general_questions_per_image: int = Field(4, ge=1, le=8)
    """Generic QA pairs per general image (distinct templates)."""
    n_teacher_pool: int = Field(1500, ge=0)
    """Media items, disjoint from train/test, captioned noisily for the teacher's pretraining."""
    labeled_fraction: float = Field(0.01, gt=0.0, le=1.0)
    """Fraction of train QA pairs (not media items) that keep their labels, as in the paper."""
    labeled_seed: int | None = None
    """Seed of the labeled pick alone (default: ``seed``): re-draws the 1% without changing a pixel,
    so a multi-seed table varies the labels while the media and the base models stay the same."""
    caption_mention_p: float = Field(0.7, ge=0.0, le=1.0)
    """Teacher captions: probability that each fact is mentioned at all."""
    caption_wrong_p: float = Field(0.2, ge=0.0, le=1.0)
    """Teacher captions: probability that a mentioned fact is wrong (a real general model's errors)."""


def check_question_range(value: tuple[int, int], name: str) -> None:
    """A world's inclusive range of questions per media item must be 1 <= min <= max."""
    lo, hi = value
    if not 1 <= lo <= hi:
        raise ValueError(f"{name} must be 1 <= min <= max, got {value}")


# One job per media item: (args) -> (relative uri, media bytes, records). Module-level functions, so
# a process pool can pickle them; the main process does all the writing.
Job = Callable[[tuple], tuple[str, bytes, list]]


@dataclass(frozen=True)
class DomainSpec:
    """What one domain's world is made of; :func:`build` does the rest."""

    name: str
    split_sizes: Callable[[WorldSettings], tuple[int, int]]
    """cfg -> (train items, test items)."""
    item_job: Job
    """(cfg, split, i) -> one train or test item and its QA pairs (options left empty)."""
    draw_teacher_item: Callable[[WorldSettings, str], tuple[dict, bytes]]
    """(cfg, media id) -> a teacher-pool item's scene attributes and media bytes."""
    noisy_caption: Callable[..., str]
    """(scene attributes, rng, mention_p, wrong_p) -> the teacher corpus's caption of the item."""
    media_suffix: str
    """File suffix of the domain's media (".png", ".mp4")."""
    general_image_size: Callable[[WorldSettings], int]
    """Side of the general domain's pictures in this world."""
    template_info: Callable[[str], dict]
    """Template name -> what world.json says of it besides its options (its question, ...)."""
    size_names: tuple[str, str]
    """world.json's names of the train / test counts."""
    paper: dict
    """The real benchmark this world stands in for, as the paper reports it: benchmark, table,
    categories (its "Average" column's) and gap_closure (what LEAML closed there)."""
    paper_categories: tuple[str, ...] = ()
    """The categories the paper's table averages over (its "Average" column), if it names them."""
    baselines: Callable[[WorldSettings, list[VQAExample], list[VQAExample]], dict] | None = None
    """(cfg, train, test) -> more floors for world.json beside ``prior_only``."""


DOMAINS = {"endo": "leaml.data.endo_world", "sport": "leaml.data.sport_world"}


def domain_spec(domain: str) -> DomainSpec:
    if domain not in DOMAINS:
        raise ValueError(f"unknown world domain {domain!r}; known: {sorted(DOMAINS)}")
    return importlib.import_module(DOMAINS[domain]).SPEC


class WorldSummary(BaseModel):
    """What :func:`build` wrote, its floors and how long it took."""

    out: str
    sizes: dict[str, int]
    prior_only: dict
    baselines: dict = {}
    seconds: float


# ---------------------------------------------------------------------------------------------
# Building


def build(cfg, out: str, workers: int | None = None) -> WorldSummary:
    """Write the whole dataset directory of ``cfg`` (any domain's config) under ``out`` (local path
    or ``s3://``). ``workers`` processes render the items (default: one per CPU core); items draw
    only from their own RNG, so the files are byte-identical whatever the number of workers."""
    spec = domain_spec(cfg.domain)
    start = time.perf_counter()
    workers = workers or os.cpu_count() or 1
    n_train, n_test = spec.split_sizes(cfg)
    train = _run_items(out, spec.item_job, [(cfg, "train", i) for i in range(n_train)], workers, f"{spec.name} train")
    test = _run_items(out, spec.item_job, [(cfg, "test", i) for i in range(n_test)], workers, f"{spec.name} test")
    options = options_by_template((ex.template, ex.answer) for ex in [*train, *test])
    train, test = with_options(train, options), with_options(test, options)
    labeled = select_labeled(train, cfg.labeled_fraction, labeled_pick_seed(cfg))
    unlabeled = unlabeled_media(train, labeled)
    teacher = teacher_pool(cfg, out, workers)
    general_captions, general_qa = build_general(cfg, spec.general_image_size(cfg), out, workers)

    prior = accuracy_by_category(test, prior_answers(train), spec.paper_categories)
    baselines = spec.baselines(cfg, train, test) if spec.baselines else {}
    sizes = {spec.size_names[0]: n_train, spec.size_names[1]: n_test,
             "train_qa": len(train), "test_qa": len(test), "labeled_qa": len(labeled),
             "unlabeled_media": len(unlabeled), "teacher_captions": len(teacher),
             "general_images": cfg.n_general, "general_qa": len(general_qa)}
    for name, records in (("train.jsonl", train), ("test.jsonl", test), ("labeled.jsonl", labeled),
                          ("unlabeled.jsonl", unlabeled), ("teacher_corpus.jsonl", teacher),
                          ("general/captions.jsonl", general_captions), ("general/qa.jsonl", general_qa)):
        save_records(storage.join(out, name), records)
    world = {"domain": cfg.domain, "seed": cfg.seed, "sizes": sizes, "config": cfg.model_dump(mode="json"),
             "templates": {t: {**spec.template_info(t), "options": o} for t, o in options.items()},
             "labeled_selection": LABELED_SELECTION, "prior_only": prior, **baselines}
    storage.write_text(storage.join(out, "world.json"), json.dumps(world, indent=2, sort_keys=True) + "\n")
    return WorldSummary(out=str(out), sizes=sizes, prior_only=prior, baselines=baselines,
                        seconds=time.perf_counter() - start)


def teacher_pool(cfg, out: str, workers: int) -> list[Caption]:
    """The ``cfg.n_teacher_pool`` items of the teacher's noisy corpus under ``out``, captioned."""
    return _run_items(out, _teacher_job, [(cfg, i) for i in range(cfg.n_teacher_pool)], workers, "teacher pool")


def _teacher_job(args: tuple) -> tuple[str, bytes, list[Caption]]:
    cfg, i = args
    spec = domain_spec(cfg.domain)
    media_id = f"{spec.name}-teacher-{i:05d}"
    attrs, data = spec.draw_teacher_item(cfg, media_id)
    text = spec.noisy_caption(attrs, rng_for(cfg.seed, media_id, "caption"), cfg.caption_mention_p, cfg.caption_wrong_p)
    uri = f"media/{media_id}{spec.media_suffix}"
    # meta.kind: a caption names its media by uri only, and a video must not be read as an image
    kind = {"kind": "video"} if spec.media_suffix == ".mp4" else {}
    return uri, data, [Caption(media_id=media_id, text=text, model="synthetic-teacher",
                               meta={"uri": uri, **kind, "scene": attrs})]


def build_general(cfg: WorldSettings, image_size: int, out: str, workers: int) -> tuple[list[Caption], list[VQAExample]]:
    """The general domain's ``cfg.n_general`` pictures under ``out``: their captions and QA pairs
    (options = every answer seen for the template across the set)."""
    args = [(cfg.seed, image_size, cfg.general_questions_per_image, i) for i in range(cfg.n_general)]
    records = _run_items(out, _general_job, args, workers, "general")
    captions = [r for r in records if isinstance(r, Caption)]
    qa = [r for r in records if isinstance(r, VQAExample)]
    return captions, with_options(qa, options_by_template((ex.template, ex.answer) for ex in qa))


POOL_MIN_ITEMS = 64  # below this, starting processes costs more than it saves


def _run_items(out: str, job: Job, args: list[tuple], workers: int, desc: str) -> list:
    """Run ``job`` over ``args`` (in order), write each item's bytes under ``out``, return all records."""
    records: list = []
    if workers > 1 and len(args) >= POOL_MIN_ITEMS:
        with ProcessPoolExecutor(workers) as pool:
            for uri, data, recs in _progress(pool.map(job, args, chunksize=32), desc, len(args)):
                storage.write_bytes(storage.join(out, uri), data)
                records += recs
        return records
    for uri, data, recs in _progress(map(job, args), desc, len(args)):
        storage.write_bytes(storage.join(out, uri), data)
        records += recs
    return records


def _progress(items: Iterable, desc: str, total: int):
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency, but a bar is not worth failing for
        return items
    return tqdm(items, desc=desc, total=total, leave=False, mininterval=1.0)


def _general_job(args: tuple[int, int, int, int]) -> tuple[str, bytes, list]:
    """A general image's caption and QA pairs (options are filled in over the whole set later)."""
    seed, image_size, questions_per_image, i = args
    media = MediaRef(id=f"general-{i:05d}", uri=f"general/media/general-{i:05d}.png")
    scene = synth_general.sample_scene(rng_for(seed, media.id, "scene"))
    image = synth_general.render_scene(scene, rng_for(seed, media.id, "render"), image_size)
    cap, pairs = synth_general.general_item(scene, rng_for(seed, media.id, "text"), media, questions_per_image)
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


def majority(counts: Counter) -> str:
    """The most common answer; ties go to the alphabetically first."""
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def prior_answers(train: Sequence[VQAExample]) -> Callable[[VQAExample], str]:
    """``predict(example)``: its template's most common train answer."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for ex in train:
        counts[ex.template][ex.answer] += 1
    prior = {t: majority(c) for t, c in counts.items()}
    return lambda ex: prior.get(ex.template, "")


def prior_only_accuracy(train: Sequence[VQAExample], test: Sequence[VQAExample],
                        paper_categories: Sequence[str] = ()) -> dict:
    """Answer every test question with its template's most common train answer; scored as
    :func:`accuracy_by_category`."""
    return accuracy_by_category(test, prior_answers(train), paper_categories)


def accuracy_by_category(examples: Sequence[VQAExample], predict, paper_categories: Sequence[str] = ()) -> dict:
    """Accuracy of ``predict(example) -> answer`` per category, ``mean_of_categories`` (the paper's
    "Average", here over every category present), ``over_questions`` (every question counts once)
    and, when the paper names its table's categories, ``mean_of_paper_categories`` over those."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for ex in examples:
        hits[ex.category].append(predict(ex) == ex.answer)
    per_cat = {c: sum(h) / len(h) for c, h in sorted(hits.items())}
    total = [h for hs in hits.values() for h in hs]
    out = {"per_category": per_cat, "mean_of_categories": sum(per_cat.values()) / max(1, len(per_cat)),
           "over_questions": sum(total) / max(1, len(total))}
    if paper_categories:
        paper = [per_cat[c] for c in paper_categories if c in per_cat]
        out["mean_of_paper_categories"] = sum(paper) / max(1, len(paper))
    return out
