"""Base models of the embedded worlds: (domain, role, source) -> a base checkpoint URI.

Stands in for "a pretrained general VLM" (student) and "a 72B teacher with web knowledge":
- student: the ``general`` domain only, so zero-shot on ``endo`` means what it means in the paper:
  a general model facing an unfamiliar domain;
- teacher: a larger tiny model, same general data plus noisy captions of an endo pool.
Both come from the staged recipe of :mod:`leaml.pretrain.recipe` (tower, alignment, instruction
tuning), in this order of preference:
1. a real checkpoint (``path``): used as is (production);
2. a shipped release asset (``assets/base_models``, :mod:`leaml.pretrain.assets`) whose recipe key
   equals this source's: the endo world's default, so ``make demo`` trains no base model;
3. the cache (``$LEAML_CACHE``), keyed by everything that determines the model;
4. pretraining now, into the cache.

The endo base models are independent of the world's seed: their corpus has its own fixed seed
(:func:`leaml.data.endo_world.build_corpus`), as official checkpoints do not depend on anyone's data.
The sport world's base models pretrain on a sport corpus of their own (:func:`sport_corpus_config`):
the world's media settings (frame size, frames, pool sizes, caption noise) drawn with the fixed
corpus seed, so a new ``world.seed`` reuses them too. Its student learns from the corpus's general
domain alone, as the endo student does; the corpus exists because the tokenizer must know the sport
words (the endo corpus's tokenizer spells "midfielder" or "intercepted" in pieces, and a tiny model
then writes them garbled: measured, docs/CALIBRATION.md round 10).
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
from leaml.pretrain.recipe import RECIPE_VERSION, PretrainSettings, Role, run_recipe

Domain = Literal["endo", "sport"]


class CorpusSettings(StrictModel):
    """Size of the endo base models' own pretraining corpus (fixed seed, not the world's)."""

    n_general: int = Field(6000, ge=1)
    """General-domain images (captions + generic QA); the tower's dense labels come from them."""
    n_teacher_pool: int = Field(3000, ge=0)
    """Endo images captioned noisily: the teacher's "web knowledge" (the student never sees them)."""
    teacher_description_mention_p: float | None = Field(0.95, ge=0.0, le=1.0)
    """The teacher learns to write descriptions of its pool that mention each fact this often (wrong
    20% of the times they do; :func:`leaml.data.endo_world.build_corpus`); None: it learns from the
    pool's alt-text captions (mention 0.7), where the nested facts (a polyp's size, an instrument)
    were named in under half, so its greedy captions left them out (recall 0.24 / 0.15,
    docs/CALIBRATION.md round 13)."""


class BaseModelSource(StrictModel):
    """Either a real checkpoint (``path``) or a tiny preset pretrained by the staged recipe."""

    path: str | None = None
    """Local dir, s3:// prefix or hub id of a real checkpoint (used as is)."""
    preset: str | None = None
    """Tiny preset to pretrain (or to take from the shipped assets when its recipe matches)."""
    pretrain: PretrainSettings = PretrainSettings()
    corpus: CorpusSettings = CorpusSettings()
    use_assets: bool = True
    """Take a shipped release asset with the same recipe key instead of pretraining."""


def default_cache_dir() -> str:
    return os.environ.get("LEAML_CACHE", str(Path.home() / ".cache" / "leaml"))


def corpus_key(src: BaseModelSource, role: Role = "student") -> str:
    """What the role's pretraining corpus holds. The teacher's includes the endo pictures' rendering
    (``synth_endo.RENDER_VERSION``): its tower and captions learn from them; the student's corpus
    is the general domain alone, so a change of the endo world leaves the student's key as it is."""
    from leaml.data.synth_endo import RENDER_VERSION
    from leaml.data.endo_world import CORPUS_SEED

    data = {"corpus": src.corpus.model_dump(exclude={"teacher_description_mention_p"}), "seed": CORPUS_SEED, "v": 1}
    if role == "teacher":
        data["endo_render"] = RENDER_VERSION
        if src.corpus.teacher_description_mention_p is not None:
            data["description_mention_p"] = src.corpus.teacher_description_mention_p
    return _digest(data)


def _digest(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


# The sport corpus's own clips with QA (train.jsonl): only its tokenizer reads them, as the endo
# corpus's vocab.jsonl (a real tokenizer covers its domain's words); the teacher never trains on QA.
SPORT_VOCAB_CLIPS = 200
# World settings that do not shape the corpus's media (the corpus has its own seed and sizes).
_NOT_MEDIA = ("seed", "n_train", "n_test", "labeled_fraction", "labeled_seed")


def sport_corpus_config(data_dir: str):
    """The sport base models' corpus: a sport world with the media settings of the one in ``data_dir``
    (frames, pool sizes, caption noise, ...) and the fixed corpus seed; None when ``data_dir`` holds
    no synthetic sport world's config (a converted dataset: the teacher learns from it as it is)."""
    from leaml.data.endo_world import CORPUS_SEED
    from leaml.data.sport_world import SportWorldConfig

    uri = storage.join(data_dir, "world.json")
    config = json.loads(storage.read_text(uri)).get("config") if storage.exists(uri) else None
    if not config or config.get("domain") != "sport":
        return None
    media = {k: v for k, v in config.items() if k not in _NOT_MEDIA}
    return SportWorldConfig(**media, seed=CORPUS_SEED, n_train=min(SPORT_VOCAB_CLIPS, config["n_train"]), n_test=1)


def cache_key(data_dir: str, role: Role, src: BaseModelSource, domain: Domain = "endo") -> str:
    """Everything that determines the base model: recipe, preset, role and corpus. The endo corpus
    or the sport corpus (:func:`sport_corpus_config`): no world seed enters; a converted dataset:
    its world.json without the labeled pick's fields."""
    if domain == "endo":
        data = {"corpus": corpus_key(src, role)}
    elif corpus := sport_corpus_config(data_dir):
        data = {"sport_corpus": corpus.model_dump(mode="json")}
    else:
        world = json.loads(storage.read_text(storage.join(data_dir, "world.json")))
        world.get("config", {}).pop("labeled_seed", None)
        for size in ("labeled_qa", "unlabeled_media"):  # these follow the pick too
            world.get("sizes", {}).pop(size, None)
        data = {"world": world}
    blob = {**data, "role": role, "preset": src.preset, "pretrain": src.pretrain.key(), "recipe": RECIPE_VERSION}
    return f"{src.preset}-{role}-{_digest(blob)}"


def ensure_corpus(src: BaseModelSource, cache_dir: str) -> str:
    from leaml.data.endo_world import build_corpus

    # keyed as the teacher's: the directory holds the endo pool too
    out = storage.join(cache_dir, "corpus", corpus_key(src, "teacher"))
    if not storage.exists(storage.join(out, "corpus.json")):
        print(f"[base] building the pretraining corpus in {out}", flush=True)
        build_corpus(out, n_general=src.corpus.n_general, n_teacher_pool=src.corpus.n_teacher_pool,
                     description_mention_p=src.corpus.teacher_description_mention_p)
    return out


def ensure_sport_corpus(data_dir: str, cache_dir: str) -> str:
    """The sport base models' corpus directory in the cache (built once), or ``data_dir`` itself."""
    from leaml.data.world import build

    cfg = sport_corpus_config(data_dir)
    if cfg is None:
        return data_dir
    out = storage.join(cache_dir, "corpus", f"sport-{_digest(cfg.model_dump(mode='json'))}")
    if not storage.exists(storage.join(out, "world.json")):
        print(f"[base] building the sport base models' corpus in {out}", flush=True)
        build(cfg, out)
    return out


def ensure_base_model(data_dir: str, role: Role, src: BaseModelSource, cache_dir: str | None = None,
                      domain: Domain = "endo") -> str:
    """The checkpoint URI for ``role``: the given path, a shipped asset, the cache, or pretrained now.

    Pretraining runs in this process: the recipe's stages are short single-worker fits, where a
    Ray Train job would only add start-up."""
    from leaml.pretrain.assets import find_asset

    if src.path:
        return src.path
    if not src.preset:
        raise ValueError(f"{role}: set either path (a checkpoint) or preset (a tiny model to pretrain)")
    key = cache_key(data_dir, role, src, domain)
    if src.use_assets and domain == "endo" and (asset := find_asset(key)):
        print(f"[base] {role}: shipped asset {asset}", flush=True)
        return asset
    cache_dir = cache_dir or default_cache_dir()
    out = storage.join(cache_dir, "base", key)
    if storage.exists(storage.join(out, "leaml_model.json")):
        print(f"[base] {role}: reusing {out}", flush=True)
        return out
    corpus = ensure_corpus(src, cache_dir) if domain == "endo" else ensure_sport_corpus(data_dir, cache_dir)
    run_recipe(src.preset, role, corpus, out, src.pretrain, log=lambda m: print(m, flush=True))
    return out


def pretrain_base_models(cfg, roles: list[Role], release: bool = False) -> dict[str, str]:
    """``leaml model pretrain``: pretrain (or reuse from the cache) each role's base model of a
    pipeline config, ignoring shipped assets; ``release``: measure each on held-out media and
    write it into ``assets/base_models`` with its manifest entry. Returns {role: checkpoint}."""
    from leaml.pretrain.assets import release as release_asset
    from leaml.pretrain.quality import base_quality, summary

    if cfg.world.domain != "endo":
        raise ValueError("shipped base models exist for the endo world only; the sport world pretrains "
                         "its own at run time on a corpus of its own (world.domain: sport)")
    out = {}
    for role in roles:
        src = getattr(cfg, role).model_copy(update={"use_assets": False})
        out[role] = ensure_base_model("", role, src, cfg.cache_dir)
        if release:
            quality = base_quality(out[role], role)
            entry = release_asset(out[role], cache_key("", role, src), quality)
            print(f"[base] released {entry['key']}: {summary(quality)}", flush=True)
    return out
