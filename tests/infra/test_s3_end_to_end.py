"""The quick demo pipeline with every artifact under an ``s3://`` run dir on a local moto server,
then a resume after part of it is lost, as after a killed stage.

Run 1 writes the whole graph (dataset, base-model cache, captions, masks, generators, pseudo QA, VQA
models, evaluation rows, report) to S3 and nothing to local disk but the download cache. Then three
kinds of loss are simulated: a caption shard gone (a sharded stage killed mid-way), the VQA model
``full`` without its completion marker (killed while exporting) and its evaluation row gone. Run 2
must redo exactly the caption shard, ``vqa full`` (resuming from its last checkpoint on S3) and
``evaluate full``, skip every other stage, leave their artifacts untouched, and rewrite the report.

The engine is ``local`` (the same stages in-process): Ray adds nothing to what S3 storage exercises
and minutes on a 2-core machine.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from leaml import storage
from leaml.config import load_config
from leaml.pipeline.config import PipelineConfig
from leaml.pipeline.graph import Run, plan, run_pipeline

REPO = Path(__file__).resolve().parents[2]
DEMO_QUICK = REPO / "ray_jobs" / "configs" / "demo_quick.yaml"
LOCAL = ["engine=local"]
STAGE_LINE = re.compile(r"^\[stage\] (.+?): (starting|done already, skipping)$", re.MULTILINE)


def s3_meta(uri: str) -> tuple[str, object]:
    bucket, key = uri[len("s3://"):].split("/", 1)
    head = storage._s3_client().head_object(Bucket=bucket, Key=key)
    return head["ETag"], head["LastModified"]


def stage_lines(out: str) -> tuple[set[str], set[str]]:
    found = STAGE_LINE.findall(out)
    return {s for s, what in found if what == "starting"}, {s for s, what in found if what != "starting"}


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_demo_pipeline_on_s3_resumes_after_lost_outputs(s3_bucket, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LEAML_CACHE", str(tmp_path / "download-cache"))  # s3:// checkpoints land here
    monkeypatch.chdir(tmp_path)  # a stray relative write (say, to a local "s3:" directory) shows up here
    run_dir = f"{s3_bucket}/runs/quick"
    cfg = load_config(PipelineConfig, str(DEMO_QUICK),
                      [f"run_dir={run_dir}", f"cache_dir={s3_bucket}/cache", *LOCAL])
    stages = plan(Run(cfg))

    # --- run 1: everything on S3 ---------------------------------------------------------------
    paths = run_pipeline(cfg)
    started, skipped = stage_lines(capsys.readouterr().out)
    assert started == {s.name for s in stages} and not skipped
    assert all(p.startswith(run_dir + "/eval/report.") for p in paths.values()) and set(paths) >= {"json", "md"}
    files = [f[len(run_dir) + 1:] for f in storage.list_files(run_dir)]
    for prefix in ("config.yaml", "data/world.json", "data/labeled.jsonl", "data/media/", "models/student.json",
                   "captions/shard-", "captions/_SUCCESS.json", "masks/masks.safetensors", "masks/summary.json",
                   *(f"generators/{v}/model.safetensors" for v in ("baseline", "distill", "leaml")),
                   *(f"pseudo_qa/{v}/pseudo_qa.jsonl" for v in ("baseline", "distill", "leaml")),
                   *(f"vqa/{r}/leaml_model.json" for r in cfg.rows if not r.startswith("zero_shot")),
                   *(f"eval/rows/{r}.json" for r in cfg.rows), "eval/report.json", "eval/report.md",
                   "eval/report.png"):
        assert any(f.startswith(prefix) for f in files), f"{prefix} is not under {run_dir}"
    assert all(storage.exists(s.done_marker) and s.done_marker.startswith(s3_bucket) for s in stages)
    assert any(f.startswith(f"{s3_bucket}/cache/base/") for f in storage.list_files(f"{s3_bucket}/cache"))
    strays = [p for p in tmp_path.rglob("*") if p.is_file() and "download-cache" not in p.parts]
    assert strays == [], f"written to local disk instead of s3://: {strays[:5]}"
    assert [r["row"] for r in json.loads(storage.read_text(paths["json"]))["rows"]] == cfg.rows

    # --- lose part of three stages, as a kill would -------------------------------------------
    shards = sorted(f for f in storage.list_files(f"{run_dir}/captions")
                    if re.search(r"/captions/shard-\d+\.jsonl$", f))
    assert len(shards) >= 2, "the quick world should give several caption shards"
    lost_shard = shards[-1].rsplit("/", 1)[-1]
    for uri in (shards[-1], f"{run_dir}/captions/errors/{lost_shard}", f"{run_dir}/captions/_SUCCESS.json",
                f"{run_dir}/vqa/full/leaml_model.json", f"{run_dir}/eval/rows/full.json"):
        storage.remove(uri)
    kept = [f"{run_dir}/{k}" for k in ("generators/distill/leaml_model.json", "vqa/leaml/leaml_model.json",
                                        "eval/rows/leaml.json", "pseudo_qa/leaml/_SUCCESS.json", "masks/summary.json")]
    before = {uri: s3_meta(uri) for uri in kept}
    report_before = s3_meta(paths["json"])

    # --- run 2: only the lost work is redone --------------------------------------------------
    run_pipeline(cfg)
    out = capsys.readouterr().out
    started, skipped = stage_lines(out)
    assert started == {"caption", "vqa full", "evaluate full"}, out[-3000:]
    assert skipped == {s.name for s in stages} - started
    assert re.search(r"\[caption\] \d+ items in 1 shards to do \(\d+ already written\)", out)
    assert f"[train] resumed at step {cfg.vqa.max_steps}" in out  # from its last checkpoint on S3
    assert storage.exists(shards[-1]) and storage.exists(f"{run_dir}/vqa/full/leaml_model.json")
    assert storage.exists(f"{run_dir}/eval/rows/full.json")
    assert {uri: s3_meta(uri) for uri in kept} == before, "a finished stage was redone"
    etag, modified = s3_meta(paths["json"])
    assert modified >= report_before[1] and (etag, modified) != report_before, "the report was not rewritten"


def test_a_killed_checkpoint_download_is_not_taken_for_a_complete_one(s3_bucket, tmp_path, monkeypatch):
    """``storage.local_path`` caches an ``s3://`` prefix on local disk and reuses any non-empty
    directory only when its completion stamp matches the prefix's listing, so a pod killed
    mid-download (the cache on a surviving emptyDir) does not later load a partial checkpoint."""
    monkeypatch.setenv("LEAML_CACHE", str(tmp_path))
    uri = f"{s3_bucket}/runs/r/vqa/full"
    storage.write_text(f"{uri}/config.json", "{}")
    storage.write_text(f"{uri}/model.safetensors", "weights")
    storage.write_text(f"{uri}/leaml_model.json", "{}")
    bucket, key = uri[len("s3://"):].split("/", 1)
    partial = tmp_path / "s3" / bucket / key
    partial.mkdir(parents=True)
    (partial / "config.json").write_text("{}")  # the download died after the first file
    local = storage.local_path(uri)
    assert (local / "model.safetensors").exists() and (local / "leaml_model.json").exists()
