"""SPORTU video multiple choice (``SportU_Video_mc.json`` + a video directory) -> VQAExamples.

Input: the JSON list ``[{id, question, options: {"A": .., "B": .., ...}, answer: "B",
"difficulty level": "easy"|"medium"|"hard"}, ...]`` and a directory (local or ``s3://``) holding
the clips, flat or in per-sport sub-folders, named by id with any of .mp4/.mov/.avi/.webm/.mkv.

Output: one :class:`VQAExample` per entry with a video ``MediaRef``: options in letter order
(integer values become strings), the answer letter resolved to its option text,
``category`` = difficulty, and ``meta`` = sport (the id without its trailing ``_<number>`` parts),
answer letter and the original id. The split is by video (:func:`split_by_media`).

An entry whose video is missing or whose options are unusable is not a crash: it is appended to
``errors`` as an :class:`ErrorRecord` (and counted in a log warning), so inputs = outputs + errors.
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
_TRAILING_NUMBERS = re.compile(r"(_\d+)+$")


def load_sportu(
    json_path: str,
    video_dir: str,
    *,
    test_fraction: float = 0.5,
    seed: int = 0,
    errors: list[ErrorRecord] | None = None,
) -> list[VQAExample]:
    """Read the MC file and index the videos; return split examples, report the rest to ``errors``."""
    entries = json.loads(storage.read_text(json_path))
    videos = index_videos(video_dir)
    errors = errors if errors is not None else []
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
    if len(errors) > before:
        log.warning("SPORTU: %d of %d entries skipped (see errors)", len(errors) - before, len(entries))
    return split_by_media(examples, test_fraction=test_fraction, seed=seed)


def sport_of(entry_id: str) -> str:
    """``"american_football_12_1"`` -> ``"american_football"``; ``"Basketball_85"`` -> ``"Basketball"``."""
    return _TRAILING_NUMBERS.sub("", entry_id) or entry_id


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
    letters = sorted(entry["options"])
    options = [_option_text(entry["options"][k]) for k in letters]
    letter = _answer_letter(entry["answer"], letters, options)
    difficulty = str(entry.get("difficulty level", entry.get("difficulty", "unknown"))).strip().lower()
    return VQAExample(
        id=example_id,
        media=MediaRef(id=video_id, uri=uri, kind="video"),
        question=str(entry["question"]).strip(),
        options=options,
        answer=options[letters.index(letter)],
        category=difficulty,
        meta={"dataset": "sportu", "sport": sport_of(entry_id), "answer_letter": letter,
              "sportu_id": entry_id},
    )


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
