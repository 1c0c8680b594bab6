"""Captioner and QA-generator deployments on local Ray Serve, fed by Ray Data, at tiny sizes."""
from __future__ import annotations

import shutil

import pytest

from leaml.pipeline import captioner, qa_generator
from leaml.streaming import StreamConfig, StreamItem, read_errors, read_shards, run_sharded
from leaml.records import MediaRef, StreamCounts, load_records

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def serve_local():
    import ray
    from ray import serve

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield serve
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def media_items(tiny_world, tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    shutil.copytree(f"{tiny_world}/media", root / "media")
    refs = load_records(f"{tiny_world}/unlabeled.jsonl", MediaRef)[:6]
    (root / "media" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a corrupt file
    rows = [StreamItem(item_id=r.id, media=r, media_root=str(root)) for r in refs]
    rows.append(StreamItem(item_id="broken", media=MediaRef(id="broken", uri="media/broken.png"), media_root=str(root)))
    return rows


STREAM = StreamConfig(batch_size=4, shard_size=4, actor_cpus=0.25)


def test_captioner_deployment_streams_and_is_deterministic(serve_local, tiny_base, media_items, tmp_path):
    serve = serve_local
    cfg = captioner.CaptionerConfig(model=tiny_base, max_new_tokens=8, replica_cpus=0.5)
    serve.run(captioner.build_captioner_app(cfg.model_dump()), name=captioner.APP_NAME, route_prefix=None)
    target = {"serve": {"app": captioner.APP_NAME, "deployment": captioner.DEPLOYMENT_NAME,
                        "decoding": cfg.decoding()}}
    outs = []
    for attempt in ("a", "b"):
        counts = run_sharded(media_items, captioner.CaptionRequester, {"target": target, "num_frames": 1},
                             str(tmp_path / attempt), "caption", STREAM, engine="ray")
        assert counts == StreamCounts(inputs=7, errors=1, records=6)
        outs.append({r["media_id"]: r["text"] for r in read_shards(str(tmp_path / attempt))})
    serve.delete(captioner.APP_NAME)
    assert outs[0] == outs[1] and len(outs[0]) == 6  # greedy: captioning twice gives the same text
    [err] = read_errors(str(tmp_path / "a"))
    assert err.media_id == "broken" and "MediaError" in err.reason


def test_qa_generator_deployment_keeps_provenance(serve_local, tiny_base, media_items, tmp_path):
    serve = serve_local
    cfg = qa_generator.QAGenConfig(model=tiny_base, n=2, max_new_tokens=12, replica_cpus=0.5, filter="none")
    serve.run(qa_generator.build_qa_generator_app(cfg.model_dump()), name=qa_generator.APP_NAME, route_prefix=None)
    target = {"serve": {"app": qa_generator.APP_NAME, "deployment": qa_generator.DEPLOYMENT_NAME}}
    counts = run_sharded(media_items, qa_generator.QARequester, {"target": target, "cfg": cfg.model_dump()},
                         str(tmp_path / "free"), "pseudo-qa", STREAM, engine="ray")
    # constrained decoding through the same deployment: every candidate a known question and option
    known = {"Is there text?": ["no", "yes"], "How many polyps are in the image?": ["0", "1", "2", "3"]}
    constrained = cfg.model_copy(update={"decoding": "constrained", "filter": "consistent"}).model_dump()
    run_sharded(media_items, qa_generator.QARequester, {"target": target, "cfg": constrained, "known_templates": known},
                str(tmp_path / "constrained"), "pseudo-qa", STREAM, engine="ray")
    serve.delete(qa_generator.APP_NAME)
    judged = read_shards(str(tmp_path / "constrained"))
    assert len(judged) == 6 * 2 and any(r["kept"] for r in judged)
    assert all(r["kept"] or r["reason"] == "duplicate" or r["reason"].startswith("filter:") for r in judged)
    rows = read_shards(str(tmp_path / "free"))
    assert counts.errors == 1 and len(rows) == 6 * 2  # n candidates per readable item
    assert {(r["media_id"], r["sample"]) for r in rows} == {(m.item_id, k) for m in media_items[:6] for k in (0, 1)}
    assert all(r["kept"] or r["reason"] for r in rows)  # an untrained generator: every drop says why
