"""The synthetic world: determinism, schema, splits, and answers that follow from the pixels."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from leaml.data import synth_endo
from leaml.data import world as world_module
from leaml.data.synth_common import LOCATIONS, cell_of, options_by_template, rng_for
from leaml.data.synth_endo import TEMPLATES, EndoScene, noisy_caption
from leaml.data.endo_world import WorldConfig, build_world
from leaml.data.world import prior_only_accuracy, select_labeled
from leaml.records import Caption, MediaRef, VQAExample, load_records

SMALL = WorldConfig(seed=3, n_general=16, n_endo_train=60, n_endo_test=20, n_teacher_pool=12,
                    labeled_fraction=0.1)
CATEGORIES = {"colitis", "esophagitis", "instrument", "polyps", "normal"}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    build_world(SMALL, str(out), workers=1)
    return out


def _load(world: Path, name: str, model=VQAExample):
    return load_records(str(world / name), model)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_and_another_seed_differs(world, tmp_path):
    build_world(SMALL, str(tmp_path / "again"))
    assert _files(tmp_path / "again") == _files(world)

    other = SMALL.model_copy(update={"seed": 4})
    build_world(other, str(tmp_path / "other"))
    again, changed = _files(world), _files(tmp_path / "other")
    assert again["train.jsonl"] != changed["train.jsonl"]
    assert again["media/endo-train-00000.png"] != changed["media/endo-train-00000.png"]


def test_labeled_seed_redraws_only_the_labels_and_keeps_the_base_model_cache(world, tmp_path):
    from leaml.pipeline.base_models import BaseModelSource, cache_key

    src = BaseModelSource(preset="tiny-qwen2.5-vl")
    n_unlabeled = set()
    for seed in (7, 8, 9):  # some picks leave more images unlabeled than others
        relabeled = SMALL.model_copy(update={"labeled_seed": seed})
        build_world(relabeled, str(tmp_path / f"relabeled-{seed}"), workers=1)
        before, after = _files(world), _files(tmp_path / f"relabeled-{seed}")
        changed = {k for k in before if before[k] != after[k]}
        assert changed == {"labeled.jsonl", "unlabeled.jsonl", "world.json"}
        assert cache_key(str(world), "student", src) == cache_key(str(tmp_path / f"relabeled-{seed}"), "student", src)
        n_unlabeled.add(len(_load(tmp_path / f"relabeled-{seed}", "unlabeled.jsonl", MediaRef)))
    assert len(n_unlabeled | {len(_load(world, "unlabeled.jsonl", MediaRef))}) > 1
    assert cache_key(str(world), "student", src) != cache_key(str(world), "teacher", src)


def test_a_process_pool_writes_the_same_bytes(world, tmp_path, monkeypatch):
    monkeypatch.setattr(world_module, "POOL_MIN_ITEMS", 1)
    build_world(SMALL, str(tmp_path / "pooled"), workers=2)
    assert _files(tmp_path / "pooled") == _files(world)


def test_layout_and_world_json(world):
    for name in ("train.jsonl", "test.jsonl", "labeled.jsonl", "unlabeled.jsonl", "teacher_corpus.jsonl",
                 "world.json", "general/captions.jsonl", "general/qa.jsonl"):
        assert (world / name).is_file(), name
    meta = json.loads((world / "world.json").read_text())
    assert meta["seed"] == 3 and meta["config"]["n_endo_train"] == 60
    assert meta["sizes"]["train_qa"] == len(_load(world, "train.jsonl"))
    assert 0.0 <= meta["prior_only"]["mean_of_categories"] <= 1.0


def test_every_answer_is_an_option_and_options_are_all_answers_seen(world):
    examples = _load(world, "train.jsonl") + _load(world, "test.jsonl")
    seen = options_by_template((ex.template, ex.answer) for ex in examples)
    for ex in examples:
        assert ex.answer in ex.options
        assert ex.options == seen[ex.template]
        assert "Choose one" not in ex.question  # options travel in ex.options, not in the text
    general = _load(world, "general/qa.jsonl")
    assert all(ex.answer in ex.options and ex.category == "general" for ex in general)


def test_categories_templates_and_question_text(world):
    examples = _load(world, "train.jsonl") + _load(world, "test.jsonl")
    assert len(TEMPLATES) == 18
    assert {ex.category for ex in examples} <= CATEGORIES
    assert {ex.split for ex in _load(world, "test.jsonl")} == {"test"}
    for ex in examples:
        assert ex.question == TEMPLATES[ex.template].question
        assert ex.category == synth_endo.CATEGORY[ex.meta["scene"]["finding"]]
    per_image = Counter(ex.media.id for ex in examples)
    assert all(1 <= n <= SMALL.questions_per_image[1] for n in per_image.values())


def test_instrument_count_question_is_spelled_as_in_kvasir():
    assert TEMPLATES["n_instruments"].question == "How many instrumnets are in the image?"


def test_answers_follow_from_the_scene(world):
    """Every stored answer is what the template computes from the scene drawn for that image."""
    for ex in _load(world, "train.jsonl"):
        scene = EndoScene(**ex.meta["scene"])
        assert TEMPLATES[ex.template].answer(scene) == ex.answer
        if ex.template == "abnormality_location":
            assert ex.answer in LOCATIONS


def test_labeled_fraction_and_one_per_template(world):
    train, labeled = _load(world, "train.jsonl"), _load(world, "labeled.jsonl")
    assert len(labeled) == round(SMALL.labeled_fraction * len(train))
    train_ids = {ex.id for ex in train}
    assert {ex.id for ex in labeled} <= train_ids
    assert all(ex.source == "labeled" for ex in labeled)
    assert {ex.template for ex in labeled} == {ex.template for ex in train}


def test_labeled_pick_below_the_template_count_is_uniform_and_exact(world):
    train = _load(world, "train.jsonl")
    few = select_labeled(train, 3 / len(train), seed=0)
    assert len(few) == 3 and few == select_labeled(train, 3 / len(train), seed=0)


def test_unlabeled_is_train_media_without_labels(world):
    train, labeled = _load(world, "train.jsonl"), _load(world, "labeled.jsonl")
    unlabeled = _load(world, "unlabeled.jsonl", MediaRef)
    labeled_media = {ex.media.id for ex in labeled}
    unlabeled_ids = {m.id for m in unlabeled}
    assert not unlabeled_ids & labeled_media
    assert unlabeled_ids | labeled_media == {ex.media.id for ex in train}


def test_teacher_pool_is_disjoint_and_captioned(world):
    teacher = _load(world, "teacher_corpus.jsonl", Caption)
    assert len(teacher) == SMALL.n_teacher_pool
    used = {ex.media.id for ex in _load(world, "train.jsonl") + _load(world, "test.jsonl")}
    assert not {c.media_id for c in teacher} & used
    for c in teacher:
        assert c.text.endswith(".") and (world / c.meta["uri"]).is_file()


def test_relative_uris_load_at_the_configured_size(world):
    refs = [ex.media for ex in _load(world, "test.jsonl")] + [ex.media for ex in _load(world, "general/qa.jsonl")]
    for ref in refs:
        assert not Path(ref.uri).is_absolute()
        with Image.open(world / ref.uri) as img:
            assert img.size == (SMALL.image_size, SMALL.image_size) and img.mode == "RGB"


def test_artefact_answers_are_in_the_pixels(world):
    """The green box sits in the black lower-left corner, text in the black upper-left corner."""
    for ex in _load(world, "train.jsonl"):
        px = np.asarray(Image.open(world / ex.media.uri), dtype=int)
        if ex.template == "box_artefact":
            r, g, b = px[58, 4]
            assert (g > 100 and g > r + 40) == (ex.answer == "yes")
        if ex.template == "text":
            assert (px[1:8, 1:14].max() > 120) == (ex.answer == "yes")


def test_objects_lie_in_the_cell_they_are_answered_with():
    for i in range(200):
        scene = synth_endo.sample_scene(rng_for(0, f"x{i}", "scene"))
        for p in scene.polyps:
            assert np.hypot(p["x"] - 32, p["y"] - 32) + p["r"] <= synth_endo.VIEW_RADIUS
        if scene.polyps:
            main = scene.polyps[0]
            assert all(p["r"] < main["r"] for p in scene.polyps[1:])  # "the polyp" is the largest
            assert cell_of(main["x"], main["y"]) in LOCATIONS


def test_noisy_caption_mention_and_wrong_rates():
    scene = EndoScene(procedure="gastroscopy", finding="esophagitis",
                      lesion={"x": 32.0, "y": 32.0, "grade": "severe", "colour": "red", "angle": 0.0},
                      green_box=True, text="A12")
    attrs = asdict(scene)
    full = noisy_caption(attrs, np.random.default_rng(0), mention_p=1.0, wrong_p=0.0)
    assert full.startswith("gastroscopy view of severe red linear erosions consistent with oesophagitis in the center")
    assert "green box artefact" in full and "text overlay" in full
    assert noisy_caption(attrs, np.random.default_rng(0), mention_p=0.0, wrong_p=0.0) == "endoscopic view."
    wrong = [noisy_caption(attrs, np.random.default_rng(k), 1.0, 1.0) for k in range(20)]
    assert not any(w.startswith("gastroscopy") for w in wrong)


def test_prior_only_uses_the_train_majority_per_template():
    media = MediaRef(id="m", uri="m.png")
    def ex(i, template, answer, category, split="train"):
        return VQAExample(id=f"{split}{i}", media=media, question="q?", answer=answer, template=template,
                          category=category, split=split)
    train = [ex(0, "a", "yes", "polyps"), ex(1, "a", "yes", "polyps"), ex(2, "a", "no", "normal"),
             ex(3, "b", "2", "normal")]
    test = [ex(0, "a", "yes", "polyps", "test"), ex(1, "a", "no", "normal", "test"),
            ex(2, "b", "2", "normal", "test"), ex(3, "b", "3", "normal", "test")]
    acc = prior_only_accuracy(train, test)
    assert acc["per_category"] == {"normal": pytest.approx(1 / 3), "polyps": 1.0}
    assert acc["mean_of_categories"] == pytest.approx(2 / 3)
    assert acc["over_questions"] == pytest.approx(0.5)


def test_rng_and_config():
    assert rng_for(1, "a", "s").random() == rng_for(1, "a", "s").random()
    assert rng_for(1, "a", "s").random() != rng_for(1, "a", "t").random()
    with pytest.raises(ValidationError, match="n_endo_trian"):
        WorldConfig(n_endo_trian=5)
    with pytest.raises(ValidationError):
        WorldConfig(questions_per_image=(4, 2))
