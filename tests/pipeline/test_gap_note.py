"""The run report's gap-closure line: a ratio only when fully supervised beats full fine-tuning."""
from leaml.pipeline.graph import gap_note
from leaml.records import EvalRow, EvalScores


def rows(leaml: float, full: float, sup: float) -> list[EvalRow]:
    return [EvalRow(method=r, model=r, row=r, scores=EvalScores(categories={}, mean_of_categories=v, overall=v, n=0))
            for r, v in (("leaml", leaml), ("full", full), ("fully_supervised", sup))]


def test_closure_is_the_ratio_of_gaps():
    assert "+2.0 points" in gap_note(rows(0.42, 0.40, 0.44)) and "= 0.50" in gap_note(rows(0.42, 0.40, 0.44))


def test_closure_is_undefined_when_fully_supervised_does_not_beat_full():
    # (0.37 - 0.40) / (0.39 - 0.40) would print a "closure" of 3.0 for a method that lost 3 points
    note = gap_note(rows(0.37, 0.40, 0.39))
    assert "-3.0 points" in note and "n/a" in note and "3.00" not in note


def test_no_note_without_the_three_rows():
    assert gap_note(rows(0.4, 0.4, 0.4)[:2]) == ""
