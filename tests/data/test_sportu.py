"""SPORTU loader on a small ``SportU_Video_mc.json`` and real mp4 clips the test writes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from leaml import media, storage
from leaml.data.sportu import find_video, load_sportu, sport_of
from leaml.records import ErrorRecord

FOUL = "What kind of foul does this video show?"
ENTRIES = [
    {"id": "soccer_1", "question": FOUL,
     "options": {"A": "elbow foul", "B": "offside foul", "C": "push foul", "D": "kick foul"},
     "answer": "C", "difficulty level": "hard"},
    {"id": "soccer_1", "question": "How many players fall down? ",
     "options": {"B": 2, "A": 1, "D": 4, "C": 3}, "answer": "B", "difficulty level": "easy"},
    {"id": "Basketball_85", "question": "Which team scores?",
     "options": {"A": "home", "B": "away", "C": "neither", "D": "both"}, "answer": "d",
     "difficulty level": "medium"},
    {"id": "american_football_12_1", "question": "What happens to the pass?",
     "options": {"A": "caught", "B": "dropped", "C": "intercepted", "D": "no pass"}, "answer": "B",
     "difficulty level": "hard"},
    {"id": "volleyball_3", "question": "Who serves?",  # its video is missing
     "options": {"A": "left", "B": "right", "C": "nobody", "D": "both"}, "answer": "A",
     "difficulty level": "easy"},
    {"id": "soccer_1", "question": "Is it offside?",  # no option E
     "options": {"A": "yes", "B": "no", "C": "maybe", "D": "unclear"}, "answer": "E",
     "difficulty level": "medium"},
    {"id": "soccer_1", "question": "Same options twice?",
     "options": {"A": "yes", "B": "yes", "C": "no", "D": "maybe"}, "answer": "C",
     "difficulty level": "medium"},
]


def _clip(path: Path, brightness: int) -> None:
    media.write_video(str(path), [np.full((32, 32, 3), brightness + 10 * i, np.uint8) for i in range(6)], fps=6)


@pytest.fixture
def sportu(tmp_path) -> tuple[Path, Path]:
    """The JSON file and a video dir: flat mp4s plus per-sport folders with other suffixes."""
    videos = tmp_path / "videos"
    (videos / "Basketball").mkdir(parents=True)
    (videos / "American_Football").mkdir()
    _clip(videos / "soccer_1.mp4", 0)
    _clip(videos / "Basketball" / "Basketball_85.mov", 100)  # an mp4 stream in a .mov name is valid
    _clip(videos / "American_Football" / "american_football_12.MP4", 150)
    (videos / "notes.txt").write_text("not a video")
    json_path = tmp_path / "SportU_Video_mc.json"
    json_path.write_text(json.dumps(ENTRIES))
    return json_path, videos


def _summary(examples):
    return [(e.id, e.media.id, Path(e.media.uri).name, e.media.kind, e.question, e.options, e.answer,
             e.category, e.meta) for e in examples]


def test_entries_become_the_expected_multiple_choice_examples(sportu):
    json_path, videos = sportu
    errors: list[ErrorRecord] = []
    examples = load_sportu(str(json_path), str(videos), errors=errors)
    assert _summary(examples) == [
        ("sportu/soccer_1/q0", "soccer_1", "soccer_1.mp4", "video", FOUL,
         ["elbow foul", "offside foul", "push foul", "kick foul"], "push foul", "hard",
         {"dataset": "sportu", "sport": "soccer", "scene": "soccer_1", "answer_letter": "C",
          "sportu_id": "soccer_1"}),
        ("sportu/soccer_1/q1", "soccer_1", "soccer_1.mp4", "video", "How many players fall down?",
         ["1", "2", "3", "4"], "2", "easy",
         {"dataset": "sportu", "sport": "soccer", "scene": "soccer_1", "answer_letter": "B",
          "sportu_id": "soccer_1"}),
        ("sportu/Basketball_85/q0", "Basketball_85", "Basketball_85.mov", "video", "Which team scores?",
         ["home", "away", "neither", "both"], "both", "medium",
         {"dataset": "sportu", "sport": "basketball", "scene": "basketball_85", "answer_letter": "D",
          "sportu_id": "Basketball_85"}),
        ("sportu/american_football_12_1/q0", "american_football_12", "american_football_12.MP4", "video",
         "What happens to the pass?", ["caught", "dropped", "intercepted", "no pass"], "dropped", "hard",
         {"dataset": "sportu", "sport": "american_football", "scene": "american_football_12",
          "answer_letter": "B", "sportu_id": "american_football_12_1"}),
    ]
    assert [(e.media_id, e.stage, e.reason.split(":")[0]) for e in errors] == [
        ("volleyball_3", "load_sportu", "missing"),
        ("soccer_1", "load_sportu", "invalid entry"),
        ("soccer_1", "load_sportu", "invalid entry"),
    ]
    assert "'E'" in errors[1].reason and "repeat" in errors[2].reason


def test_split_keeps_each_video_whole(sportu):
    json_path, videos = sportu
    examples = load_sportu(str(json_path), str(videos), test_fraction=0.5, seed=1)
    split_of = {}
    for e in examples:
        assert split_of.setdefault(e.media.id, e.split) == e.split
    assert sorted(split_of.values()) == ["test", "test", "train"]  # 3 videos x 0.5 rounds half up
    assert load_sportu(str(json_path), str(videos), test_fraction=0.5, seed=1) == examples


def test_the_referenced_clips_decode(sportu):
    json_path, videos = sportu
    by_video = {e.media.id: e.media for e in load_sportu(str(json_path), str(videos))}
    frames = media.load_media(by_video["Basketball_85"], num_frames=2)
    assert [round(float(np.asarray(f).mean()) / 10) for f in frames] == [10, 15]  # 100 and 150


def test_a_missing_video_dir_reports_every_entry(tmp_path, sportu):
    json_path, _ = sportu
    errors: list[ErrorRecord] = []
    with pytest.raises(ValueError, match="no usable SPORTU entry: all 7"):
        load_sportu(str(json_path), str(tmp_path / "nowhere"), errors=errors)
    assert len(errors) == len(ENTRIES)


def test_json_and_videos_on_s3(s3_bucket, sportu):
    json_path, videos = sportu
    storage.upload_dir(videos, storage.join(s3_bucket, "sportu/videos"))
    storage.write_bytes(storage.join(s3_bucket, "sportu/mc.json"), json_path.read_bytes())
    examples = load_sportu(storage.join(s3_bucket, "sportu/mc.json"), storage.join(s3_bucket, "sportu/videos"))
    assert examples[0].media.uri == f"{s3_bucket}/sportu/videos/soccer_1.mp4"
    assert len(examples) == 4


@pytest.mark.parametrize("entry_id, sport", [
    ("soccer_1", "soccer"), ("Basketball_85", "basketball"), ("american_football_12_1", "american_football"),
    ("ice_hockey_7", "ice_hockey"), ("badminton", "badminton"),
])
def test_sport_is_the_id_prefix(entry_id, sport):
    assert sport_of(entry_id) == sport


def test_find_video_prefers_exact_then_case_then_the_base_id():
    videos = {"soccer_1": "a/soccer_1.mp4", "Soccer_2": "a/Soccer_2.mp4", "soccer_3_1": "a/soccer_3_1.mp4"}
    assert find_video("soccer_1", videos) == ("soccer_1", "a/soccer_1.mp4")
    assert find_video("soccer_2", videos) == ("Soccer_2", "a/Soccer_2.mp4")
    assert find_video("soccer_1_4", videos) == ("soccer_1", "a/soccer_1.mp4")
    assert find_video("soccer_3_1", videos) == ("soccer_3_1", "a/soccer_3_1.mp4")
    assert find_video("soccer_9", videos) is None
