"""SPORTU video multiple choice (``SportU_Video_mc.json`` + a video directory) -> VQAExamples.

Input: the JSON list ``[{id, question, options: {"A": .., "B": .., ...}, answer: "B",
"difficulty level": "easy"|"medium"|"hard"}, ...]`` and a directory (local or ``s3://``) holding
the clips, flat or in per-sport sub-folders, named by id with any of .mp4/.mov/.avi/.webm/.mkv.

Output: one :class:`VQAExample` per entry with a video ``MediaRef``: options in letter order
(integer values become strings), the answer letter resolved to its option text,
``category`` = difficulty, and ``meta`` = sport (the id without its trailing ``_<number>`` parts,
lower case: the ids spell ``Basketball`` and ``basketball``), scene, answer letter and the original
id.

Every entry is validated (the fields below present, 2+ distinct non-empty options under single
letters, the answer one of them, the difficulty easy / medium / hard, the clip found). An entry that
fails is not a crash: it is appended to ``errors`` as an :class:`ErrorRecord` (and counted in a
log warning), so inputs = outputs + errors. A file in another schema (not a list of objects, or no
object with the expected fields) is a :class:`SchemaError` naming the fields it expected, and a load
that yields no example at all raises too: it never returns ``[]``.

Scenes: ``soccer_260_1`` and ``soccer_260_2`` are two camera angles of one play (:func:`scene_of`),
so the split is by scene (``meta.scene``), never by clip, or the test split would show plays
the model trained on.
"""
from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import PurePosixPath

from leaml import storage
from leaml.data.kvasir import split_by_media
from leaml.media import VIDEO_SUFFIXES
from leaml.records import ErrorRecord, MediaRef, VQAExample

log = logging.getLogger(__name__)

STAGE = "load_sportu"
FIELDS = ("id", "question", "options", "answer", "difficulty level")
LEVELS = ("easy", "medium", "hard")
PAPER = {"benchmark": "SPORTU", "table": "Table 2", "categories": list(LEVELS), "gap_closure": 0.34}
"""What the report compares a SPORTU run with: Table 2's three levels and the paper's gap closure."""
_TRAILING_NUMBERS = re.compile(r"(_\d+)+$")
_SCENE = re.compile(r"^(.*?_\d+)(?:_\d+)*$")


class SchemaError(ValueError):
    """The file is not in the SportU_Video_mc.json schema."""


def load_sportu(
    json_path: str,
    video_dir: str,
    *,
    test_fraction: float = 0.5,
    seed: int = 0,
    errors: list[ErrorRecord] | None = None,
) -> list[VQAExample]:
    """Read the MC file and index the videos; return examples split by scene, report the rest to
    ``errors``."""
    examples = read_examples(json_path, video_dir, errors if errors is not None else [])
    return split_by_media(examples, test_fraction=test_fraction, seed=seed, group=lambda e: e.meta["scene"])


def read_examples(json_path: str, video_dir: str, errors: list[ErrorRecord]) -> list[VQAExample]:
    """Every valid entry as an unsplit example; each invalid one appended to ``errors``."""
    entries = check_schema(json.loads(storage.read_text(json_path)), json_path)
    videos = index_videos(video_dir)
    before = len(errors)
    seen: Counter[str] = Counter()
    examples = []
    for entry in entries:
        entry_id = str(entry.get("id", "")) if isinstance(entry, dict) else ""
        seen[entry_id] += 1
        try:
            examples.append(_example(entry, f"sportu/{entry_id}/q{seen[entry_id] - 1}", videos))
        except (KeyError, ValueError, TypeError, AttributeError) as e:  # one bad entry, not the file
            errors.append(
                ErrorRecord(media_id=entry_id or "?", uri=video_dir, stage=STAGE, reason=_reason(e))
            )
    if not examples:
        raise ValueError(f"no usable SPORTU entry: all {len(entries)} in {json_path} failed "
                         f"(first: {errors[before].reason}); videos looked for under {video_dir} "
                         f"({len(videos)} found)")
    if len(errors) > before:
        log.warning("SPORTU: %d of %d entries skipped (see errors)", len(errors) - before, len(entries))
    return examples


def check_schema(data: object, source: str) -> list:
    """``data`` if it is a list of objects of which at least one has every field of :data:`FIELDS`;
    else a :class:`SchemaError` that names them and what the file holds instead."""
    if not isinstance(data, list) or not data:
        shape = f"an object with keys {sorted(data)[:10]}" if isinstance(data, dict) else type(data).__name__
        raise SchemaError(f"{source}: expected a non-empty JSON list of entries with the fields {list(FIELDS)} "
                          f"(SportU_Video_mc.json); got {shape}")
    if not any(isinstance(e, dict) and all(f in e for f in FIELDS) for e in data):
        first = sorted(data[0]) if isinstance(data[0], dict) else type(data[0]).__name__
        raise SchemaError(f"{source}: no entry has all the fields {list(FIELDS)} of SportU_Video_mc.json; "
                          f"the first entry has {first}")
    return data


def sport_of(entry_id: str) -> str:
    """``"american_football_12_1"`` -> ``"american_football"``; ``"Basketball_85"`` -> ``"basketball"``."""
    return (_TRAILING_NUMBERS.sub("", entry_id) or entry_id).lower()


def scene_of(entry_id: str) -> str:
    """The play a clip shows: ``"soccer_260_2"`` (angle 2) -> ``"soccer_260"``;
    ``"American_Football_12_1"`` -> ``"american_football_12"``; ``"Basketball_85"`` -> ``"basketball_85"``."""
    m = _SCENE.match(entry_id)
    return (m.group(1) if m else entry_id).lower()


def index_videos(video_dir: str) -> dict[str, str]:
    """file stem -> uri for every video under ``video_dir`` (recursive); the first path wins."""
    out: dict[str, str] = {}
    for uri in storage.list_files(video_dir):
        p = PurePosixPath(uri.replace("\\", "/"))
        if p.suffix.lower() in VIDEO_SUFFIXES:
            out.setdefault(p.stem, uri)
    return out


def find_video(entry_id: str, videos: dict[str, str]) -> tuple[str, str] | None:
    """(video id, uri) for an entry id: exact stem, then case-insensitive, then the id without a
    trailing question-variant number (``soccer_260_2`` -> ``soccer_260``)."""
    candidates = [entry_id]
    base = re.sub(r"_\d+$", "", entry_id)
    if base != entry_id and _TRAILING_NUMBERS.search(base):
        candidates.append(base)
    lower = {k.lower(): k for k in videos}
    for c in candidates:
        key = c if c in videos else lower.get(c.lower())
        if key is not None:
            return key, videos[key]
    return None


# ---------------------------------------------------------------------------------------------


def _example(entry: dict, example_id: str, videos: dict[str, str]) -> VQAExample:
    entry_id = str(entry["id"])
    found = find_video(entry_id, videos)
    if found is None:
        raise KeyError(f"no video named {entry_id}{{{','.join(VIDEO_SUFFIXES)}}}")
    video_id, uri = found
    letters = _letters(entry["options"])
    options = [_option_text(entry["options"][k]) for k in letters]
    letter = _answer_letter(entry["answer"], letters, options)
    difficulty = str(entry["difficulty level"]).strip().lower()
    if difficulty not in LEVELS:
        raise ValueError(f"difficulty level {entry['difficulty level']!r} is none of {list(LEVELS)}")
    return VQAExample(
        id=example_id,
        media=MediaRef(id=video_id, uri=uri, kind="video"),
        question=str(entry["question"]).strip(),
        options=options,
        answer=options[letters.index(letter)],
        category=difficulty,
        meta={"dataset": "sportu", "sport": sport_of(entry_id), "scene": scene_of(entry_id),
              "answer_letter": letter, "sportu_id": entry_id},
    )


def _letters(options: object) -> list[str]:
    if not isinstance(options, dict) or len(options) < 2:
        raise ValueError(f"options must be an object of 2+ lettered choices, got {options!r}")
    if any(not (isinstance(k, str) and len(k) == 1 and k.isalpha() and k.isupper()) for k in options):
        raise ValueError(f"option keys must be single capital letters, got {sorted(map(str, options))}")
    return sorted(options)


def _option_text(value: object) -> str:
    text = " ".join(str(value).split())
    if not text:
        raise ValueError("an option is empty")
    return text


def _answer_letter(answer: object, letters: list[str], options: list[str]) -> str:
    """The letter (``"B"``, ``"b"``, ``"B."``, ``"(B)"``), or, failing that, an option's text."""
    raw = str(answer).strip()
    letter = raw.strip("().: ").upper()
    if letter in letters:
        return letter
    text = " ".join(raw.split())
    if text in options:
        return letters[options.index(text)]
    raise ValueError(f"answer {raw!r} is neither an option letter {letters} nor an option's text")


def _reason(e: Exception) -> str:
    if isinstance(e, KeyError):
        return f"missing: {e.args[0]}"
    return f"invalid entry: {e}"
