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

import os
import tempfile
from collections import Counter, defaultdict
from typing import Literal, Sequence

from pydantic import Field, model_validator

from leaml.data import synth_sport
from leaml.data.sportu import PAPER
from leaml.data.synth_common import rng_for
from leaml.data.synth_sport import BEATS, TEMPLATES, SportScene, frame_beats, frame_view
from leaml.data.world import (
    DomainSpec, WorldSettings, WorldSummary, accuracy_by_category, build, check_question_range, majority,
    prior_answers,
)
from leaml.media import write_video
from leaml.records import MediaRef, VQAExample


class SportWorldConfig(WorldSettings):
    """Settings of the sport world (defaults: generated in well under a minute on 2 CPU cores)."""

    domain: Literal["sport"] = "sport"
    """Names the builder, so a pipeline config can hold either world (a discriminated union)."""
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
    questions_per_clip: tuple[int, int] = (4, 6)
    """Inclusive range of questions per clip: every hard one that applies, the rest easy / medium."""
    duel_fraction: float = Field(0.65, ge=0.0, le=1.0)
    """Share of clips whose play is a duel (foul questions); the others hold a pass."""

    @model_validator(mode="after")
    def _check(self) -> "SportWorldConfig":
        check_question_range(self.questions_per_clip, "questions_per_clip")
        return self


def build_sport_world(cfg: SportWorldConfig, out: str, workers: int | None = None) -> WorldSummary:
    """The sport world's dataset directory under ``out`` (see :func:`leaml.data.world.build`);
    its summary's ``baselines`` hold ``middle_frame``."""
    return build(cfg, out, workers)


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


def _draw_teacher_item(cfg: SportWorldConfig, media_id: str) -> tuple[dict, bytes]:
    scene, mp4 = _clip(cfg, media_id)
    return synth_sport.scene_dict(scene), mp4


# ---------------------------------------------------------------------------------------------
# Baselines: the answer prior, and what one middle frame can tell (read perfectly)

MIDDLE_FRAME_HOW = (
    "per template, the most common train answer for each value of synth_sport.frame_view at the middle "
    "frame's beat (what that frame shows, read perfectly); the template's prior where the value is unseen"
)


def middle_beat(n_frames: int) -> int:
    """The beat shown by the middle frame of an ``n_frames`` clip."""
    return int(round(frame_beats(n_frames)[n_frames // 2]))


def single_frame_answers(train: Sequence[VQAExample], beat: int):
    """``predict(example)`` from one frame: see :data:`MIDDLE_FRAME_HOW`."""
    prior = prior_answers(train)
    counts: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for ex in train:
        counts[ex.template, _view(ex, beat)][ex.answer] += 1
    table = {k: majority(c) for k, c in counts.items()}
    return lambda ex: table.get((ex.template, _view(ex, beat))) or prior(ex)


def _view(ex: VQAExample, beat: int) -> str:
    return frame_view(SportScene(**ex.meta["scene"]), ex.template, beat)


def category_scores(examples: Sequence[VQAExample], predict) -> dict:
    """Accuracy per difficulty, their mean (the paper's "Average") and over all questions."""
    return accuracy_by_category(examples, predict)


def _middle_frame(cfg: SportWorldConfig, train: list[VQAExample], test: list[VQAExample]) -> dict:
    beat = middle_beat(cfg.n_frames)
    return {"middle_frame": category_scores(test, single_frame_answers(train, beat)) | {"beat": beat, "how": MIDDLE_FRAME_HOW}}


SPEC = DomainSpec(
    name="sport",
    split_sizes=lambda cfg: (cfg.n_train, cfg.n_test),
    item_job=_clip_job,
    draw_teacher_item=_draw_teacher_item,
    noisy_caption=synth_sport.noisy_caption,
    media_suffix=".mp4",
    general_image_size=lambda cfg: cfg.frame_size,
    template_info=lambda t: {"question": TEMPLATES[t].question, "category": TEMPLATES[t].category},
    size_names=("train_clips", "test_clips"),
    paper=PAPER,
    baselines=_middle_frame,
)
