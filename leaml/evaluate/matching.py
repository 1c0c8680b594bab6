"""Generated answer text -> one of the question's options (or None), and accuracy arithmetic.

Matching rule (documented in the report): normalise both sides (lower case, collapse whitespace,
strip surrounding punctuation and quotes); an exact match wins; otherwise, if the generation starts
with exactly one option followed by a word boundary (e.g. "yes, there is" -> "yes"), the longest
such option wins. Anything else is **no match** and counts as wrong: a model that does not answer
with an option has not answered the multiple-choice question.
"""
from __future__ import annotations

import re
from collections import defaultdict
from typing import Iterable, Sequence

from leaml.records import VQAExample

_PUNCT = " \t\n.,;:!?\"'`()[]{}"


def normalise(text: str) -> str:
    return " ".join(text.lower().split()).strip(_PUNCT)


def match_option(generated: str, options: Sequence[str]) -> str | None:
    g = normalise(generated)
    by_norm = {normalise(o): o for o in options}
    if g in by_norm:
        return by_norm[g]
    prefixed = [n for n in by_norm if n and re.match(re.escape(n) + r"(\W|$)", g)]
    if not prefixed:
        return None
    return by_norm[max(prefixed, key=len)]


def score_predictions(examples: Iterable[VQAExample], generations: Iterable[str]) -> dict:
    """Per-category accuracy, the mean of categories (the paper's "Average"), and overall.

    Returns ``{"categories": {cat: {"accuracy", "n"}}, "mean_of_categories", "overall", "n",
    "no_match_rate"}``; accuracies are fractions in [0, 1].
    """
    hits: dict[str, list[int]] = defaultdict(list)
    no_match = 0
    for ex, gen in zip(examples, generations, strict=True):
        picked = match_option(gen, ex.options) if ex.options else normalise(gen) or None
        no_match += picked is None
        correct = picked == ex.answer if ex.options else picked == normalise(ex.answer)
        hits[ex.category].append(int(correct))
    return summarise_hits(hits, no_match)


def summarise_hits(hits: dict[str, list[int]], no_match: int = 0) -> dict:
    cats = {c: {"accuracy": sum(v) / len(v), "n": len(v)} for c, v in sorted(hits.items()) if v}
    n = sum(c["n"] for c in cats.values())
    total = sum(sum(v) for v in hits.values())
    return {
        "categories": cats,
        "mean_of_categories": sum(c["accuracy"] for c in cats.values()) / len(cats) if cats else 0.0,
        "overall": total / n if n else 0.0,
        "n": n,
        "no_match_rate": no_match / n if n else 0.0,
    }
