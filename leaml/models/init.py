"""A dataset directory + a tiny preset -> an untrained base checkpoint with a locally trained tokenizer.

The tokenizer is trained on every text the world's tasks use (prompts, general captions and QA,
the endo question templates and options, the teacher's caption corpus), the way a real VLM's
tokenizer already covers its domain's words. Nothing is downloaded.
"""
from __future__ import annotations

from typing import Iterator

from leaml import storage
from leaml.prompts import caption_prompt, qagen_prompt, vqa_prompt
from leaml.records import Caption, VQAExample, format_qa_target, load_records


def tokenizer_corpus(data_dir: str) -> Iterator[str]:
    """Texts for tokenizer training: the train split only (never the test split)."""
    yield from (caption_prompt(), qagen_prompt())
    for rel in ("general/qa.jsonl", "train.jsonl", "vocab.jsonl"):
        uri = storage.join(data_dir, rel)
        if storage.exists(uri):
            for ex in load_records(uri, VQAExample):
                yield vqa_prompt(ex.question, ex.options)
                yield format_qa_target(ex.question, ex.options, ex.answer)
    for rel in ("general/captions.jsonl", "teacher_corpus.jsonl"):
        uri = storage.join(data_dir, rel)
        if storage.exists(uri):
            yield from (c.text for c in load_records(uri, Caption))


def init_base_model(preset: str, data_dir: str, out: str, seed: int = 0) -> str:
    """Build ``preset`` at random init with a tokenizer trained on ``data_dir``; save to ``out``."""
    from leaml.models.builders import ModelSpec, build_model, save_model

    model, processor = build_model(ModelSpec(preset=preset), tokenizer_texts=list(tokenizer_corpus(data_dir)), seed=seed)
    save_model(model, processor, out)
    return out
