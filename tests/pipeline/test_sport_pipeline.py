"""Video through every stage: the quick sport profile end to end on local Ray (Ray Data streaming
8-frame clips to the Serve captioner and QA generator, Ray Train on clips, batch evaluation), with
the report per difficulty. The numbers mean nothing at this size; the plumbing does."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from leaml.config import load_config
from leaml.pipeline.config import PipelineConfig
from leaml.records import Caption, MediaRef, VQAExample, load_records

SPORT_QUICK = Path(__file__).resolve().parents[2] / "ray_jobs" / "configs" / "sport_quick.yaml"


@pytest.fixture
def ray_local():
    import ray
    from ray import serve

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    serve.shutdown()
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(1800)
def test_sport_clips_flow_through_every_stage(ray_local, tmp_path, monkeypatch):
    from leaml.pipeline.graph import GENERATOR_ROWS, run_pipeline
    from leaml.streaming import read_errors

    monkeypatch.setenv("LEAML_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    cfg = load_config(PipelineConfig, str(SPORT_QUICK), [f"run_dir={run}"])
    paths = run_pipeline(cfg)

    unlabeled = load_records(str(run / "data" / "unlabeled.jsonl"), MediaRef)
    assert unlabeled and all(m.kind == "video" and m.uri.endswith(".mp4") for m in unlabeled)
    captions = load_records(str(run / "captions" / "captions.jsonl"), Caption)
    done = json.loads((run / "captions" / "_SUCCESS.json").read_text())
    assert done["decoding"]["num_frames"] == cfg.world.n_frames
    errors = {e.media_id for e in read_errors(str(run / "captions"))}
    assert {c.media_id for c in captions} | errors == {m.id for m in unlabeled}
    for variant in GENERATOR_ROWS:
        stats = json.loads((run / "pseudo_qa" / variant / "_SUCCESS.json").read_text())
        assert stats["candidates"] == cfg.qagen.n * (len(unlabeled) - stats.get("errors", 0))
        kept = load_records(str(run / "pseudo_qa" / variant / "pseudo_qa.jsonl"), VQAExample)
        assert all(ex.media.kind == "video" and ex.answer in ex.options for ex in kept)

    report = json.loads(Path(paths["json"]).read_text())
    assert report["title"] == "LEAML on the sport test split"
    for row in report["rows"]:
        assert set(row["scores"]["categories"]) == {"easy", "medium", "hard"}, row["row"]
