"""leaml.storage on a local path and on S3 (a local moto server, see conftest.s3_bucket)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from leaml import storage
from leaml.records import MediaRef, VQAExample, load_records, save_records


def _examples() -> list[VQAExample]:
    return [
        VQAExample(id="e1", media=MediaRef(id="m1", uri="media/m1.png"), question="Polyp?",
                   options=["no", "yes"], answer="yes", category="polyps", meta={"k": [1, 2]}),
        VQAExample(id="e2", media=MediaRef(id="v1", uri="s3://b/v1.mp4", kind="video"),
                   question="Which foul?", options=["push foul", "kick foul"], answer="kick foul",
                   category="hard", split="test", template="foul"),
    ]


# ---------------------------------------------------------------------------------------------
# S3


def test_s3_bytes_round_trip_exists_and_remove(s3_bucket):
    uri = storage.join(s3_bucket, "run", "a.json")
    storage.write_bytes(uri, b'{"x": 1}')
    assert storage.read_bytes(uri) == b'{"x": 1}'
    assert storage.read_text(uri) == '{"x": 1}'
    assert storage.exists(uri)
    assert storage.exists(storage.join(s3_bucket, "run"))  # a prefix with files is a directory
    assert not storage.exists(storage.join(s3_bucket, "run", "a.js"))  # not a bare prefix match
    assert not storage.exists(storage.join(s3_bucket, "ru"))
    storage.remove(uri)
    assert not storage.exists(uri)
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(uri)


def test_s3_exists_is_not_fooled_by_a_longer_key(s3_bucket):
    storage.write_text(storage.join(s3_bucket, "train.jsonl"), "{}\n")
    assert storage.exists(storage.join(s3_bucket, "train.jsonl"))
    assert not storage.exists(storage.join(s3_bucket, "train.json"))
    assert not storage.exists(storage.join(s3_bucket, "train"))


def test_s3_list_files_is_recursive_sorted_and_scoped(s3_bucket):
    for key in ["d/b.txt", "d/a.txt", "d/sub/c.txt", "dx/other.txt"]:
        storage.write_text(storage.join(s3_bucket, key), key)
    listed = storage.list_files(storage.join(s3_bucket, "d"))
    assert listed == [f"{s3_bucket}/d/{k}" for k in ("a.txt", "b.txt", "sub/c.txt")]
    assert storage.list_files(storage.join(s3_bucket, "d") + "/") == listed
    assert storage.list_files(storage.join(s3_bucket, "nothing")) == []
    storage.remove(storage.join(s3_bucket, "d"))
    assert storage.list_files(s3_bucket) == [f"{s3_bucket}/dx/other.txt"]


def test_s3_upload_and_download_dir_keep_the_tree(s3_bucket, tmp_path):
    src = tmp_path / "src"
    (src / "media" / "deep").mkdir(parents=True)
    (src / "train.jsonl").write_text("t")
    (src / "media" / "a.png").write_bytes(b"\x89PNG")
    (src / "media" / "deep" / "b.bin").write_bytes(bytes(range(256)))
    prefix = storage.join(s3_bucket, "dataset")
    storage.upload_dir(src, prefix)
    assert storage.list_files(prefix) == [
        f"{prefix}/media/a.png", f"{prefix}/media/deep/b.bin", f"{prefix}/train.jsonl"]

    dest = storage.download_dir(prefix, tmp_path / "dest")
    assert _tree(dest) == _tree(src)
    cached = storage.local_path(prefix, cache_root=tmp_path / "cache")
    assert _tree(cached) == _tree(src)


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_records_round_trip_on_s3(s3_bucket, suffix):
    uri = storage.join(s3_bucket, f"run/examples.{suffix}")
    assert save_records(uri, _examples()) == 2
    assert load_records(uri, VQAExample) == _examples()


# ---------------------------------------------------------------------------------------------
# Local


def test_local_write_is_atomic_and_leaves_no_temp_files(tmp_path):
    uri = str(tmp_path / "out" / "a.txt")
    storage.write_text(uri, "one")
    storage.write_text(uri, "two")
    assert storage.read_text(uri) == "two"
    assert os.listdir(tmp_path / "out") == ["a.txt"]


def test_local_write_gives_the_umask_mode_not_0600(tmp_path):
    uri = tmp_path / "a.txt"
    storage.write_bytes(str(uri), b"x")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(uri.stat().st_mode) == 0o666 & ~mask


def test_failed_local_write_leaves_the_old_file_intact(tmp_path, monkeypatch):
    uri = tmp_path / "a.txt"
    storage.write_text(str(uri), "old")

    def broken_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(storage.os, "replace", broken_replace)
    with pytest.raises(OSError, match="simulated"):
        storage.write_text(str(uri), "new")
    assert uri.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_local_list_exists_remove(tmp_path):
    for rel in ["d/b.txt", "d/a.txt", "d/sub/c.txt", "d/.hidden"]:
        storage.write_text(str(tmp_path / rel), rel)
    assert storage.list_files(str(tmp_path / "d")) == [
        str(tmp_path / "d" / r) for r in ("a.txt", "b.txt", "sub/c.txt")]
    assert storage.list_files(str(tmp_path / "missing")) == []
    assert storage.exists(str(tmp_path / "d" / "a.txt"))
    storage.remove(str(tmp_path / "d"))
    assert not storage.exists(str(tmp_path / "d"))


def test_local_download_dir_keeps_nesting_with_an_unnormalised_path(tmp_path, monkeypatch):
    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "sub" / "c.txt").write_text("c")
    (tmp_path / "src" / "a.txt").write_text("a")
    monkeypatch.chdir(tmp_path)
    dest = storage.download_dir("./src/", tmp_path / "dest")  # Path() normalises "./src/" away
    assert _tree(dest) == _tree(tmp_path / "src")


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_records_round_trip_locally(tmp_path, suffix):
    uri = str(tmp_path / f"examples.{suffix}")
    save_records(uri, _examples())
    assert load_records(uri, VQAExample) == _examples()


def test_join():
    assert storage.join("s3://b/run/", "/media/", "a.png") == "s3://b/run/media/a.png"
    assert storage.join("/data", "media", "a.png") == str(Path("/data/media/a.png"))


def _tree(root: Path) -> dict[str, bytes]:
    root = Path(root)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(".")}  # dot-files: cache stamps


def test_download_refuses_a_key_that_leaves_the_target(s3_bucket, tmp_path):
    # S3 keys are plain strings: "dataset/../escape.txt" must not land beside the download dir
    bucket = s3_bucket.removeprefix("s3://")
    storage._s3_client().put_object(Bucket=bucket, Key="dataset/ok.txt", Body=b"ok")
    storage._s3_client().put_object(Bucket=bucket, Key="dataset/../escape.txt", Body=b"x")
    with pytest.raises(ValueError, match="leaves"):
        storage.download_dir(storage.join(s3_bucket, "dataset"), tmp_path / "dest" / "inner")
    assert not (tmp_path / "dest" / "escape.txt").exists()
