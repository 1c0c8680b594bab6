"""What a base model reads, on media it never saw: (checkpoint, role) -> the manifest's quality figures.

- general VQA: option-likelihood accuracy on fresh general pictures (a corpus seed no pretraining
  used), beside the answer prior of the same questions;
- teacher only: its greedy captions of fresh endo pictures, scored against their scene attributes
  (:mod:`leaml.evaluate.captions`: fact recall, precision, distinct captions per image).
The downstream figures (fully supervised accuracy on a world's validation split, the method table)
are measured by ``benchmarks/`` and recorded in docs/CALIBRATION.md.
"""
from __future__ import annotations

import tempfile
from collections import Counter, defaultdict

from leaml import storage
from leaml.records import Caption, VQAExample, load_records

HELD_OUT_SEED_OFFSET = 1  # CORPUS_SEED + 1: pictures no base model was trained on


def base_quality(model_uri: str, role: str, n_images: int = 200, batch_size: int = 64) -> dict:
    from leaml.data.endo_world import CORPUS_SEED, build_corpus
    from leaml.models.builders import load_model

    model, processor = load_model(model_uri)
    with tempfile.TemporaryDirectory() as tmp:
        build_corpus(tmp, n_general=n_images, n_teacher_pool=n_images if role == "teacher" else 0,
                     seed=CORPUS_SEED + HELD_OUT_SEED_OFFSET, workers=1)
        out = {"held_out_images": n_images, **general_vqa(model, processor, tmp, batch_size)}
        if role == "teacher":
            out["captions"] = teacher_captions(model, processor, tmp, batch_size)
    return out


def general_vqa(model, processor, corpus_dir: str, batch_size: int) -> dict:
    from leaml.media import load_media
    from leaml.models.answer import score_options
    from leaml.prompts import vqa_prompt

    qa = load_records(storage.join(corpus_dir, "general/qa.jsonl"), VQAExample)
    media = [load_media(e.media, root=corpus_dir) for e in qa]
    probs = score_options(model, processor, media, [vqa_prompt(e.question, e.options) for e in qa],
                          [e.options for e in qa], batch_size=batch_size)
    hits: dict[str, list[bool]] = defaultdict(list)
    for e, p in zip(qa, probs):
        hits[e.template].append(e.options[max(range(len(p)), key=p.__getitem__)] == e.answer)
    majority = {t: Counter(e.answer for e in qa if e.template == t).most_common(1)[0][0] for t in hits}
    prior = sum(majority[e.template] == e.answer for e in qa) / len(qa)
    return {"general_vqa_accuracy": sum(sum(h) for h in hits.values()) / len(qa),
            "general_vqa_prior": prior,
            "general_vqa_per_template": {t: sum(h) / len(h) for t, h in sorted(hits.items())}}


def teacher_captions(model, processor, corpus_dir: str, batch_size: int) -> dict:
    from dataclasses import asdict

    from leaml.evaluate.captions import caption_quality
    from leaml.media import load_image
    from leaml.models.batching import generate
    from leaml.prompts import caption_prompt

    caps = load_records(storage.join(corpus_dir, "teacher_corpus.jsonl"), Caption)
    texts: list[str] = []
    for i in range(0, len(caps), batch_size):
        chunk = caps[i:i + batch_size]
        media = [[load_image(storage.join(corpus_dir, c.meta["uri"]))] for c in chunk]
        texts += [g[0] for g in generate(model, processor, media, [caption_prompt()] * len(chunk), max_new_tokens=48)]
    q = caption_quality(texts, [c.meta["scene"] for c in caps])
    return {**asdict(q), "examples": texts[:3]}


def summary(quality: dict) -> str:
    """One line of :func:`base_quality`'s figures."""
    parts = [f"general VQA {100 * quality['general_vqa_accuracy']:.1f}% (prior {100 * quality['general_vqa_prior']:.1f}%)"]
    if "captions" in quality:
        c = quality["captions"]
        parts.append(f"captions recall {c['recall']:.2f} precision {c['precision']:.2f} distinct {c['distinct']:.2f}")
    return ", ".join(parts)
