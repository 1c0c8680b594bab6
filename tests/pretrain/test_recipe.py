"""The staged base-model recipe on a toy corpus: what each stage moves, what it records, and that
the base models do not depend on the downstream world's seed."""
from __future__ import annotations

import json

import pytest
import torch

from leaml.data.endo_world import CORPUS_SEED, WorldConfig, build_corpus, build_world
from leaml.models.builders import load_model
from leaml.pipeline.base_models import BaseModelSource, CorpusSettings, cache_key
from leaml.pretrain.recipe import PretrainSettings, StageSettings, TowerSettings, run_recipe, tower_corpus
from leaml.pretrain.tower import train_tower


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("corpus"))
    build_corpus(out, n_general=160, n_teacher_pool=40, workers=1)
    return out


def _params(model, part: str) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if part in n}


def test_corpus_is_fixed_and_disjoint_from_worlds(corpus, tmp_path):
    info = json.loads(open(f"{corpus}/corpus.json").read())
    assert info["seed"] == CORPUS_SEED and info["sizes"]["general_images"] == 160
    again = str(tmp_path / "again")
    build_corpus(again, n_general=160, n_teacher_pool=40, workers=1)
    for name in ("general/qa.jsonl", "teacher_corpus.jsonl", "vocab.jsonl"):
        assert open(f"{corpus}/{name}").read() == open(f"{again}/{name}").read(), name
    # the tokenizer-only endo QA covers every template's answers seen in the corpus pool
    assert sum(1 for _ in open(f"{corpus}/vocab.jsonl")) > 40


def test_tower_stage_learns_and_moves_only_the_vision_side(corpus, tiny_base):
    model, processor = load_model(tiny_base)
    lm_before, vis_before = _params(model, "language_model"), _params(model, "visual")
    images, scenes, heads = tower_corpus(corpus, "student")
    res = train_tower(model, processor, images, scenes, heads, steps=60, batch_size=32, lr=3e-3,
                      held_out=40, log=lambda m: None)
    assert res.held_out["background"] > 0.5  # 6 backgrounds: chance is 1/6
    assert all(torch.equal(p, _params(model, "language_model")[n]) for n, p in lm_before.items())
    assert any(not torch.equal(p, _params(model, "visual")[n]) for n, p in vis_before.items())


def test_teacher_tower_also_reads_its_noisy_endo_corpus(corpus):
    images, scenes, heads = tower_corpus(corpus, "teacher")
    assert len(images) == 200 and any(h.name == "endo/finding" for h in heads)
    general = [h for h in heads if h.name == "background"][0]
    endo = [s for s in scenes if "finding" in s]
    assert endo and all(general.read(s) == -1 for s in endo)  # a general head skips endo pictures


def test_recipe_stages_record_and_freeze(corpus, tmp_path):
    settings = PretrainSettings(tower=TowerSettings(steps=5, batch_size=16),
                                align=StageSettings(steps=3, batch_size=4, warmup_steps=1),
                                instruct=StageSettings(steps=2, batch_size=4, warmup_steps=1))
    out = str(tmp_path / "student")
    record = run_recipe("tiny-qwen2.5-vl", "student", corpus, out, settings, log=lambda m: None)
    assert set(record["stages"]) == {"tower", "align", "instruct"}
    assert json.loads(open(f"{out}/pretrain.json").read())["settings"] == settings.key()
    model, _ = load_model(out)
    assert not list(tmp_path.glob("student.*"))  # intermediate stages cleaned up


def test_align_stage_keeps_the_tower_blocks_fixed(corpus, tmp_path):
    from leaml.pretrain.recipe import _tower_blocks, _train_stage

    from leaml.models.init import init_base_model

    settings = PretrainSettings()
    init = str(tmp_path / "init")
    init_base_model("tiny-qwen2.5-vl", corpus, init)
    before, _ = load_model(init)
    freeze = _tower_blocks(init)
    _train_stage("align", "student", init, str(tmp_path / "aligned"), corpus,
                 StageSettings(steps=2, batch_size=2, warmup_steps=1), freeze, settings)
    after, _ = load_model(str(tmp_path / "aligned"))
    b, a = dict(before.named_parameters()), dict(after.named_parameters())
    frozen = [n for n in b if any(f in n for f in freeze)]
    assert frozen and all(torch.equal(b[n], a[n]) for n in frozen)
    assert any(not torch.equal(b[n], a[n]) for n in b if "merger" in n)  # the connector aligns
    assert any(not torch.equal(b[n], a[n]) for n in b if "language_model" in n)


def test_base_model_key_ignores_the_world_seed(tmp_path):
    src = BaseModelSource(preset="tiny-qwen2.5-vl", corpus=CorpusSettings(n_general=100, n_teacher_pool=10))
    keys = set()
    for seed in (0, 1):
        world = tmp_path / f"world-{seed}"
        build_world(WorldConfig(seed=seed, n_general=4, n_endo_train=8, n_endo_test=4, n_teacher_pool=2), str(world))
        keys.add(cache_key(str(world), "student", src))
    assert len(keys) == 1
    assert cache_key("", "teacher", src) not in keys
    other = src.model_copy(update={"pretrain": PretrainSettings(tower=TowerSettings(steps=1))})
    assert cache_key("", "student", other) not in keys


def test_sport_base_models_ignore_the_world_seed(tmp_path):
    """The sport base models learn from a sport corpus of their own: the world's media settings with
    the fixed corpus seed, so a new seed reuses them and a new frame size does not; its tokenizer
    texts hold the sport words (the endo corpus's do not)."""
    from leaml.data.sport_world import SportWorldConfig, build_sport_world
    from leaml.models.init import tokenizer_corpus
    from leaml.pipeline.base_models import ensure_sport_corpus, sport_corpus_config

    src = BaseModelSource(preset="tiny-qwen2.5-vl")
    worlds = []
    for seed, size in ((0, 64), (1, 64), (0, 96)):
        worlds.append(tmp_path / f"sport-{seed}-{size}")
        build_sport_world(SportWorldConfig(seed=seed, n_train=4, n_test=2, n_teacher_pool=2, n_general=4,
                                           frame_size=size), str(worlds[-1]), workers=1)
    for role in ("student", "teacher"):
        keys = [cache_key(str(w), role, src, domain="sport") for w in worlds]
        assert keys[0] == keys[1] != keys[2]
        assert cache_key("", role, src) not in keys  # the endo models have seen endo, not sport
    corpus = sport_corpus_config(str(worlds[1]))
    assert corpus.seed == CORPUS_SEED and (corpus.n_teacher_pool, corpus.n_general) == (2, 4)
    out = ensure_sport_corpus(str(worlds[1]), str(tmp_path / "cache"))
    assert ensure_sport_corpus(str(worlds[0]), str(tmp_path / "cache")) == out
    assert json.loads(open(f"{out}/world.json").read())["seed"] == CORPUS_SEED
    assert "What is the outcome of the pass?" in "\n".join(tokenizer_corpus(out))


def test_a_new_endo_rendering_retrains_the_teacher_only(monkeypatch):
    """The teacher learns from endo pictures, the student from general ones alone."""
    from leaml.data import synth_endo

    src = BaseModelSource(preset="tiny-qwen2.5-vl")
    before = {role: cache_key("", role, src) for role in ("student", "teacher")}
    monkeypatch.setattr(synth_endo, "RENDER_VERSION", synth_endo.RENDER_VERSION + 1)
    assert cache_key("", "student", src) == before["student"]
    assert cache_key("", "teacher", src) != before["teacher"]


def test_the_teacher_descriptions_retrain_the_teacher_only(tmp_path):
    """How fully the teacher learned to describe its pool is the teacher's knowledge: it enters the
    teacher's key and corpus, and leaves the student's key and tokenizer texts as they were."""
    from leaml.evaluate.captions import caption_quality
    from leaml.models.init import tokenizer_corpus
    from leaml.pipeline.base_models import ensure_corpus
    from leaml.pretrain.recipe import pretrain_data

    src = BaseModelSource(preset="tiny-qwen2.5-vl", corpus=CorpusSettings(n_general=2, n_teacher_pool=40))
    alt_text = src.model_copy(update={"corpus": src.corpus.model_copy(update={"teacher_description_mention_p": None})})
    assert cache_key("", "student", src) == cache_key("", "student", alt_text)
    assert cache_key("", "teacher", src) != cache_key("", "teacher", alt_text)
    dirs = [ensure_corpus(s, str(tmp_path)) for s in (src, alt_text)]
    assert dirs[0] != dirs[1]
    assert list(tokenizer_corpus(dirs[0])) == list(tokenizer_corpus(dirs[1]))
    taught = [next(d for d in pretrain_data(c, "teacher") if d.uri.startswith(f"{c}/teacher")).uri for c in dirs]
    assert taught == [f"{dirs[0]}/teacher_descriptions.jsonl", f"{dirs[1]}/teacher_corpus.jsonl"]
    described, alt = ([json.loads(line) for line in open(t)] for t in taught)
    assert [c["media_id"] for c in described] == [c["media_id"] for c in alt]
    recall = [caption_quality([c["text"] for c in caps], [c["meta"]["scene"] for c in caps]).recall
              for caps in (described, alt)]
    assert recall[0] > recall[1] + 0.1  # the same pictures, described more fully
