"""Caption quality against the truth: (caption text, endo scene attributes) -> recall, precision.

The teacher's captions are what distillation feeds the generator, so "informative but imperfect"
must be a number: a fact is a (attribute, value) pair a caption can state (procedure, abnormality,
polyp size and type, landmark, instrument, box artefact, text overlay); the scene's facts are the
true ones, the caption's are the ones its words state. Recall: the share of the scene's facts the
caption states correctly; precision: the share of stated facts that are true; distinct: distinct
captions per image (a collapsed captioner writes one sentence for all: 1 / n).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from leaml.data import synth_endo as endo

_ABNORMALITY_WORDS = {"polyp": "polyp", "oesophagitis": "oesophagitis", "ulcerative colitis": "ulcerative colitis",
                      "normal-looking mucosa": "none"}


def scene_facts(scene: dict) -> dict[str, str]:
    """The facts a caption of this scene (``asdict(EndoScene)``) can state, with their true values."""
    s = endo.EndoScene(**scene)
    facts = {"procedure": s.procedure, "abnormality": endo._abnormality(s)}
    if s.green_box:  # artefacts count when present: a caption that omits one states nothing
        facts["box_artefact"] = "yes"
    if s.text:
        facts["text"] = "yes"
    if s.polyps:
        facts |= {"polyp_size": s.polyps[0]["size"], "polyp_type": s.polyps[0]["paris"]}
    if s.landmark != "none":
        facts["landmark"] = s.landmark
    if s.instrument != "none":
        facts["instrument"] = s.instrument
    return facts


def caption_facts(text: str) -> dict[str, str]:
    """The facts a caption's words state (the phrasing of the teacher corpus; unknown words state
    nothing). Box artefact and text overlay are stated only as present, by their phrase."""
    t = text.lower()
    facts: dict[str, str] = {}
    for proc in endo.PROCEDURES:
        if f"{proc} view" in t:
            facts["procedure"] = proc
    found = [v for w, v in _ABNORMALITY_WORDS.items() if w in t]
    if found:
        facts["abnormality"] = found[0]
    sizes = [s for s in endo.SIZES if s in t] + [s for s, w in endo._SIZE_WORDS.items() if f"{w} " in t]
    if sizes:
        facts["polyp_size"] = sizes[0]
    kinds = [p for p in endo.PARIS if f"({p})" in t] + [p for p, w in endo._PARIS_WORDS.items() if w in t]
    if kinds:
        facts["polyp_type"] = kinds[0]
    for lm in endo.LANDMARKS:
        if f"{lm} is visible" in t:
            facts["landmark"] = lm
    for inst in endo.INSTRUMENTS:
        if inst in t:
            facts["instrument"] = inst
    if "green box artefact" in t:
        facts["box_artefact"] = "yes"
    if "text overlay" in t:
        facts["text"] = "yes"
    return facts


@dataclass
class CaptionQuality:
    recall: float
    precision: float
    distinct: float
    per_fact_recall: dict[str, float]
    n: int


def caption_quality(captions: list[str], scenes: list[dict]) -> CaptionQuality:
    """Recall, precision and distinct share of ``captions`` against their ``scenes``."""
    if len(captions) != len(scenes) or not captions:
        raise ValueError(f"{len(captions)} captions for {len(scenes)} scenes")
    hit, true_n, stated_n, right_n = Counter(), Counter(), 0, 0
    for text, scene in zip(captions, scenes):
        truth, said = scene_facts(scene), caption_facts(text)
        for k, v in truth.items():
            true_n[k] += 1
            hit[k] += said.get(k) == v
        stated_n += len(said)
        right_n += sum(truth.get(k) == v for k, v in said.items())
    return CaptionQuality(recall=sum(hit.values()) / sum(true_n.values()),
                          precision=right_n / max(1, stated_n),
                          distinct=len(set(captions)) / len(captions),
                          per_fact_recall={k: hit[k] / true_n[k] for k in sorted(true_n)}, n=len(captions))
