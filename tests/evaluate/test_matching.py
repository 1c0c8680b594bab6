import pytest

from leaml.evaluate.matching import match_option, normalise, score_predictions
from leaml.records import MediaRef, VQAExample


def ex(i, answer, options, category):
    return VQAExample(id=f"q{i}", media=MediaRef(id=f"m{i}", uri=f"m{i}.png"), question="Q?",
                      options=options, answer=answer, category=category)


def test_normalise():
    assert normalise("  Yes.\n") == "yes"
    assert normalise('"Paris  IIa"') == "paris iia"


@pytest.mark.parametrize("gen,expected", [
    ("yes", "yes"),
    ("Yes.", "yes"),
    ("no, there is none", "no"),
    ("5-10mm", "5-10mm"),
    ("paris is", "paris is"),          # not "paris i..." prefix confusion
    ("paris isx", None),               # no word boundary -> no match
    ("maybe", None),
    ("", None),
])
def test_match_option(gen, expected):
    assert match_option(gen, ["yes", "no", "5-10mm", "paris is", "paris iia"]) == expected


def test_longest_prefix_wins():
    assert match_option("ulcerative colitis present", ["ulcerative", "ulcerative colitis"]) == "ulcerative colitis"


def test_score_predictions_hand_made():
    opts = ["yes", "no"]
    exs = [ex(0, "yes", opts, "polyps"), ex(1, "no", opts, "polyps"), ex(2, "yes", opts, "polyps"),
           ex(3, "no", opts, "colitis")]
    gens = ["yes", "yes", "garbage", "No"]
    s = score_predictions(exs, gens)
    assert s["categories"]["polyps"] == {"accuracy": pytest.approx(1 / 3), "n": 3}
    assert s["categories"]["colitis"] == {"accuracy": 1.0, "n": 1}
    assert s["mean_of_categories"] == pytest.approx((1 / 3 + 1.0) / 2)  # the paper's "Average"
    assert s["overall"] == pytest.approx(2 / 4)
    assert s["no_match_rate"] == pytest.approx(1 / 4)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError):
        score_predictions([ex(0, "yes", ["yes", "no"], "a")], [])
