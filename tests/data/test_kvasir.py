"""Kvasir-VQA loader on a small parquet written in the Hugging Face export's own format."""
from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from leaml import storage
from leaml.data.kvasir import image_category, load_kvasir, split_by_media, template_key
from leaml.records import VQAExample

ABN = "Are there any abnormalities in the image? Check all that are present."
INSTR = "Are there any instruments in the image? Check all that are present."
N_INSTR = "How many instrumnets are in the image?"  # sic, as the data spells it
N_POLYP = "How many polyps are in the image?"
COLOR = "What color is the abnormality? If more than one separate with ;"

# img_id -> (source, colour, format), then the QA rows: (img_id, question, answer as in the data)
IMAGES = {
    "imgA": ("hyperkvasir", (230, 120, 120), "PNG"),
    "imgB": ("hyperkvasir", (200, 40, 40), "JPEG"),
    "imgC": ("kvasir-instrument", (90, 90, 200), "JPEG"),
    "imgD": ("hyperkvasir", (240, 200, 200), "PNG"),
    "imgE": ("hyperkvasir", (120, 60, 40), "PNG"),
    "imgF": ("hyperkvasir", (60, 160, 60), "PNG"),
}
ROWS = [
    ("imgA", ABN, "polyp"),
    ("imgA", N_INSTR, "0"),
    ("imgA", INSTR, "none"),
    ("imgA", COLOR, "pink;red"),  # spacing differs from imgD's: still one option
    ("imgA", N_POLYP, "1"),
    ("imgA", "Is there a green/black box artifact?", "yes"),
    ("imgA", N_POLYP, "1"),  # an exact repeat row: one example
    ("imgB", ABN, "ulcerative colitis"),
    ("imgB", N_INSTR, "0"),
    ("imgB", COLOR, "red"),
    ("imgB", N_POLYP, "0"),
    ("imgC", ABN, "polyp"),
    ("imgC", N_INSTR, 2),  # a number in the data
    ("imgC", INSTR, "biopsy forceps;  metal clip"),
    ("imgC", N_POLYP, "10"),
    ("imgD", ABN, "oesophagitis"),
    ("imgD", COLOR, " pink ; red"),
    ("imgE", ABN, "none"),
    ("imgE", "Is there a green/black box artefact?", "no"),
    ("imgF", ABN, "hemorrhoids"),
]

OPTIONS = {
    ABN: ["hemorrhoids", "none", "oesophagitis", "polyp", "ulcerative colitis"],
    N_INSTR: ["0", "2"],
    INSTR: ["biopsy forceps; metal clip", "none"],
    COLOR: ["pink; red", "red"],
    N_POLYP: ["0", "1", "10"],  # natural order: 10 after 1
    "Is there a green/black box artifact?": ["no", "yes"],
    "Is there a green/black box artefact?": ["no", "yes"],
}
CATEGORY = {"imgA": "polyps", "imgB": "colitis", "imgC": "instrument", "imgD": "esophagitis",
            "imgE": "normal", "imgF": "other"}
ANSWER = {"pink;red": "pink; red", " pink ; red": "pink; red", 2: "2",
          "biopsy forceps;  metal clip": "biopsy forceps; metal clip"}


def _image_bytes(img_id: str) -> bytes:
    _, colour, fmt = IMAGES[img_id]
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), colour).save(buf, fmt)
    return buf.getvalue()


def _table(rows, path_only: set[str] = frozenset()) -> pa.Table:
    """HF's layout: ``image`` is a struct {bytes, path}, repeated on every row of the image."""
    def image(img_id):
        if img_id in path_only:
            return {"bytes": None, "path": f"images/{img_id}.jpg"}
        return {"bytes": _image_bytes(img_id), "path": f"{img_id}.jpg"}

    return pa.Table.from_pylist([
        {"image": image(i), "source": IMAGES[i][0], "question": q, "answer": str(a), "img_id": i}
        for i, q, a in rows
    ])


@pytest.fixture
def export(tmp_path) -> Path:
    """``<tmp>/export/data/0000{0,1}.parquet`` plus, for imgC, an image referenced by path."""
    data = tmp_path / "export" / "data"
    (data / "images").mkdir(parents=True)
    (data / "images" / "imgC.jpg").write_bytes(_image_bytes("imgC"))
    pq.write_table(_table(ROWS[:9], path_only={"imgC"}), data / "00000.parquet")
    pq.write_table(_table(ROWS[9:], path_only={"imgC"}), data / "00001.parquet")
    return data


def _expected() -> list[tuple]:
    seen, out = set(), []
    for img_id, q, a in ROWS:
        if (img_id, template_key(q)) in seen:
            continue
        seen.add((img_id, template_key(q)))
        out.append((img_id, q, OPTIONS[q], ANSWER.get(a, a), CATEGORY[img_id]))
    return out


def _summary(examples: list[VQAExample]) -> list[tuple]:
    return [(e.media.id, e.question, e.options, e.answer, e.category) for e in examples]


def test_multiple_choice_examples_are_exactly_as_the_paper_builds_them(export, tmp_path):
    examples = load_kvasir(str(export), str(tmp_path / "media"))
    assert _summary(examples) == _expected()
    first = examples[0]
    assert first.id == "kvasir/imgA/are-there-any-abnormalities-in-the-image"
    assert first.template == "are there any abnormalities in the image"
    assert first.media.kind == "image" and first.meta == {"dataset": "kvasir-vqa", "source": "hyperkvasir"}
    assert len({e.id for e in examples}) == len(examples)


def test_misspelled_question_keeps_its_text_and_joins_the_instrument_count_template(export, tmp_path):
    examples = load_kvasir(str(export), str(tmp_path / "media"))
    count = [e for e in examples if e.template == "how many instruments are in the image"]
    assert {e.question for e in count} == {N_INSTR}
    assert {e.media.id for e in count} == {"imgA", "imgB", "imgC"}
    box = [e for e in examples if "box" in e.question]
    assert {e.template for e in box} == {"is there a green/black box artefact"}


def test_images_are_written_once_each_with_a_sniffed_suffix(export, tmp_path):
    out = tmp_path / "media"
    examples = load_kvasir(str(export), str(out))
    files = sorted(p.name for p in out.iterdir())
    assert files == ["imgA.png", "imgB.jpg", "imgC.jpg", "imgD.png", "imgE.png", "imgF.png"]
    by_id = {e.media.id: e.media.uri for e in examples}
    assert by_id["imgC"] == str(out / "imgC.jpg")
    assert Path(by_id["imgA"]).read_bytes() == _image_bytes("imgA")
    assert Path(by_id["imgC"]).read_bytes() == _image_bytes("imgC")  # came from the path reference


def test_split_is_by_image_deterministic_and_order_free(export, tmp_path):
    examples = load_kvasir(str(export), str(tmp_path / "media"), test_fraction=0.5, seed=3)
    split_of = {}
    for e in examples:
        assert split_of.setdefault(e.media.id, e.split) == e.split  # no image in both splits
    assert sorted(split_of.values()).count("test") == 3
    again = split_by_media(list(reversed(examples)), test_fraction=0.5, seed=3)
    assert {e.media.id: e.split for e in again} == split_of
    other_seed = split_by_media(examples, test_fraction=0.5, seed=4)
    assert [e.split for e in split_by_media(examples, 0.0)] == ["train"] * len(examples)
    assert {e.split for e in split_by_media(examples, 1.0)} == {"test"}
    assert len(other_seed) == len(examples)
    with pytest.raises(ValueError, match="test_fraction"):
        split_by_media(examples, 1.5)


@pytest.mark.parametrize("arrow_format", [pa.ipc.new_stream, pa.ipc.new_file])  # save_to_disk: stream
def test_one_file_and_arrow_input_give_the_same_examples(tmp_path, arrow_format):
    pq.write_table(_table(ROWS), tmp_path / "all.parquet")
    from_parquet = load_kvasir(str(tmp_path / "all.parquet"), str(tmp_path / "m1"))
    with arrow_format(tmp_path / "all.arrow", _table(ROWS).schema) as writer:
        writer.write_table(_table(ROWS))
    from_arrow = load_kvasir(str(tmp_path / "all.arrow"), str(tmp_path / "m2"))
    assert _summary(from_parquet) == _summary(from_arrow) == _expected()


def test_export_and_media_on_s3(s3_bucket, tmp_path):
    buf = io.BytesIO()
    pq.write_table(_table(ROWS), buf)
    storage.write_bytes(storage.join(s3_bucket, "kvasir/data/00000.parquet"), buf.getvalue())
    examples = load_kvasir(storage.join(s3_bucket, "kvasir"), storage.join(s3_bucket, "ds/media"))
    assert _summary(examples) == _expected()
    assert storage.read_bytes(f"{s3_bucket}/ds/media/imgB.jpg") == _image_bytes("imgB")


def test_bad_inputs_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="no .parquet"):
        load_kvasir(str(tmp_path), str(tmp_path / "m"))
    rows = [{"image": {"bytes": b"not an image", "path": None}, "source": "", "question": ABN,
             "answer": "none", "img_id": "x"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "bad.parquet")
    errors = []
    reason = r"no usable Kvasir-VQA rows .*\(1 read, 1 bad; first: bad_image: image 'x'"
    with pytest.raises(ValueError, match=reason):
        load_kvasir(str(tmp_path / "bad.parquet"), str(tmp_path / "m"), errors=errors)
    assert [e.reason.split(":")[0] for e in errors] == ["bad_image"]


@pytest.mark.parametrize("question, key", [
    (N_INSTR, "how many instruments are in the image"),
    (ABN, "are there any abnormalities in the image"),
    (COLOR, "what color is the abnormality"),
    ("  Is there   text? ", "is there text"),
])
def test_template_key(question, key):
    assert template_key(question) == key


@pytest.mark.parametrize("source, answers, category", [
    ("kvasir-instrument", {}, "instrument"),
    ("", {"are there any instruments in the image": "metal clip"}, "instrument"),
    ("", {"how many instruments are in the image": "1"}, "instrument"),
    ("hyperkvasir", {"are there any abnormalities in the image": "ulcerative colitis; polyp"}, "colitis"),
    ("hyperkvasir", {"are there any abnormalities in the image": "oesophagitis"}, "esophagitis"),
    ("hyperkvasir", {"are there any abnormalities in the image": "polyp"}, "polyps"),
    ("hyperkvasir", {"are there any abnormalities in the image": "barretts"}, "other"),
    ("hyperkvasir", {"are there any abnormalities in the image": "none"}, "normal"),
    ("hyperkvasir", {}, "normal"),
])
def test_image_category_rule(source, answers, category):
    assert image_category(source, answers) == category
