"""Fake Kvasir-VQA and SPORTU downloads in the real schemas, written the way users get them.

Kvasir-VQA: the ``datasets`` library's own parquet (hub layout ``data/raw-*.parquet``) or
``save_to_disk`` arrow, columns ``image`` ({bytes, path}), ``source``, ``question``, ``answer``,
``img_id``; every image on each of its rows. SPORTU: ``SportU_Video_mc.json`` plus tiny mp4 clips
named ``<id>.mp4`` in per-sport folders. Each holds one bad input of every kind the converters
must report (the ``BAD_*`` constants say how many rows each kind costs).
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

ABN = "Are there any abnormalities in the image? Check all that are present."
INSTR = "Are there any instruments in the image? Check all that are present."
N_INSTR = "How many instrumnets are in the image?"  # sic, as the data spells it
N_POLYP = "How many polyps are in the image?"
COLOR = "What color is the abnormality? If more than one separate with ;"

FINDINGS = ["polyp", "ulcerative colitis", "oesophagitis", "none", "barretts", "polyp; ulcerative colitis",
            "oesophagitis; polyp", "none", "polyp", "hemorrhoids", "ulcerative colitis; oesophagitis; polyp",
            "none", "polyp", "oesophagitis", "ulcerative colitis", "none"]
COLOURS = ["pink", "red", "pink; red", "white", "red; white", "pink; red; white"]
N_GOOD_IMAGES = len(FINDINGS)  # img00..img15, 5 questions each
INSTRUMENT_IMAGES = {3, 7, 11}  # they show a biopsy forceps: category "instrument"

# Bad rows, all on top of the good ones; an image's every row is bad when its image is.
BAD_IMAGE_ID, BAD_IMAGE_ROWS = "imgBAD", 3  # a truncated JPEG: sniffs as JPEG, does not decode
BAD_EMPTY = 1  # img00: an empty answer
BAD_PIPE = 1  # img01: an answer containing the option separator "|"
BAD_DUPLICATE = 1  # img02: its N_POLYP row again, same answer
KVASIR_GOOD_ROWS = 5 * N_GOOD_IMAGES
KVASIR_ROWS = KVASIR_GOOD_ROWS + BAD_IMAGE_ROWS + BAD_EMPTY + BAD_PIPE + BAD_DUPLICATE


def _image(i: int, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (40 + 13 * i, 200 - 9 * i, 90 + 5 * i)).save(buf, fmt)
    return buf.getvalue()


def kvasir_rows() -> list[dict]:
    """The raw rows, in the hub's column layout."""
    rows = []
    for i, finding in enumerate(FINDINGS):
        img = {"bytes": _image(i, "JPEG" if i % 2 else "PNG"), "path": f"img{i:02d}.jpg"}
        instrument = i in INSTRUMENT_IMAGES
        source = "kvasir-instrument" if instrument else "hyperkvasir"
        for q, a in ((ABN, finding), (INSTR, "biopsy forceps" if instrument else "none"),
                     (N_INSTR, "1" if instrument else "0"), (N_POLYP, str(finding.count("polyp"))),
                     (COLOR, COLOURS[i % len(COLOURS)] if finding != "none" else "none")):
            rows.append({"image": img, "source": source, "question": q, "answer": a, "img_id": f"img{i:02d}"})
    truncated = _image(99, "JPEG")[:60]
    rows += [{"image": {"bytes": truncated, "path": "imgBAD.jpg"}, "source": "hyperkvasir", "question": q,
              "answer": a, "img_id": BAD_IMAGE_ID} for q, a in ((ABN, "polyp"), (N_INSTR, "0"), (N_POLYP, "1"))]
    rows.append(dict(rows[0], question="Where in the image is the abnormality?", answer=""))
    rows.append(dict(rows[5], question="Where in the image is the abnormality?", answer="center|upper-left"))
    rows.append(dict(rows[13]))  # img02's N_POLYP row again
    return rows


def kvasir_dataset():
    from datasets import Dataset, Features, Image as ImageFeature, Value

    features = Features({"image": ImageFeature(), "source": Value("string"), "question": Value("string"),
                         "answer": Value("string"), "img_id": Value("string")})
    rows = kvasir_rows()
    return Dataset.from_dict({k: [r[k] for r in rows] for k in features}, features=features)


def write_kvasir(root: Path, layout: str = "hub") -> Path:
    """``hub``: ``<root>/data/raw-0000{0,1}-of-00002.parquet`` (two shards, as the hub splits them);
    ``save_to_disk``: a DatasetDict ``{raw: ...}`` saved with the library. Returns the --src path."""
    ds = kvasir_dataset()
    if layout == "hub":
        (root / "data").mkdir(parents=True)
        half = len(ds) // 2
        ds.select(range(half)).to_parquet(str(root / "data" / "raw-00000-of-00002.parquet"))
        ds.select(range(half, len(ds))).to_parquet(str(root / "data" / "raw-00001-of-00002.parquet"))
        return root
    from datasets import DatasetDict

    DatasetDict({"raw": ds}).save_to_disk(str(root / "saved"))
    return root / "saved"


# ---------------------------------------------------------------------------------------------
# SPORTU

FOUL = "What kind of foul does this video show?"


def _mc(entry_id: str, question: str, options: dict, answer: str, level: str) -> dict:
    return {"id": entry_id, "question": question, "options": options, "answer": answer, "difficulty level": level}


def sportu_entries() -> list[dict]:
    """Good entries over 6 scenes (soccer_260 filmed from two angles), then one bad entry of each kind."""
    good = []
    for scene, sport in (("soccer_260", "soccer"), ("Soccer_261", "soccer"), ("basketball_85", "basketball"),
                         ("Basketball_86", "basketball"), ("volleyball_3", "volleyball"), ("tennis_9", "tennis")):
        for clip in ([f"{scene}_1", f"{scene}_2"] if scene == "soccer_260" else [scene]):
            good += [
                _mc(clip, FOUL, {"A": "elbow foul", "B": "push foul", "C": "kick foul", "D": "no foul"}, "B", "hard"),
                _mc(clip, "How many players are on the court?", {"A": 2, "B": 4, "C": 6, "D": 10}, "c", "easy"),
                _mc(clip, f"Is this {sport}?", {"A": "yes", "B": "no"}, "A", "medium"),  # only A/B
            ]
    bad = [
        _mc("tennis_9", "Who serves?", {"A": "left", "B": "right"}, "E", "easy"),  # no option E
        _mc("tennis_9", "Who wins?", {"A": "left", "B": "right"}, "A", "expert"),  # no such level
        _mc("golf_1", "Is it a hole in one?", {"A": "yes", "B": "no"}, "A", "easy"),  # no clip
        _mc("hockey_5", "Is the puck in?", {"A": "yes", "B": "no"}, "B", "easy"),  # its clip does not decode
        {"id": "tennis_9", "question": "Missing level?", "options": {"A": "x", "B": "y"}, "answer": "A"},
    ]
    return good + bad


SPORTU_GOOD = 3 * 7
SPORTU_BAD = {"invalid entry": 2, "missing": 2, "bad_video": 1}


def write_sportu(root: Path) -> tuple[Path, Path]:
    """``<root>/SportU_Video_mc.json`` and ``<root>/videos/<Sport>/<id>.mp4``; returns both."""
    from leaml.media import write_video

    videos = root / "videos"
    for k, clip in enumerate(sorted({e["id"] for e in sportu_entries()} - {"golf_1", "hockey_5"})):
        folder = videos / clip.split("_")[0].capitalize()
        folder.mkdir(parents=True, exist_ok=True)
        write_video(str(folder / f"{clip}.mp4"),
                    [np.full((32, 32, 3), (20 * k + 8 * i) % 250, np.uint8) for i in range(6)], fps=6)
    (videos / "Hockey").mkdir()
    (videos / "Hockey" / "hockey_5.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    json_path = root / "SportU_Video_mc.json"
    json_path.write_text(json.dumps(sportu_entries()))
    return json_path, videos


def converted_kvasir(root: Path, **settings) -> Path:
    """The fake hub download converted into ``<root>/data`` (halves by default: every category in
    both splits' reach); returns the dataset directory."""
    from leaml.data.convert import KvasirConvertConfig, convert_kvasir

    cfg = KvasirConvertConfig(**({"train_fraction": 0.5, "test_fraction": 0.5, "labeled_fraction": 0.1} | settings))
    convert_kvasir(cfg, str(write_kvasir(root / "download")), str(root / "data"))
    return root / "data"
