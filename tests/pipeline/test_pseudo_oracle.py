"""benchmarks/pseudo_oracle.py's pseudo sets: built from the pool's truth as each variant says."""

import pytest

from leaml.records import MediaRef, VQAExample
from tests.bench import benchmark_module

OPTIONS = ["yes", "no"]


@pytest.fixture(scope="module")
def bench():
    with benchmark_module("pseudo_oracle") as module:
        yield module


def pair(image: int, question: str, answer: str, source: str = "labeled") -> VQAExample:
    return VQAExample(id=f"{source}/{image}/{question}", media=MediaRef(id=f"img{image}", uri=f"media/{image}.png"),
                      question=question, options=OPTIONS, answer=answer, category="cat", source=source,
                      template=question)


def test_checkable_pairs_differ_from_their_truth_only_in_the_answer(bench):
    truth = [pair(i, q, "yes") for i in range(4) for q in ("a?", "b?")]
    kept = [pair(0, "a?", "yes", "pseudo"), pair(1, "a?", "no", "pseudo"), pair(9, "a?", "no", "pseudo")]
    sets, accuracy = bench.pseudo_sets(kept, truth)
    assert accuracy == 0.5  # img9 is not annotated: not checkable
    assert [(p.media.id, p.answer) for p in sets["generator, checkable"]] == [("img0", "yes"), ("img1", "no")]
    assert [(p.media.id, p.question, p.answer) for p in sets["truth, checkable"]] == [
        ("img0", "a?", "yes"), ("img1", "a?", "yes")]
    assert sets["none (labeled only)"] == [] and sets["generator, kept"] == kept
    assert len(sets["truth, generator's count"]) == len(kept)
    assert len(sets["truth, all"]) == len(truth)
    assert all(p.source == "pseudo" and p.category == "pseudo" and p.template is None for p in sets["truth, all"])


def test_degraded_truth_is_right_at_the_generators_rate(bench):
    truth = [pair(i, "a?", "yes") for i in range(2000)]
    kept = [pair(i, "a?", "yes" if i % 4 else "no", "pseudo") for i in range(100)]  # 75% right
    sets, accuracy = bench.pseudo_sets(kept, truth, seed=1)
    assert accuracy == 0.75
    right = sum(p.answer == "yes" for p in sets["truth, all, generator's accuracy"]) / len(truth)
    assert abs(right - 0.75) < 0.03
