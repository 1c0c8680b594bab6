"""The staged base-model recipe: (preset, role, pretraining corpus) -> a base checkpoint + its record.

Built the way real VLMs are built, each stage measured:
1. ``tower``: the vision tower and connector alone, with linear heads on dense scene labels
   (:mod:`leaml.pretrain.tower`): the student on the general domain only (the paper's premise: a
   general model facing an unfamiliar domain), the teacher also on its noisy endo corpus;
2. ``align``: the tower's blocks frozen, the connector and language model learn to read its
   tokens (captions, general VQA packed per image, QA writing), at a high learning rate;
3. ``instruct``: everything moves, at a lower learning rate, on the same mixture.

The result is independent of any downstream world: the corpus has its own fixed seed
(:data:`leaml.data.endo_world.CORPUS_SEED`). Training goes through the one training loop (stages 2-3)
in this process; stage 1 is a plain classification loop over the tower.
"""
from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from dataclasses import asdict
from typing import Callable, Literal

from pydantic import Field

from leaml import storage
from leaml.config import StrictModel
from leaml.records import Caption, load_records
from leaml.train.config import ScalingSettings, TrainConfig
from leaml.train.data import DataSpec

Role = Literal["student", "teacher"]
RECIPE_VERSION = 2  # bump when a change to this module changes what a recipe produces


class TowerSettings(StrictModel):
    steps: int = Field(800, ge=0)
    """Classification steps of the tower alone (0 skips the stage)."""
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0)


class StageSettings(StrictModel):
    steps: int = Field(1000, ge=0)
    """Optimizer steps of this stage (0 skips it)."""
    batch_size: int = Field(16, ge=1)
    """Images per source per step (VQA is packed: all of an image's questions in one sequence)."""
    lr: float = Field(2e-3, gt=0)
    warmup_steps: int = Field(50, ge=0)


class PretrainSettings(StrictModel):
    """The three stages; a field that changes the result is part of the cache key and manifest."""

    tower: TowerSettings = TowerSettings()
    align: StageSettings = StageSettings(steps=1500)
    instruct: StageSettings = StageSettings(steps=500, lr=5e-4, warmup_steps=5)
    seed: int = 0
    torch_threads: int | None = Field(None, ge=1)
    """Intra-op threads (None: torch's default); not part of the cache key."""

    def key(self) -> dict:
        return self.model_dump(exclude={"torch_threads"})


def pretrain_data(corpus_dir: str, role: Role) -> list[DataSpec]:
    general = [
        DataSpec(kind="caption", uri=storage.join(corpus_dir, "general/captions.jsonl"), media_root=corpus_dir),
        DataSpec(kind="vqa", uri=storage.join(corpus_dir, "general/qa.jsonl"), media_root=corpus_dir),
        DataSpec(kind="qa", uri=storage.join(corpus_dir, "general/qa.jsonl"), media_root=corpus_dir, weight=0.5),
    ]
    if role == "teacher":
        # The teacher's "web knowledge" of the domain (noisy captions, no QA) is what makes its
        # captions worth distilling: a caption batch every step, the general tasks every other.
        general = [g.model_copy(update={"every": 2}) for g in general]
        general.append(DataSpec(kind="caption", uri=teacher_caption_file(corpus_dir), media_root=corpus_dir))
    return general


def teacher_caption_file(corpus_dir: str) -> str:
    """What the teacher learns to write: the corpus's fuller descriptions where it has them, else
    the pool's alt-text captions (``leaml.data.endo_world.build_corpus``; a sport corpus has the latter)."""
    from leaml.data.endo_world import TEACHER_DESCRIPTIONS

    uri = storage.join(corpus_dir, TEACHER_DESCRIPTIONS)
    return uri if storage.exists(uri) else storage.join(corpus_dir, "teacher_corpus.jsonl")


# ---------------------------------------------------------------------------------------------
# Stage 1 data: images and dense labels


def tower_corpus(corpus_dir: str, role: Role, label_noise: float = 0.2, seed: int = 0):
    """(images, scene dicts, heads) for the tower stage. The teacher's endo labels are the noisy
    corpus's facts, each flipped to a random value with ``label_noise`` (its captions' error rate)."""
    from leaml.data import synth_endo, synth_general
    from leaml.media import load_image

    caps = load_records(storage.join(corpus_dir, "general/captions.jsonl"), Caption)
    images = [load_image(storage.join(corpus_dir, c.meta["uri"])) for c in caps]
    scenes = [c.meta["scene"] for c in caps]
    heads = synth_general.dense_labels()
    if role == "student":
        return images, scenes, heads
    endo = [c for c in load_records(storage.join(corpus_dir, "teacher_corpus.jsonl"), Caption)
            if c.meta.get("kind", "image") == "image" and "finding" in c.meta.get("scene", {})]
    if not endo:  # a clip corpus (the sport world): its tower learns from the general domain only
        return images, scenes, heads
    rng = random.Random(f"{seed}:tower-noise")
    endo_heads = synth_endo.dense_labels()
    # one shared head list: general heads skip endo scenes and the reverse (-1 = not labeled)
    g_heads = [h.__class__(h.name, h.classes, _only(h.read, "objects")) for h in heads]
    e_heads = [h.__class__(f"endo/{h.name}", h.classes, _only(_noisy(h.read, h.classes, label_noise, rng), "finding"))
               for h in endo_heads]
    images += [load_image(storage.join(corpus_dir, c.meta["uri"])) for c in endo]
    scenes += [c.meta["scene"] for c in endo]
    order = list(range(len(images)))
    random.Random(seed).shuffle(order)  # the held-out tail must hold both kinds
    return [images[i] for i in order], [scenes[i] for i in order], g_heads + e_heads


def _only(read: Callable[[dict], int], key: str) -> Callable[[dict], int]:
    return lambda s: read(s) if key in s else -1


def _noisy(read, classes: int, p: float, rng: random.Random):
    cache: dict[int, int] = {}

    def noisy(s: dict) -> int:  # the same scene keeps the same (possibly wrong) label every epoch
        k = id(s)
        if k not in cache:
            y = read(s)
            cache[k] = rng.randrange(classes) if y >= 0 and rng.random() < p else y
        return cache[k]
    return noisy


# ---------------------------------------------------------------------------------------------
# The recipe


def run_recipe(preset: str, role: Role, corpus_dir: str, out: str, settings: PretrainSettings,
               log: Callable[[str], None] = print) -> dict:
    """Pretrain ``preset`` for ``role`` on ``corpus_dir`` into ``out``; returns the stage record
    (also written to ``out/pretrain.json``)."""
    import torch

    from leaml.models.builders import load_model, save_model
    from leaml.models.init import init_base_model
    from leaml.pretrain.tower import train_tower

    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    record: dict = {"preset": preset, "role": role, "recipe_version": RECIPE_VERSION,
                    "settings": settings.key(), "corpus": _corpus_info(corpus_dir), "stages": {}}
    current = init_base_model(preset, corpus_dir, out + ".stage0", seed=settings.seed)
    if settings.tower.steps:
        t = settings.tower
        model, processor = load_model(current)
        images, scenes, heads = tower_corpus(corpus_dir, role, seed=settings.seed)
        res = train_tower(model, processor, images, scenes, heads, t.steps, t.batch_size, t.lr,
                          held_out=min(256, max(1, len(images) // 5)), seed=settings.seed, log=log)
        log(f"[base] {role} tower: {res.seconds:.0f}s, held-out " + _summary(res.held_out))
        record["stages"]["tower"] = {**asdict(res), "held_out_summary": _group_means(res.held_out)}
        save_model(model, processor, out + ".stage1")
        storage.remove(current)
        current = out + ".stage1"
    for name, stage, freeze in (("align", settings.align, _tower_blocks(current)), ("instruct", settings.instruct, [])):
        if not stage.steps:
            continue
        t0, target = time.perf_counter(), out if name == "instruct" or not settings.instruct.steps else out + f".{name}"
        metrics = _train_stage(name, role, current, target, corpus_dir, stage, freeze, settings)
        record["stages"][name] = {"steps": stage.steps, "seconds": time.perf_counter() - t0, "loss": metrics.get("loss")}
        log(f"[base] {role} {name}: {stage.steps} steps in {time.perf_counter() - t0:.0f}s, loss {metrics.get('loss'):.3f}")
        storage.remove(current)
        _remove_resume_state(target)
        current = target
    if current != out:  # no language stage ran: the tower-only model is the result
        model, processor = load_model(current)
        save_model(model, processor, out)
        storage.remove(current)
    storage.write_text(storage.join(out, "pretrain.json"), json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def _corpus_info(corpus_dir: str) -> dict:
    # The endo corpus has corpus.json; the sport base models' corpus is a sport world directory (its
    # fixed-seed general domain and clips), described by its world.json, as is a converted dataset.
    for name in ("corpus.json", "world.json"):
        uri = storage.join(corpus_dir, name)
        if storage.exists(uri):
            info = json.loads(storage.read_text(uri))
            return {"source": name, "seed": info.get("seed"), "sizes": info.get("sizes", {})}
    raise FileNotFoundError(f"{corpus_dir} has neither corpus.json nor world.json")


def _remove_resume_state(out: str) -> None:
    # A finished stage's resume checkpoints (``<out>.ckpt*``, see leaml.train.loop) are dead weight.
    import glob
    import shutil

    if storage.is_s3(out):
        return
    for path in glob.glob(glob.escape(out) + ".ckpt*"):
        shutil.rmtree(path, ignore_errors=True)


def _tower_blocks(model_uri: str) -> list[str]:
    # What stays frozen while the LM learns to read the tower: the tower without its connector.
    arch = json.loads(storage.read_text(storage.join(model_uri, "leaml_model.json")))["arch"]
    return ["visual.patch_embed", "visual.blocks"] if arch == "qwen2_5_vl" else ["vision_tower"]


def _train_stage(name: str, role: Role, init: str, out: str, corpus_dir: str, stage: StageSettings,
                 freeze: list[str], settings: PretrainSettings) -> dict:
    from leaml.train.loop import TrainJob, train_loop_per_worker

    cfg = TrainConfig(objective="pretrain", method="full", max_steps=stage.steps, lr=stage.lr,
                      batch_size=stage.batch_size, warmup_steps=min(stage.warmup_steps, stage.steps - 1),
                      seed=settings.seed, weight_decay=0.01, report_every=max(1, stage.steps // 10),
                      # as_written: the order the shipped assets were pretrained with (recipe v2)
                      freeze=freeze, pack_by_media=True, turn_order="as_written",
                      scaling=ScalingSettings(torch_threads=settings.torch_threads))
    job = TrainJob(name=f"pretrain-{role}-{name}", init_model=init, out_dir=out,
                   data=pretrain_data(corpus_dir, role), train=cfg)
    return train_loop_per_worker(job.model_dump())


def _group_means(acc: dict[str, float]) -> dict[str, float]:
    groups: dict[str, list[float]] = defaultdict(list)
    for name, a in acc.items():
        groups[name.split("/")[-1] if "/" in name and not name.startswith("endo/") else name].append(a)
    return {g: sum(v) / len(v) for g, v in sorted(groups.items())}


def _summary(acc: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in _group_means(acc).items())
