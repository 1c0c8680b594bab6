"""The one stage abstraction for per-item work: items -> a batch UDF -> sharded JSONL + errors.

Shard ``k`` holds input rows ``[k*S, (k+1)*S)`` of the id-sorted input. A finished shard is written
atomically as ``<out>/shard-00012.jsonl`` (its output records) together with
``<out>/errors/shard-00012.jsonl`` (an :class:`~leaml.records.ErrorRecord` per item that failed);
a re-run skips every shard whose file exists, so a stage killed mid-way resumes where it stopped
and never duplicates a record. Every input row yields exactly one result row (records or an
error), so for every shard: inputs = items with outputs + errors, always.

Engines: ``ray`` streams rows through Ray Data into an actor pool of the UDF (which, for the
captioner and the QA generator, forwards each batch to a Ray Serve deployment through its
handle); ``local`` runs the same UDF in this process.

No poison pills: a UDF sends its batch to the model through :func:`call_isolating`. A failure of
the model *server* (the replica died, the deployment is unavailable) is retried with backoff
while Serve replaces the replica; any other failure splits the batch in halves and retries each,
down to the one item that fails, which becomes that item's error row while the rest are kept.
"""
from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import numpy as np
from pydantic import Field

from leaml import storage
from leaml.config import StrictModel
from leaml.records import ErrorRecord

log = logging.getLogger("leaml.pipeline.streaming")


class RetrySettings(StrictModel):
    """Retries of a batch whose model server failed (not the items): exponential backoff."""

    attempts: int = Field(8, ge=1)
    """Calls per batch before the stage fails (written shards stay; a re-run resumes)."""
    backoff_s: float = Field(0.5, ge=0)
    """First wait; doubled after each failure up to ``max_backoff_s``."""
    max_backoff_s: float = Field(20.0, ge=0)
    """Serve restarts a dead replica in seconds plus its model load: 8 attempts wait ~50 s in all."""


class StreamConfig(StrictModel):
    engine: Literal["ray", "local"] = "ray"
    batch_size: int = Field(16, ge=1)
    """Items per UDF call (and per request to the deployment)."""
    shard_size: int = Field(64, ge=1)
    """Items per output shard: the unit of resume."""
    num_actors: int = Field(1, ge=1)
    """Ray Data actors calling the deployment (they are light: the model lives in Serve)."""
    actor_cpus: float = Field(0.25, gt=0)
    """Fractional so that 2 cores never deadlock the read tasks."""
    retry: RetrySettings = RetrySettings()
    """When the model server fails mid-batch."""


# ---------------------------------------------------------------------------------------------
# Failure isolation


@dataclass(frozen=True)
class ItemFailure:
    """The model refused this one item (its error row's reason)."""

    reason: str


def is_server_failure(e: BaseException) -> bool:
    """True when the error says the model server went away, not that an item is bad."""
    try:
        from ray import exceptions as rex
        from ray.serve import exceptions as sex
    except ImportError:  # no Ray: every failure is the item's
        return False
    server = (rex.RayActorError, rex.ActorUnavailableError, rex.WorkerCrashedError, rex.NodeDiedError,
              rex.LocalRayletDiedError, sex.BackPressureError, sex.DeploymentUnavailableError,
              sex.ReplicaUnavailableError)
    return isinstance(e, server)


def call_isolating(fn: Callable[[list], Sequence], items: list, retry: RetrySettings | None = None,
                   sleep: Callable[[float], None] = time.sleep) -> list:
    """``fn(items)`` (one result per item) -> results, with an :class:`ItemFailure` in place of each
    item the model refuses. A failing batch is bisected (a bad item costs 2 log2(n) extra calls);
    server failures are retried as they are and, once ``retry.attempts`` are spent, raised."""
    retry = retry or RetrySettings()
    try:
        out = _with_retries(fn, items, retry, sleep)
    except Exception as e:  # noqa: BLE001 - classified below: the server's or an item's
        if is_server_failure(e):
            raise
        if len(items) == 1:
            return [ItemFailure(f"model: {type(e).__name__}: {str(e)[:500]}")]
        log.warning("a batch of %d failed (%s); splitting it to isolate the item", len(items), type(e).__name__)
        mid = len(items) // 2
        return call_isolating(fn, items[:mid], retry, sleep) + call_isolating(fn, items[mid:], retry, sleep)
    if len(out) != len(items):
        raise RuntimeError(f"the model returned {len(out)} results for {len(items)} items")
    return list(out)


def _with_retries(fn, items: list, retry: RetrySettings, sleep) -> Sequence:
    wait = retry.backoff_s
    for attempt in range(1, retry.attempts + 1):
        try:
            return fn(items)
        except Exception as e:  # noqa: BLE001
            if not is_server_failure(e) or attempt == retry.attempts:
                raise
            log.warning("model server failed (%s), attempt %d/%d; retrying in %.1fs",
                        type(e).__name__, attempt, retry.attempts, wait)
            sleep(wait)
            wait = min(2 * wait if wait else retry.backoff_s, retry.max_backoff_s)
    raise AssertionError("unreachable")


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.jsonl"


def plan_shards(items: list[dict], shard_size: int) -> dict[int, list[dict]]:
    """id-sorted items -> {shard index: rows}; each row carries its shard and position."""
    items = sorted(items, key=lambda r: r["item_id"])
    ids = [r["item_id"] for r in items]
    if len(set(ids)) != len(ids):
        raise ValueError("item ids repeat; shards would not be idempotent")
    shards: dict[int, list[dict]] = defaultdict(list)
    for i, row in enumerate(items):
        shards[i // shard_size].append({**row, "shard": i // shard_size})
    return dict(shards)


def pending_shards(out_dir: str, shards: dict[int, list[dict]]) -> dict[int, list[dict]]:
    done = {f.rsplit("/", 1)[-1] for f in storage.list_files(out_dir)}
    return {k: rows for k, rows in shards.items() if shard_name(k) not in done}


def run_sharded(items: list[dict], udf_cls: type, udf_kwargs: dict, out_dir: str, stage: str,
                cfg: StreamConfig | None = None) -> dict:
    """Process ``items`` (dicts with ``item_id`` plus UDF payload columns) into sharded outputs.

    ``udf_cls(**udf_kwargs)(batch)`` gets a column batch and returns it with ``records`` (a JSON
    list per row) and ``error`` (empty when the row succeeded). Returns counts for the whole stage.
    """
    cfg = cfg or StreamConfig()
    shards = plan_shards(items, cfg.shard_size)
    todo = pending_shards(out_dir, shards)
    if todo:
        print(f"[{stage}] {sum(map(len, todo.values()))} items in {len(todo)} shards to do "
              f"({len(shards) - len(todo)} already written)", flush=True)
        results = (_stream_ray if cfg.engine == "ray" else _stream_local)(todo, udf_cls, udf_kwargs, cfg, stage)
        _write_shards(results, todo, out_dir, stage)
    return stage_counts(out_dir, len(items))


def _stream_local(todo, udf_cls, udf_kwargs, cfg: StreamConfig, stage: str):
    from tqdm.auto import tqdm

    udf = udf_cls(**udf_kwargs)
    rows = [r for k in sorted(todo) for r in todo[k]]
    with tqdm(total=len(rows), desc=stage, unit="item") as bar:
        for start in range(0, len(rows), cfg.batch_size):
            chunk = rows[start:start + cfg.batch_size]
            out = udf({k: np.array([r[k] for r in chunk], dtype=object) for k in chunk[0]})
            bar.update(len(chunk))
            yield from _rows(out)


def _stream_ray(todo, udf_cls, udf_kwargs, cfg: StreamConfig, stage: str):
    import ray
    from tqdm.auto import tqdm

    rows = [r for k in sorted(todo) for r in todo[k]]
    ds = ray.data.from_items(rows).map_batches(
        udf_cls, fn_constructor_kwargs=udf_kwargs, batch_size=cfg.batch_size,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cfg.num_actors), num_cpus=cfg.actor_cpus,
    )
    with tqdm(total=len(rows), desc=stage, unit="item") as bar:
        for row in ds.iter_rows():
            bar.update(1)
            yield row


def _rows(batch: dict[str, Any]):
    n = len(batch["item_id"])
    for i in range(n):
        yield {k: v[i] for k, v in batch.items()}


def _write_shards(results, todo: dict[int, list[dict]], out_dir: str, stage: str) -> None:
    """Collect result rows by shard; write a shard (records + errors) the moment it is complete."""
    pending: dict[int, list[dict]] = defaultdict(list)
    for row in results:
        k = int(row["shard"])
        pending[k].append(row)
        if len(pending[k]) == len(todo[k]):
            _write_one(out_dir, k, pending.pop(k), stage)
    if pending:
        raise RuntimeError(f"[{stage}] stream ended with incomplete shards {sorted(pending)}")


def _write_one(out_dir: str, k: int, rows: list[dict], stage: str) -> None:
    rows = sorted(rows, key=lambda r: r["item_id"])
    records = [rec for r in rows if not r["error"] for rec in json.loads(r["records"])]
    errors = [ErrorRecord(media_id=r["item_id"], uri=str(r.get("uri", "")), stage=stage, reason=str(r["error"]))
              for r in rows if r["error"]]
    # errors first: a shard's records file is the marker that the whole shard is done
    storage.write_text(storage.join(out_dir, "errors", shard_name(k)),
                       "".join(e.model_dump_json() + "\n" for e in errors))
    storage.write_text(storage.join(out_dir, shard_name(k)), "".join(json.dumps(r) + "\n" for r in records))


def stage_counts(out_dir: str, n_inputs: int) -> dict:
    files = storage.list_files(out_dir)
    n_err = sum(len(storage.read_text(f).splitlines()) for f in files if "/errors/" in f)
    n_rec = sum(len(storage.read_text(f).splitlines()) for f in files
                if f.endswith(".jsonl") and "/errors/" not in f and f.rsplit("/", 1)[-1].startswith("shard-"))
    return {"inputs": n_inputs, "errors": n_err, "records": n_rec}


def read_shards(out_dir: str) -> list[dict]:
    """Every output record of a sharded stage, in shard order."""
    rows = []
    for f in storage.list_files(out_dir):
        name = f.rsplit("/", 1)[-1]
        if name.startswith("shard-") and "/errors/" not in f:
            rows += [json.loads(line) for line in storage.read_text(f).splitlines() if line.strip()]
    return rows


def read_errors(out_dir: str) -> list[ErrorRecord]:
    return [ErrorRecord.model_validate_json(line) for f in storage.list_files(storage.join(out_dir, "errors"))
            for line in storage.read_text(f).splitlines() if line.strip()]
