"""The three task prompts, in one place: task -> the user text the model sees beside the media.

Short on purpose: the tiny models have few positions, and a production model needs no more than a
plain instruction. The chat template (``leaml.models.tokenizer``) wraps these with roles and media.
"""
from __future__ import annotations

from leaml.records import question_with_options

CAPTION = "Describe the image."
QAGEN = "Write a question and answer about the image."
VQA_SUFFIX = " Answer:"


def caption_prompt() -> str:
    """Captioning (teacher and the generator's L_C objective)."""
    return CAPTION


def qagen_prompt() -> str:
    """QA generation: the generator sees only the media, and writes ``<q>Q<q><a>A<a>``."""
    return QAGEN


def vqa_prompt(question: str, options: list[str]) -> str:
    """VQA: ``"Q Choose one of the following options: a|b| Answer:"`` (no options: ``"Q Answer:"``)."""
    return question_with_options(question, options) + VQA_SUFFIX
