"""Caption quality on hand-made scenes: facts parsed from words, recall, precision, distinct share."""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest

from leaml.data import synth_endo as endo
from leaml.evaluate.captions import caption_facts, caption_quality, scene_facts

POLYP_SCENE = asdict(endo.EndoScene(
    procedure="colonoscopy", finding="polyp", green_box=True, text="",
    polyps=[{"x": 40.0, "y": 20.0, "r": 4.5, "size": "5-10mm", "paris": "paris is", "colour": "red", "angle": 0.0}]))
NORMAL_SCENE = asdict(endo.EndoScene(procedure="gastroscopy", finding="normal", landmark="pylorus",
                                     landmark_colour="pink", landmark_xy=[30.0, 30.0]))


def test_scene_facts_are_the_true_values():
    assert scene_facts(POLYP_SCENE) == {"procedure": "colonoscopy", "abnormality": "polyp", "box_artefact": "yes",
                                        "polyp_size": "5-10mm", "polyp_type": "paris is"}
    assert scene_facts(NORMAL_SCENE) == {"procedure": "gastroscopy", "abnormality": "none", "landmark": "pylorus"}


def test_caption_facts_read_both_phrasings():
    text = "colonoscopy view of a small red sessile (paris is) polyp in the upper right; green box artefact."
    assert caption_facts(text) == {"procedure": "colonoscopy", "abnormality": "polyp", "polyp_size": "5-10mm",
                                   "polyp_type": "paris is", "box_artefact": "yes"}
    assert caption_facts("gastroscopy view of normal-looking mucosa; the pylorus is visible.") == {
        "procedure": "gastroscopy", "abnormality": "none", "landmark": "pylorus"}


def test_quality_of_perfect_wrong_and_collapsed_captions():
    right = ["colonoscopy view of a small sessile polyp; green box artefact.",
             "gastroscopy view of normal-looking mucosa; the pylorus is visible."]
    q = caption_quality(right, [POLYP_SCENE, NORMAL_SCENE])
    assert (q.recall, q.precision, q.distinct) == (1.0, 1.0, 1.0)
    # one wrong fact of four stated; one of eight true facts missed
    half = ["gastroscopy view of a small sessile polyp.", right[1]]
    q = caption_quality(half, [POLYP_SCENE, NORMAL_SCENE])
    assert q.recall == pytest.approx(6 / 8) and q.precision == pytest.approx(6 / 7)
    collapsed = caption_quality(["endoscopic view."] * 2, [POLYP_SCENE, NORMAL_SCENE])
    assert collapsed.recall == 0.0 and collapsed.distinct == 0.5


def test_the_noisy_corpus_scores_near_its_noise_rates():
    # The teacher corpus itself: each fact mentioned with p=0.7 and then wrong with p=0.2, so its
    # recall is about 0.7 * 0.8 (measured 0.52) and its precision near 0.8 (measured 0.74: a wrong
    # value can name a thing that is not there, such as a landmark in a scene without one).
    scenes = [asdict(endo.sample_scene(np.random.default_rng(i))) for i in range(400)]
    texts = [endo.noisy_caption(s, np.random.default_rng(1000 + i)) for i, s in enumerate(scenes)]
    q = caption_quality(texts, scenes)
    assert 0.45 < q.recall < 0.65 and 0.65 < q.precision < 0.9 and q.distinct > 0.5
