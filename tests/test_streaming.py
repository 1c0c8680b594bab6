"""The one media stream: its rows (StreamItem), the UDF base (decode, error rows, isolation), model
targets, shard resume."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from leaml.records import Caption, MediaRef, StreamCounts, VQAExample
from leaml.streaming import (MAX_BLOCKS, SERVING_KNOBS, FakeTarget, ItemFailure, LocalTarget, MediaUDF, ModelTarget,
                             ReplicaSettings, StreamConfig, StreamItem, _num_blocks, actor_pool, connect_target,
                             read_errors, read_shards, run_sharded)


class Sizes:
    """A local 'model': describes each item by its first frame's size, times ``scale``."""

    def __init__(self, scale: int = 1):
        self.scale = scale

    def describe(self, media: list[list]) -> list[str]:
        return [f"{frames[0].size[0] * self.scale}x{frames[0].size[1] * self.scale}" for frames in media]


class Describe(MediaUDF):
    """A stream UDF: one record per item, the target's ``describe`` of its media."""

    batches = 0

    def build_local(self, cfg: dict) -> Sizes:
        return Sizes(**cfg)

    def process(self, items, media):
        Describe.batches += 1
        got = self.isolating(lambda idx: self.target.call("describe", [media[j] for j in idx]), len(items))
        return [g if isinstance(g, ItemFailure) else [Caption(media_id=it.media.id, text=g)]
                for it, g in zip(items, got)]


def media_items(root, n: int, thin=(), corrupt=()) -> list[StreamItem]:
    """``n`` images m000.. under ``root/media``: 8x6 pixels of their own colour, 3x5 for ``thin``
    ones, bytes that are not an image for ``corrupt`` ones."""
    (root / "media").mkdir(exist_ok=True)
    items = []
    for i in range(n):
        path = root / "media" / f"m{i:03d}.png"
        if i in corrupt:
            path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
        else:
            Image.new("RGB", (3, 5) if i in thin else (8, 6), (10 * i, 20, 30)).save(path)
        items.append(StreamItem(item_id=f"m{i:03d}", media=MediaRef(id=f"m{i:03d}", uri=f"media/m{i:03d}.png"),
                                media_root=str(root)))
    return items


def as_batch(items: list[StreamItem]) -> dict:
    rows = [it.to_row() for it in items]
    return {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]}


def test_a_refused_item_is_an_error_row_and_the_rest_of_its_batch_is_answered(tmp_path):
    items = media_items(tmp_path, 6, thin={2}, corrupt={4})
    out = Describe({"fake": {"refuse_sizes": [[3, 5]]}})(as_batch(items))
    errors, records = list(out["error"]), [json.loads(r) if r else None for r in out["records"]]
    assert errors[2].startswith("model: ValueError: fake model refuses frames of size [(3, 5)]")
    assert errors[4].startswith("MediaError")  # did not decode: the model never saw it
    assert [i for i, e in enumerate(errors) if not e] == [0, 1, 3, 5]
    assert all(records[i][0]["media_id"] == f"m{i:03d}" and records[i][0]["text"].startswith("describe:8x6:")
               for i in (0, 1, 3, 5))
    assert len({records[i][0]["text"] for i in (0, 1, 3, 5)}) == 4  # each item's own pixels
    assert list(out["item_id"]) == [it.item_id for it in items]  # input columns pass through

    counts = run_sharded(items, Describe, {"target": {"fake": {"refuse_sizes": [[3, 5]]}}}, str(tmp_path / "out"),
                         "describe", StreamConfig(batch_size=6, shard_size=3), engine="local")
    assert counts == StreamCounts(inputs=6, errors=2, records=4)
    assert sorted(e.media_id for e in read_errors(str(tmp_path / "out"))) == ["m002", "m004"]
    again = Describe({"fake": {"refuse_sizes": [[3, 5]]}})(as_batch(items))
    assert list(again["records"]) == list(out["records"])  # deterministic


def test_resume_skips_written_shards_and_a_new_plan_starts_over(tmp_path, capsys):
    items, out = media_items(tmp_path, 20), tmp_path / "out"
    cfg, kwargs = StreamConfig(batch_size=4, shard_size=4), {"target": {"fake": {}}}
    run_sharded(items, Describe, kwargs, str(out), "describe", cfg, engine="local", key={"model": "a"})
    first = read_shards(str(out))
    (out / "shard-00002.jsonl").unlink()  # as if killed before that shard was written
    Describe.batches = 0
    counts = run_sharded(items, Describe, kwargs, str(out), "describe", cfg, engine="local", key={"model": "a"})
    assert Describe.batches == 1 and counts == StreamCounts(inputs=20, errors=0, records=20)
    assert read_shards(str(out)) == first
    assert "[describe] 4 items in 1 shards to do (4 already written)" in capsys.readouterr().out
    Describe.batches = 0  # all written: nothing to stream, and the log says so
    run_sharded(items, Describe, kwargs, str(out), "describe", cfg, engine="local", key={"model": "a"})
    assert Describe.batches == 0
    assert "[describe] 0 items in 0 shards to do (5 already written)" in capsys.readouterr().out
    # other shard boundaries or another key: the written shards hold other rows, none is resumed
    for change in ({"cfg": StreamConfig(batch_size=4, shard_size=8)}, {"key": {"model": "b"}}):
        Describe.batches = 0
        run_sharded(items, Describe, kwargs, str(out), "describe", change.get("cfg", cfg), engine="local",
                    key=change.get("key", {"model": "a"}))
        assert Describe.batches == 5
        assert sorted(r["media_id"] for r in read_shards(str(out))) == [it.item_id for it in items]  # no duplicates


def test_local_and_fake_targets_behind_one_protocol(tmp_path):
    rows = media_items(tmp_path, 3)
    local = connect_target({"local": {"scale": 2}}, lambda cfg: Sizes(**cfg))
    fake = connect_target({"fake": {}}, lambda cfg: pytest.fail("a fake target builds no model"))
    assert isinstance(local, LocalTarget) and isinstance(fake, FakeTarget)
    assert isinstance(local, ModelTarget) and isinstance(fake, ModelTarget)
    frames = [[Image.new("RGB", (8, 6))]]
    assert local.call("describe", frames) == ["16x12"]
    assert fake.call("describe", frames) == fake.call("describe", frames) and fake.calls == 2
    for name, target in (("local", {"local": {"scale": 2}}), ("fake", {"fake": {}})):
        run_sharded(rows, Describe, {"target": target}, str(tmp_path / name), "describe", StreamConfig(),
                    engine="local")
    texts = {name: [r["text"] for r in read_shards(str(tmp_path / name))] for name in ("local", "fake")}
    assert texts["local"] == ["16x12"] * 3 and all(t.startswith("describe:8x6:") for t in texts["fake"])
    with pytest.raises(ValueError, match="serve / local / fake"):
        connect_target({"remote": {}}, Sizes)


def test_replica_settings_are_one_definition_for_both_deployments():
    from leaml.pipeline.captioner import CaptionerConfig
    from leaml.pipeline.qa_generator import QAGenConfig

    for cfg_cls in (CaptionerConfig, QAGenConfig):
        assert issubclass(cfg_cls, ReplicaSettings) and set(SERVING_KNOBS) <= cfg_cls.model_fields.keys()
        auto = cfg_cls(num_replicas="auto", replica_cpus=0.5).deployment_options()
        assert auto == {"ray_actor_options": {"num_cpus": 0.5, "num_gpus": 0.0}, "max_ongoing_requests": 4,
                        "autoscaling_config": {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 2}}
        assert cfg_cls(num_replicas=3).deployment_options()["num_replicas"] == 3


class Overlapping:
    """A 'model' that records how many of its calls ran at once."""

    def __init__(self, tag: str):
        import threading

        self.tag, self.running, self.most, self.lock = tag, 0, 0, threading.Lock()

    def caption(self, n: int) -> str:
        import time

        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.02)
        with self.lock:
            self.running -= 1
        return f"{self.tag}:{n}"

    def caption_twice(self, n: int) -> list[str]:
        return [self.caption(n), self.caption(n)]  # a served method calling another


def test_a_stream_deployment_runs_one_call_at_a_time_on_a_replica():
    from concurrent.futures import ThreadPoolExecutor

    from leaml.streaming import _one_at_a_time

    plain, serial = Overlapping("a"), _one_at_a_time(Overlapping, ["caption", "caption_twice"])("b")
    for model in (plain, serial):
        with ThreadPoolExecutor(4) as pool:  # as Serve's thread pool runs a replica's sync requests
            out = list(pool.map(model.caption, range(8)))
        assert out == [f"{model.tag}:{n}" for n in range(8)]
    assert plain.most > 1 and serial.most == 1  # the wrapper, not the test, made them wait
    assert type(serial).__name__ == "Overlapping" and isinstance(serial, Overlapping)
    assert serial.caption_twice(3) == ["b:3", "b:3"]  # re-entered from its own thread: no deadlock


def test_actors_wait_on_several_batches_only_when_the_model_is_behind_serve():
    cfg = StreamConfig(num_actors=2, calls_per_actor=3)  # default 1: see StreamConfig
    served = actor_pool(cfg, {"target": {"serve": {"app": "a", "deployment": "d"}}})
    assert (served.max_concurrent_calls_per_actor, served.enable_true_multi_threading) == (3, True)
    for target in ({"local": {}}, {"fake": {}}):  # the actor holds the model: one batch at a time
        held = actor_pool(cfg, {"target": target})
        assert (held.max_concurrent_calls_per_actor, held.enable_true_multi_threading) == (1, False)
    assert (served.min_size, served.max_size) == (1, 2)


@pytest.mark.parametrize("n_rows", [1, 15, 16, 17, 512, 3_200, 3_201, 1_000_000])
def test_a_ray_stream_cuts_its_rows_into_about_one_batch_per_block(n_rows):
    # from_items' own default gives a few hundred rows ~200 blocks of 2-3 rows each (see _num_blocks)
    blocks = _num_blocks(n_rows, 16)
    assert 1 <= blocks <= MAX_BLOCKS
    if n_rows <= 16 * MAX_BLOCKS:
        assert blocks == -(-n_rows // 16)  # one block per batch
    else:
        assert n_rows / blocks >= 16  # several batches per block, never 60,000 objects


# ---------------------------------------------------------------------------------------------
# Stream rows


def test_a_stream_item_travels_as_flat_columns_and_comes_back_whole():
    ref = MediaRef(id="m1", uri="media/m1.png", kind="video")
    ex = VQAExample(id="e1", media=ref, question="Is there a polyp?", options=["no", "yes"], answer="yes",
                    meta={"nested": {"free": [1, "form"]}})
    for item in (StreamItem(item_id="m1", media=ref, media_root="/data", report="a report"),
                 StreamItem(item_id="000000007", media=ref, idx=7, example=ex)):
        row = item.to_row()
        assert all(v is None or isinstance(v, (str, int)) for v in row.values())  # Arrow-friendly columns
        assert StreamItem.from_row(row) == item
        # as a batch hands it back: numpy scalars, plus the columns the stream adds
        batch_row = {k: np.str_(v) if isinstance(v, str) else np.int64(v) if isinstance(v, int) else v
                     for k, v in row.items()} | {"shard": np.int64(0), "records": "", "error": ""}
        assert StreamItem.from_row(batch_row) == item
        # Ray Data hands a column of nulls back as NaNs
        assert StreamItem.from_row({k: np.nan if v is None else v for k, v in row.items()}) == item


def test_a_bad_stream_row_is_an_error_naming_the_field():
    row = StreamItem(item_id="m1", media=MediaRef(id="m1", uri="media/m1.png")).to_row()
    with pytest.raises(ValidationError, match=r"media\.kind"):
        StreamItem.from_row(row | {"kind": "audio"})
    with pytest.raises(ValidationError, match="item_id"):
        StreamItem.from_row({k: v for k, v in row.items() if k != "item_id"})
    bad_example = json.dumps({"id": "e1", "media": {"id": "m1", "uri": "u"}, "question": "q?", "answer": 3})
    with pytest.raises(ValidationError, match=r"example\.answer"):
        StreamItem.from_row(row | {"example": bad_example})
