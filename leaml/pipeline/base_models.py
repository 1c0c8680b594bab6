"""Base models of the embedded world: a dataset dir -> pretrained tiny student and teacher (cached).

Stands in for "a pretrained general VLM" (student) and "a 72B teacher with web knowledge":
- student: the ``general`` domain only, all three tasks (describe, answer with options, write a
  QA pair), so zero-shot on ``endo`` means what it means in the paper: a general model facing an
  unfamiliar domain;
- teacher: a larger tiny model, same general data plus noisy captions of a disjoint endo pool.

Checkpoints are cached by a hash of everything that determines them (world config, preset,
pretraining settings), so later runs reuse them. Production runs skip this: their student and
teacher are real checkpoints given by path.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Literal

from pydantic import Field

from leaml import storage
from leaml.config import StrictModel
from leaml.train.config import ScalingSettings, TrainConfig
from leaml.train.data import DataSpec
from leaml.train.loop import TrainJob

Role = Literal["student", "teacher"]


class PretrainSettings(StrictModel):
    max_steps: int = Field(1500, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(2e-3, gt=0)
    warmup_steps: int = Field(50, ge=0)
    seed: int = 0
    torch_threads: int | None = Field(None, ge=1)
    """Intra-op threads of the pretraining worker (None: one per reserved CPU); not part of the
    cache key."""


class BaseModelSource(StrictModel):
    """Either a real checkpoint (``path``) or a tiny preset pretrained on the embedded world."""

    path: str | None = None
    """Local dir, s3:// prefix or hub id of a real checkpoint (used as is)."""
    preset: str | None = None
    """Tiny preset to build and pretrain on the world's general domain."""
    pretrain: PretrainSettings = PretrainSettings()


def default_cache_dir() -> str:
    return os.environ.get("LEAML_CACHE", str(Path.home() / ".cache" / "leaml"))


def pretrain_data(data_dir: str, role: Role) -> list[DataSpec]:
    general = [
        DataSpec(kind="caption", uri=storage.join(data_dir, "general/captions.jsonl"), media_root=data_dir),
        DataSpec(kind="vqa", uri=storage.join(data_dir, "general/qa.jsonl"), media_root=data_dir),
        DataSpec(kind="qa", uri=storage.join(data_dir, "general/qa.jsonl"), media_root=data_dir, weight=0.5),
    ]
    if role == "teacher":
        # The teacher's "web knowledge" of the domain (noisy captions, no QA) is what makes its
        # captions worth distilling, so it gets a batch every step and the general tasks every other.
        general = [g.model_copy(update={"every": 2}) for g in general]
        general.append(DataSpec(kind="caption", uri=storage.join(data_dir, "teacher_corpus.jsonl"),
                                media_root=data_dir))
    return general


def cache_key(data_dir: str, role: Role, src: BaseModelSource) -> str:
    # The whole world.json (config, sizes, prior accuracy, option sets) fingerprints the data: a
    # change to the generator's code that changes the data changes the key too.
    # The labeled pick is not an input of pretraining: seeds that only re-draw it share base models.
    world = json.loads(storage.read_text(storage.join(data_dir, "world.json")))
    world.get("config", {}).pop("labeled_seed", None)
    for size in ("labeled_qa", "unlabeled_media"):  # these follow the pick too
        world.get("sizes", {}).pop(size, None)
    blob = json.dumps({"world": world, "role": role, "preset": src.preset,
                       "pretrain": src.pretrain.model_dump(exclude={"torch_threads"}), "v": 1}, sort_keys=True)
    return f"{src.preset}-{role}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def ensure_base_model(data_dir: str, role: Role, src: BaseModelSource, cache_dir: str | None = None,
                      engine: str = "local") -> str:
    """The checkpoint URI for ``role``: the given path, or a cached / freshly pretrained preset."""
    from leaml.models.init import init_base_model
    from leaml.train.ray_trainer import run_training

    if src.path:
        return src.path
    if not src.preset:
        raise ValueError(f"{role}: set either path (a checkpoint) or preset (a tiny model to pretrain)")
    out = storage.join(cache_dir or default_cache_dir(), "base", cache_key(data_dir, role, src))
    if storage.exists(storage.join(out, "leaml_model.json")):
        print(f"[base] {role}: reusing {out}", flush=True)
        return out
    init = init_base_model(src.preset, data_dir, out + ".init", seed=src.pretrain.seed)
    p = src.pretrain
    job = TrainJob(name=f"pretrain-{role}", init_model=init, out_dir=out, data=pretrain_data(data_dir, role),
                   train=TrainConfig(objective="pretrain", method="full", max_steps=p.max_steps, lr=p.lr,
                                     batch_size=p.batch_size, warmup_steps=p.warmup_steps, seed=p.seed,
                                     weight_decay=0.01, report_every=100,
                                     scaling=ScalingSettings(torch_threads=p.torch_threads)))
    run_training(job, engine=engine)
    storage.remove(init)
    return out
