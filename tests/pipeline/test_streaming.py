"""Sharded streaming: errors accounted per item, resume after a crash without duplicates."""
from __future__ import annotations

import json

import numpy as np
import pytest

from leaml.records import MediaRef, StreamCounts
from leaml.streaming import StreamConfig, StreamItem, read_errors, read_shards, run_sharded, stage_counts


class EchoUDF:
    """Echoes the item id; items whose report says so fail; can crash the whole stream once."""

    calls = 0

    def __init__(self, crash_after_batches: int | None = None):
        self.crash_after = crash_after_batches

    def __call__(self, batch):
        EchoUDF.calls += 1
        if self.crash_after is not None and EchoUDF.calls > self.crash_after:
            raise RuntimeError("simulated crash mid-stage")
        bad = [p == "corrupt" for p in batch["report"]]
        records = [("" if b else json.dumps([{"id": str(i)}])) for i, b in zip(batch["item_id"], bad)]
        errors = [("MediaError: truncated file" if b else "") for b in bad]
        return {**batch, "records": np.array(records, dtype=object), "error": np.array(errors, dtype=object)}


def items(n, corrupt=()) -> list[StreamItem]:
    return [StreamItem(item_id=f"m{i:03d}", media=MediaRef(id=f"m{i:03d}", uri=f"media/m{i:03d}.png"),
                       report="corrupt" if i in corrupt else "ok") for i in range(n)]


CFG = StreamConfig(batch_size=4, shard_size=8)


def test_inputs_equal_outputs_plus_errors(tmp_path):
    counts = run_sharded(items(21, corrupt={3, 17}), EchoUDF, {}, str(tmp_path), "caption", CFG, engine="local")
    assert counts == StreamCounts(inputs=21, errors=2, records=19)
    errs = read_errors(str(tmp_path))
    assert sorted(e.media_id for e in errs) == ["m003", "m017"]
    assert all(e.reason == "MediaError: truncated file" and e.stage == "caption" for e in errs)
    assert sorted(r["id"] for r in read_shards(str(tmp_path))) == [f"m{i:03d}" for i in range(21) if i not in {3, 17}]


def test_crash_then_rerun_resumes_without_duplicates(tmp_path):
    EchoUDF.calls = 0
    with pytest.raises(RuntimeError, match="simulated crash"):
        # batches of 4, shards of 8: the crash in batch 6 leaves shards 0 and 1 written
        run_sharded(items(30), EchoUDF, {"crash_after_batches": 5}, str(tmp_path), "caption", CFG, engine="local")
    written = sorted(p.name for p in tmp_path.glob("shard-*.jsonl"))
    assert written == ["shard-00000.jsonl", "shard-00001.jsonl"]
    EchoUDF.calls = 0
    counts = run_sharded(items(30), EchoUDF, {}, str(tmp_path), "caption", CFG, engine="local")
    assert EchoUDF.calls == 4  # 14 remaining items in shards 2 and 3 -> batches of 4: 2 + 2
    ids = [r["id"] for r in read_shards(str(tmp_path))]
    assert len(ids) == len(set(ids)) == 30 and counts == StreamCounts(inputs=30, errors=0, records=30)


def test_repeated_ids_are_refused(tmp_path):
    with pytest.raises(ValueError, match="ids repeat"):
        run_sharded(items(3) + items(1), EchoUDF, {}, str(tmp_path), "caption", CFG, engine="local")


def test_stage_counts_on_empty_dir(tmp_path):
    assert stage_counts(str(tmp_path), 0) == StreamCounts(inputs=0, errors=0, records=0)
