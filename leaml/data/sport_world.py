"""The sport world: a SportWorldConfig -> a dataset directory with the image world's layout.

```
<out>/media/sport-<split>-<i>.mp4  H.264 clips (MediaRef kind "video"): train, test, teacher pool
<out>/train.jsonl test.jsonl       VQAExample, category = difficulty (easy / medium / hard)
<out>/labeled.jsonl                the labeled fraction of the train QA pairs
<out>/unlabeled.jsonl              MediaRef of the train clips that carry no label
<out>/general/                     the image world's general domain (same builder, same seed)
<out>/teacher_corpus.jsonl         Caption of a disjoint clip pool, noisy; meta.uri and meta.kind
<out>/world.json                   sizes, settings, templates and options, prior-only and
                                   single-middle-frame baselines
```

``PipelineConfig.data_dir`` can point at the directory as is. Media URIs are relative to ``<out>``;
the same config gives byte-identical files (every clip draws from its own seeded RNG, x264 is
deterministic). The general domain is the image world's own (single images): the tiny base
models learn colours, counting and "Choose one of the following options" there, and the sport
clips stay out of their distribution, as SPORTU is for a general VLM.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from collections import Counter, defaultdict
from typing import Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

from leaml import storage
from leaml.data import synth_sport
from leaml.data.synth_common import options_by_template, rng_for, with_options
from leaml.data.synth_sport import BEATS, TEMPLATES, SportScene, frame_beats, frame_view
from leaml.data.world import (
    LABELED_SELECTION, WorldConfig, _run_items, build_general, accuracy_by_category, labeled_pick_seed, select_labeled,
    unlabeled_media,
)
from leaml.media import write_video
from leaml.records import Caption, MediaRef, VQAExample, save_records


class SportWorldConfig(BaseModel):
    """Settings of the sport world (defaults: generated in well under a minute on 2 CPU cores)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    domain: Literal["sport"] = "sport"
    """Names the builder, so a pipeline config can hold either world (a discriminated union)."""
    seed: int = 0
    """Everything (events, pixels, questions, splits, the labeled pick) is a function of this seed."""
    frame_size: int = Field(64, ge=32, le=256, multiple_of=32)
    """Side of the square frames in pixels (a multiple of 32: decord 0.6 misreads 16 or 48 wide)."""
    n_frames: int = Field(8, ge=BEATS, le=32)
    """Frames per clip, spread evenly over the 8-beat event clock; sample the same number
    (``num_frames`` in the pipeline's stages) so that no event beat is skipped."""
    fps: float = Field(4.0, gt=0.0, le=60.0)
    """Frame rate written in the mp4 (8 frames at 4 fps: a 2-second clip)."""
    n_train: int = Field(400, ge=1)
    """Train clips; their QA pairs are the fully supervised set, a fraction of them the labeled set."""
    n_test: int = Field(100, ge=1)
    """Test clips (evaluation only)."""
    n_teacher_pool: int = Field(200, ge=0)
    """Clips, disjoint from train/test, captioned noisily for the teacher's pretraining."""
    n_general: int = Field(3000, ge=1)
    """General-domain images (the image world's) for pretraining the tiny base models."""
    general_questions_per_image: int = Field(4, ge=1, le=8)
    """Generic QA pairs per general image (distinct templates)."""
    labeled_fraction: float = Field(0.01, gt=0.0, le=1.0)
    """Fraction of train QA pairs (not clips) that keep their labels, as in the paper."""
    labeled_seed: int | None = None
    """Seed of the labeled pick alone (default: ``seed``); see WorldConfig.labeled_seed."""
    questions_per_clip: tuple[int, int] = (4, 6)
    """Inclusive range of questions per clip: every hard one that applies, the rest easy / medium."""
    duel_fraction: float = Field(0.65, ge=0.0, le=1.0)
    """Share of clips whose play is a duel (foul questions); the others hold a pass."""
    caption_mention_p: float = Field(0.7, ge=0.0, le=1.0)
    """Teacher captions: probability that each fact is mentioned at all."""
    caption_wrong_p: float = Field(0.2, ge=0.0, le=1.0)
    """Teacher captions: probability that a mentioned fact is wrong (a real general model's errors)."""

    @model_validator(mode="after")
    def _check(self) -> "SportWorldConfig":
        lo, hi = self.questions_per_clip
        if not 1 <= lo <= hi:
            raise ValueError(f"questions_per_clip must be 1 <= min <= max, got {self.questions_per_clip}")
        return self


class SportWorldSummary(BaseModel):
    """What build_sport_world wrote, its baselines and how long it took."""

    out: str
    sizes: dict[str, int]
    prior_only: dict
    middle_frame: dict
    seconds: float

    def describe(self) -> str:
        lines = [f"{k}: {v}" for k, v in self.sizes.items()]
        for name, acc in (("prior-only", self.prior_only), ("middle frame (oracle reading)", self.middle_frame)):
            cats = " ".join(f"{c} {100 * a:.1f}" for c, a in acc["per_category"].items())
            lines.append(f"{name}: {cats}; mean of categories {100 * acc['mean_of_categories']:.1f}")
        lines.append(f"built in {self.seconds:.1f}s")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Building


def build_sport_world(cfg: SportWorldConfig, out: str, workers: int | None = None) -> SportWorldSummary:
    """Write the whole dataset directory for ``cfg`` under ``out`` (local path or ``s3://``).

    ``workers`` processes render and encode the clips (default: one per CPU core); the files are
    byte-identical whatever the number of workers.
    """
    start = time.perf_counter()
    workers = workers or os.cpu_count() or 1
    train = _run_items(out, _clip_job, [(cfg, "train", i) for i in range(cfg.n_train)], workers, "sport train")
    test = _run_items(out, _clip_job, [(cfg, "test", i) for i in range(cfg.n_test)], workers, "sport test")
    options = options_by_template((ex.template, ex.answer) for ex in [*train, *test])
    train, test = with_options(train, options), with_options(test, options)
    labeled = select_labeled(train, cfg.labeled_fraction, labeled_pick_seed(cfg))
    unlabeled = unlabeled_media(train, labeled)
    teacher = _run_items(out, _teacher_job, [(cfg, i) for i in range(cfg.n_teacher_pool)], workers, "teacher pool")
    general_captions, general_qa = _build_general(cfg, out, workers)

    prior = category_scores(test, prior_answers(train))
    beat = middle_beat(cfg.n_frames)
    middle = category_scores(test, single_frame_answers(train, beat))
    sizes = {"train_clips": cfg.n_train, "test_clips": cfg.n_test, "train_qa": len(train), "test_qa": len(test),
             "labeled_qa": len(labeled), "unlabeled_media": len(unlabeled), "teacher_captions": len(teacher),
             "general_images": cfg.n_general, "general_qa": len(general_qa)}
    for name, records in (("train.jsonl", train), ("test.jsonl", test), ("labeled.jsonl", labeled),
                          ("unlabeled.jsonl", unlabeled), ("teacher_corpus.jsonl", teacher),
                          ("general/captions.jsonl", general_captions), ("general/qa.jsonl", general_qa)):
        save_records(storage.join(out, name), records)
    world = {
        "domain": cfg.domain, "seed": cfg.seed, "sizes": sizes, "config": cfg.model_dump(mode="json"),
        "templates": {t: {"question": TEMPLATES[t].question, "category": TEMPLATES[t].category, "options": o}
                      for t, o in options.items()},
        "labeled_selection": LABELED_SELECTION,
        "prior_only": prior,
        "middle_frame": middle | {"beat": beat, "how": MIDDLE_FRAME_HOW},
    }
    storage.write_text(storage.join(out, "world.json"), json.dumps(world, indent=2, sort_keys=True) + "\n")
    return SportWorldSummary(out=str(out), sizes=sizes, prior_only=prior, middle_frame=middle,
                             seconds=time.perf_counter() - start)


def _clip(cfg: SportWorldConfig, media_id: str) -> tuple[SportScene, bytes]:
    scene = synth_sport.sample_scene(rng_for(cfg.seed, media_id, "scene"), cfg.duel_fraction)
    frames = synth_sport.render_clip(scene, rng_for(cfg.seed, media_id, "render"), cfg.frame_size, cfg.n_frames)
    return scene, mp4_bytes(frames, cfg.fps)


def mp4_bytes(frames, fps: float) -> bytes:
    """The bytes :func:`leaml.media.write_video` writes (through a private temp file)."""
    with tempfile.TemporaryDirectory(prefix="leaml-clip-") as tmp:
        path = os.path.join(tmp, "clip.mp4")
        write_video(path, frames, fps=fps)
        with open(path, "rb") as f:
            return f.read()


# Jobs run in worker processes: (args) -> (relative uri, mp4 bytes, records); world._run_items writes.


def _clip_job(args: tuple[SportWorldConfig, str, int]) -> tuple[str, bytes, list[VQAExample]]:
    cfg, split, i = args
    media = MediaRef(id=f"sport-{split}-{i:05d}", uri=f"media/sport-{split}-{i:05d}.mp4", kind="video")
    scene, mp4 = _clip(cfg, media.id)
    qa = synth_sport.sport_questions(scene, rng_for(cfg.seed, media.id, "questions"), media,
                                     cfg.questions_per_clip, split)
    return media.uri, mp4, qa


def _teacher_job(args: tuple[SportWorldConfig, int]) -> tuple[str, bytes, list[Caption]]:
    cfg, i = args
    media_id = f"sport-teacher-{i:05d}"
    scene, mp4 = _clip(cfg, media_id)
    attrs = synth_sport.scene_dict(scene)
    text = synth_sport.noisy_caption(attrs, rng_for(cfg.seed, media_id, "caption"),
                                     cfg.caption_mention_p, cfg.caption_wrong_p)
    uri = f"media/{media_id}.mp4"
    # meta.kind: a caption names its media by uri only, and a video must not be read as an image
    return uri, mp4, [Caption(media_id=media_id, text=text, model="synthetic-teacher",
                              meta={"uri": uri, "kind": "video", "scene": attrs})]


def _build_general(cfg: SportWorldConfig, out: str, workers: int) -> tuple[list[Caption], list[VQAExample]]:
    """The image world's general domain, built by its own job with this seed and frame size."""
    gcfg = WorldConfig(seed=cfg.seed, image_size=cfg.frame_size, n_general=cfg.n_general,
                       general_questions_per_image=cfg.general_questions_per_image)
    return build_general(gcfg, out, workers)


# ---------------------------------------------------------------------------------------------
# Baselines: the answer prior, and what one middle frame can tell (read perfectly)

MIDDLE_FRAME_HOW = (
    "per template, the most common train answer for each value of synth_sport.frame_view at the middle "
    "frame's beat (what that frame shows, read perfectly); the template's prior where the value is unseen"
)


def middle_beat(n_frames: int) -> int:
    """The beat shown by the middle frame of an ``n_frames`` clip."""
    return int(round(frame_beats(n_frames)[n_frames // 2]))


def _majority(counts: Counter) -> str:
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]  # ties: alphabetically first


def prior_answers(train: Sequence[VQAExample]):
    """``predict(example)``: the template's most common train answer."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for ex in train:
        counts[ex.template][ex.answer] += 1
    prior = {t: _majority(c) for t, c in counts.items()}
    return lambda ex: prior.get(ex.template, "")


def single_frame_answers(train: Sequence[VQAExample], beat: int):
    """``predict(example)`` from one frame: see :data:`MIDDLE_FRAME_HOW`."""
    prior = prior_answers(train)
    counts: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for ex in train:
        counts[ex.template, _view(ex, beat)][ex.answer] += 1
    table = {k: _majority(c) for k, c in counts.items()}
    return lambda ex: table.get((ex.template, _view(ex, beat))) or prior(ex)


def _view(ex: VQAExample, beat: int) -> str:
    return frame_view(SportScene(**ex.meta["scene"]), ex.template, beat)


def category_scores(examples: Sequence[VQAExample], predict) -> dict:
    """Accuracy per difficulty, their mean (the paper's "Average") and over all questions."""
    scores = accuracy_by_category(examples, predict)
    return {k: v for k, v in scores.items() if k != "mean_of_paper_categories"}  # endo's Table 1 columns
