"""``leaml data convert``: fake Kvasir-VQA / SPORTU downloads (tests/data/fakes.py) -> dataset dirs."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from leaml.cli import main
from leaml.data.convert import KvasirConvertConfig, SportuConvertConfig, convert_kvasir, convert_sportu
from leaml.data.dataset_dir import load_dataset_info
from leaml.data.sportu import SchemaError, load_sportu
from leaml.media import load_media
from leaml.records import ErrorRecord, MediaRef, VQAExample, load_records
from tests.data import fakes

HALVES = KvasirConvertConfig(train_fraction=0.5, test_fraction=0.5, labeled_fraction=0.1)


def _load(out: Path, name: str, model=VQAExample):
    return load_records(str(out / name), model)


@pytest.fixture(scope="module")
def kvasir_dir(tmp_path_factory) -> Path:
    """The fake hub download converted at the paper's proportions (the defaults)."""
    root = tmp_path_factory.mktemp("kvasir")
    src = fakes.write_kvasir(root / "download")
    convert_kvasir(KvasirConvertConfig(), str(src), str(root / "out"))
    return root / "out"


def test_kvasir_counts_reconcile_and_every_bad_row_has_its_reason(kvasir_dir):
    meta = json.loads((kvasir_dir / "dataset.json").read_text())
    c = meta["counts"]
    assert c["rows_in"] == fakes.KVASIR_ROWS == c["kept"] + c["errors"]
    assert c["errors_by_reason"] == {"bad_image": fakes.BAD_IMAGE_ROWS, "duplicate": fakes.BAD_DUPLICATE,
                                     "empty_answer": fakes.BAD_EMPTY, "pipe_in_answer": fakes.BAD_PIPE}
    assert c["kept"] == fakes.KVASIR_GOOD_ROWS == c["train_qa"] + c["test_qa"] + c["unused_qa"]
    errors = _load(kvasir_dir, "errors.jsonl", ErrorRecord)
    assert {e.media_id for e in errors if e.reason.startswith("bad_image")} == {fakes.BAD_IMAGE_ID}
    assert all(e.stage == "load_kvasir" and e.reason.split(":")[1].strip() for e in errors)


def test_kvasir_split_is_by_image_at_the_papers_proportions(kvasir_dir):
    train, test = _load(kvasir_dir, "train.jsonl"), _load(kvasir_dir, "test.jsonl")
    assert not {e.media.id for e in train} & {e.media.id for e in test}
    # 18,499 and 18,075 of 58,849 rows, each within one image's 5 questions
    assert abs(len(train) - 18_499 / 58_849 * fakes.KVASIR_ROWS) < 5
    assert abs(len(test) - 18_075 / 58_849 * fakes.KVASIR_ROWS) < 5
    assert {e.split for e in train} == {"train"} and {e.split for e in test} == {"test"}


def test_kvasir_media_written_once_per_used_image_and_loadable(kvasir_dir):
    train, test = _load(kvasir_dir, "train.jsonl"), _load(kvasir_dir, "test.jsonl")
    used = {e.media.id: e.media for e in train + test}
    assert sorted(p.stem for p in (kvasir_dir / "media").iterdir()) == sorted(used)  # left-over images removed
    for ref in used.values():
        assert ref.uri.startswith("media/") and load_media(ref, root=str(kvasir_dir))[0].size == (16, 12)


def test_kvasir_options_are_every_answer_of_the_question_and_multi_answers_stay_whole(kvasir_dir):
    examples = _load(kvasir_dir, "train.jsonl") + _load(kvasir_dir, "test.jsonl")
    abn = {e.answer for e in examples if e.template == "are there any abnormalities in the image"}
    opts = {tuple(e.options) for e in examples if e.template == "are there any abnormalities in the image"}
    assert len(opts) == 1  # one option list per question, whatever the split
    all_findings = set(fakes.FINDINGS)  # computed over both splits and the unused images
    assert abn <= set(next(iter(opts))) == all_findings
    assert "ulcerative colitis; oesophagitis; polyp" in next(iter(opts))  # one option, not three
    assert not any("|" in o for e in examples for o in e.options)


def test_kvasir_labeled_and_unlabeled_follow_the_world_rules(tmp_path):
    src = fakes.write_kvasir(tmp_path / "download")
    convert_kvasir(HALVES, str(src), str(tmp_path / "out"))
    out = tmp_path / "out"
    train, labeled = _load(out, "train.jsonl"), _load(out, "labeled.jsonl")
    unlabeled = _load(out, "unlabeled.jsonl", MediaRef)
    assert len(labeled) == round(0.1 * len(train)) and {e.source for e in labeled} == {"labeled"}
    assert {e.id for e in labeled} <= {e.id for e in train}
    assert {m.id for m in unlabeled} == {e.media.id for e in train} - {e.media.id for e in labeled}


def test_kvasir_save_to_disk_layout_converts_to_the_same_dataset(tmp_path, kvasir_dir):
    src = fakes.write_kvasir(tmp_path / "download", layout="save_to_disk")
    convert_kvasir(KvasirConvertConfig(), str(src), str(tmp_path / "out"))
    for name in ("train.jsonl", "test.jsonl", "labeled.jsonl", "unlabeled.jsonl"):
        assert (tmp_path / "out" / name).read_text() == (kvasir_dir / name).read_text()


def test_kvasir_datasets_cache_converts_without_its_map_copies(tmp_path, kvasir_dir):
    from datasets import load_dataset

    src = fakes.write_kvasir(tmp_path / "download")
    files = sorted(str(p) for p in (src / "data").glob("*.parquet"))
    ds = load_dataset("parquet", data_files={"raw": files}, cache_dir=str(tmp_path / "cache"))
    ds["raw"].map(lambda row: {"n": len(row["question"])})  # writes a cache-*.arrow copy of every row
    assert list((tmp_path / "cache").rglob("cache-*.arrow"))
    convert_kvasir(KvasirConvertConfig(), str(tmp_path / "cache"), str(tmp_path / "out"))
    assert json.loads((tmp_path / "out" / "dataset.json").read_text())["counts"]["rows_in"] == fakes.KVASIR_ROWS
    assert (tmp_path / "out" / "test.jsonl").read_text() == (kvasir_dir / "test.jsonl").read_text()


def test_kvasir_split_is_seeded(tmp_path):
    src = fakes.write_kvasir(tmp_path / "download")
    splits = []
    for seed in (0, 0, 1):
        out = tmp_path / f"out{len(splits)}"
        convert_kvasir(HALVES.model_copy(update={"seed": seed}), str(src), str(out))
        splits.append(sorted({e.media.id for e in _load(out, "test.jsonl")}))
    assert splits[0] == splits[1] != splits[2]


def test_kvasir_metadata_names_the_domain_and_the_papers_table(kvasir_dir):
    info = load_dataset_info(str(kvasir_dir))
    assert (info.domain, info.title) == ("kvasir", "Kvasir-VQA")
    assert info.average_over == ["colitis", "esophagitis", "instrument", "polyps"]
    assert info.paper["table"] == "Table 1" and info.paper["gap_closure"] == 0.49
    assert not (kvasir_dir / "world.json").exists()


def test_a_file_of_another_dataset_fails_naming_the_columns(tmp_path):
    from datasets import Dataset

    Dataset.from_dict({"text": ["a"], "label": [1]}).to_parquet(str(tmp_path / "x.parquet"))
    with pytest.raises(ValueError, match=r"lacks the columns \['image', 'question', 'answer', 'img_id'\]"):
        convert_kvasir(KvasirConvertConfig(), str(tmp_path / "x.parquet"), str(tmp_path / "out"))


def test_cli_prints_reconciled_counts_and_where_the_dataset_is(tmp_path, capsys):
    src = fakes.write_kvasir(tmp_path / "download")
    out = tmp_path / "out"
    assert main(["data", "convert", "kvasir", "--src", str(src), "--out", str(out),
                 "train_fraction=0.5", "test_fraction=0.5"]) == 0
    text = capsys.readouterr().out
    assert f"rows in {fakes.KVASIR_ROWS} = kept {fakes.KVASIR_GOOD_ROWS} + errors 6" in text
    assert f"[artifacts] dataset: {out}" in text
    assert main(["data", "convert", "kvasir", "--src", str(src), "--out", str(out), "train_fraction=0.9"]) == 2


# ---------------------------------------------------------------------------------------------
# SPORTU


@pytest.fixture(scope="module")
def sportu_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sportu")
    json_path, videos = fakes.write_sportu(root / "download")
    convert_sportu(SportuConvertConfig(labeled_fraction=0.1), str(json_path), str(root / "out"), str(videos))
    return root / "out"


def test_sportu_counts_reconcile_and_every_bad_entry_has_its_reason(sportu_dir):
    c = json.loads((sportu_dir / "dataset.json").read_text())["counts"]
    assert c["rows_in"] == len(fakes.sportu_entries()) == c["kept"] + c["errors"]
    assert c["kept"] == fakes.SPORTU_GOOD == c["train_qa"] + c["test_qa"]
    assert c["errors_by_reason"] == fakes.SPORTU_BAD


def test_sportu_split_keeps_every_angle_of_a_play_together(sportu_dir):
    train, test = _load(sportu_dir, "train.jsonl"), _load(sportu_dir, "test.jsonl")
    scenes = {"train": {e.meta["scene"] for e in train}, "test": {e.meta["scene"] for e in test}}
    assert not scenes["train"] & scenes["test"]
    assert len(scenes["train"] | scenes["test"]) == 6 and len(scenes["test"]) == 3
    both_angles = [e for e in train + test if e.meta["scene"] == "soccer_260"]
    assert {e.media.id for e in both_angles} == {"soccer_260_1", "soccer_260_2"}


def test_sportu_records_are_validated_normalised_and_their_clips_copied(sportu_dir):
    examples = _load(sportu_dir, "train.jsonl") + _load(sportu_dir, "test.jsonl")
    assert Counter(e.category for e in examples) == {"easy": 7, "medium": 7, "hard": 7}
    assert {e.meta["sport"] for e in examples} == {"soccer", "basketball", "volleyball", "tennis"}
    count = next(e for e in examples if e.question.startswith("How many"))
    assert count.options == ["2", "4", "6", "10"] and count.answer == "6"  # ints, a lower-case letter
    assert {len(e.options) for e in examples} == {2, 4}
    for e in examples:
        assert e.media.uri == f"media/{e.media.id}.mp4" and (sportu_dir / e.media.uri).is_file()
    assert len(load_media(examples[0].media, num_frames=2, root=str(sportu_dir))) == 2
    info = load_dataset_info(str(sportu_dir))
    assert (info.domain, info.average_over, info.paper["table"]) == ("sportu", ["easy", "medium", "hard"], "Table 2")


@pytest.mark.parametrize("doc, match", [
    ({"data": []}, r"expected a non-empty JSON list .*'difficulty level'.*got an object with keys \['data'\]"),
    ([], "expected a non-empty JSON list"),
    ([{"video": "a.mp4", "q": "?", "choices": ["x"], "label": 0}],
     r"no entry has all the fields \['id', 'question', 'options', 'answer', 'difficulty level'\].*\['choices'"),
])
def test_sportu_unknown_schema_fails_loudly_and_names_the_fields(tmp_path, doc, match):
    (tmp_path / "SportU_Video_mc.json").write_text(json.dumps(doc))
    with pytest.raises(SchemaError, match=match):
        load_sportu(str(tmp_path / "SportU_Video_mc.json"), str(tmp_path))
    with pytest.raises(SchemaError):
        convert_sportu(SportuConvertConfig(), str(tmp_path), str(tmp_path / "out"))


def test_sportu_cli_finds_the_json_in_a_directory(tmp_path, capsys):
    fakes.write_sportu(tmp_path / "download")
    out = tmp_path / "out"
    assert main(["data", "convert", "sportu", "--src", str(tmp_path / "download"), "--out", str(out),
                 "--videos", str(tmp_path / "download" / "videos"), "check_videos=false"]) == 0
    text = capsys.readouterr().out
    # without the decode check the broken clip is copied like the others: one error kind fewer
    assert f"rows in {len(fakes.sportu_entries())} = kept {fakes.SPORTU_GOOD + 1} + errors 4" in text
