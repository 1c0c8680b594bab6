"""The one media stream: rows -> decode (an error per item) -> a model target -> sharded JSONL + errors.

Captions, pseudo QA and evaluation all run on it:

- :class:`StreamItem` is one input row: an item, its media and what its UDF needs besides; Ray Data
  carries it as flat columns (:meth:`StreamItem.to_row`, read back by :meth:`StreamItem.from_row`).
- :class:`MediaUDF` is the batch UDF base: it decodes each row's media (:func:`leaml.media.load_media`),
  turns a row that does not decode into its error row, and hands the rest to ``process(items,
  media)``, whose per-item :class:`ItemFailure` becomes that item's error row too.
- A model target (:class:`ModelTarget`) is where ``process`` sends its batches: a Ray Serve
  deployment (:class:`ServeTarget`, through its handle), a model object in this process
  (:class:`LocalTarget`), or :class:`FakeTarget`, a deterministic stand-in for tests. A UDF gets a
  spec (``{"serve": {...}}``, ``{"local": {...}}`` or ``{"fake": {...}}``) that pickles to Ray
  Data actors, and connects it with :func:`connect_target` where it runs.
- :func:`run_sharded` plans the shards and runs the UDF: ``engine="ray"`` streams the rows through
  Ray Data into an actor pool of the UDF, ``engine="local"`` calls the same UDF in this process.
- :class:`ReplicaSettings`: the Serve replica settings of a stream's model deployment, one
  definition for the captioner and the QA generator.

Shard ``k`` holds input rows ``[k*S, (k+1)*S)`` of the id-sorted input. A finished shard is written
atomically as ``<out>/shard-00012.jsonl`` (its output records) together with
``<out>/errors/shard-00012.jsonl`` (an :class:`~leaml.records.ErrorRecord` per item that failed);
a re-run skips every shard whose file exists, so a stage killed mid-way resumes where it stopped
and never duplicates a record. ``<out>/_stream.json`` records the shard plan (shard size, the
items, the caller's key): shards of another plan are removed, never resumed. Every input row
yields exactly one result row (records or an error), so for every shard: inputs = items with
outputs + errors, always.

No poison pills: a UDF sends its batch to the model through :func:`call_isolating`. A failure of
the model *server* (the replica died, the deployment is unavailable) is retried with backoff
while Serve replaces the replica; any other failure splits the batch in halves and retries each,
down to the one item that fails, which becomes that item's error row while the rest are kept.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np
from pydantic import BaseModel, Field

from leaml import storage
from leaml.config import StrictModel
from leaml.records import ErrorRecord, MediaRef, Record, StreamCounts, VQAExample

log = logging.getLogger("leaml.streaming")

Engine = Literal["ray", "local"]
"""``ray``: Ray Data (+ Serve, + Ray Train), the product path; ``local``: the same work in-process."""


# ---------------------------------------------------------------------------------------------
# Settings


class RetrySettings(StrictModel):
    """Retries of a batch whose model server failed (not the items): exponential backoff."""

    attempts: int = Field(8, ge=1)
    """Calls per batch before the stage fails (written shards stay; a re-run resumes)."""
    backoff_s: float = Field(0.5, ge=0)
    """First wait; doubled after each failure up to ``max_backoff_s``."""
    max_backoff_s: float = Field(20.0, ge=0)
    """Serve restarts a dead replica in seconds plus its model load: 8 attempts wait ~50 s in all."""


class StreamConfig(StrictModel):
    """How a stream is cut and scheduled (the engine is the caller's: :func:`run_sharded`)."""

    batch_size: int = Field(16, ge=1)
    """Items per UDF call (and per request to the deployment)."""
    shard_size: int = Field(64, ge=1)
    """Items per output shard: the unit of resume."""
    num_actors: int = Field(1, ge=1)
    """Ray Data actors calling the deployment (they are light: the model lives in Serve)."""
    min_actors: int = Field(1, ge=1)
    """Actors the pool starts with (at most ``num_actors``); it grows to ``num_actors`` under load.
    Evaluation, whose actors each hold the model, starts them all."""
    actor_cpus: float = Field(0.25, gt=0)
    """Fractional so that 2 cores never deadlock the read tasks."""
    actor_gpus: float = Field(0.0, ge=0)
    """GPUs per actor: 0 when the model lives in Serve, the model's when it lives in the actor."""
    calls_per_actor: int = Field(1, ge=1)
    """Batches one actor has in flight to a Serve deployment (one thread each), so that the replica
    need not wait while the actor decodes and hands back. 1 on small machines: on 2 cores, 2 ran at
    0.7x the items/s of 1 (``benchmarks/streaming.py``, docs/PERFORMANCE.md). An actor that holds
    the model itself always runs one at a time."""
    retry: RetrySettings = RetrySettings()
    """When the model server fails mid-batch."""


class ReplicaSettings(StrictModel):
    """Replicas of a stream's model deployment (the captioner's and the QA generator's configs
    inherit these fields, so they stay flat keys of those sections)."""

    num_replicas: int | Literal["auto"] = 1
    """Fixed replica count, or "auto" to use ``autoscaling``."""
    autoscaling: dict = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 2}
    """Serve's ``autoscaling_config`` when ``num_replicas`` is "auto"."""
    replica_cpus: float = Field(1.0, gt=0)
    """CPUs per replica (fractional on small machines)."""
    replica_gpus: float = Field(0.0, ge=0)

    def deployment_options(self) -> dict:
        """``serve.deployment(**options)`` of these settings (see :func:`stream_deployment`)."""
        opts: dict = {"ray_actor_options": {"num_cpus": self.replica_cpus, "num_gpus": self.replica_gpus},
                      "max_ongoing_requests": 4}
        if self.num_replicas == "auto":
            opts["autoscaling_config"] = self.autoscaling
        else:
            opts["num_replicas"] = self.num_replicas
        return opts


SERVING_KNOBS = tuple(ReplicaSettings.model_fields)
"""Replica settings schedule the work; they never change what the model writes."""


def stream_deployment(model_cls: type, name: str, settings: ReplicaSettings, methods: Sequence[str]):
    """``serve.deployment`` of a stream's model: ``model_cls`` with ``settings``, whose ``methods``
    run one call at a time on a replica.

    Serve runs a sync method in a thread pool, so the requests a replica holds
    (``max_ongoing_requests``) would run their forward passes at once: on CPUs they fight over the
    same cores, and a seeded sampling call (``torch.manual_seed`` on the process-wide generator)
    would draw from another call's stream. One at a time, the next request is already waiting on
    the replica when a batch finishes, and a batch's output does not depend on who else called."""
    from ray import serve

    return serve.deployment(_one_at_a_time(model_cls, methods), name=name, **settings.deployment_options())


def _one_at_a_time(model_cls: type, methods: Sequence[str]) -> type:
    import functools
    import threading

    def serialised(method: Callable) -> Callable:
        @functools.wraps(method)
        def run(self, *args, **kwargs):
            with self._one_call:
                return method(self, *args, **kwargs)
        return run

    def init(self, *args, **kwargs):
        self._one_call = threading.RLock()  # a served method may call another (sample -> option_probs)
        model_cls.__init__(self, *args, **kwargs)

    body = {m: serialised(getattr(model_cls, m)) for m in methods}
    return type(model_cls.__name__, (model_cls,), {"__init__": init, "__doc__": model_cls.__doc__, **body})


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


# ---------------------------------------------------------------------------------------------
# Model targets


@runtime_checkable
class ModelTarget(Protocol):
    """Where a UDF's batches go: ``call("caption", media, ...)`` runs the model's ``caption``."""

    def call(self, method: str, *args: Any) -> Any:
        """The model's ``method(*args)``, waited for."""


class ServeTarget:
    """A Ray Serve deployment, through its handle (the model lives in the replicas)."""

    def __init__(self, app: str, deployment: str, **_described: Any):
        from ray import serve

        self.handle = serve.get_deployment_handle(deployment, app_name=app)

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self.handle, method).remote(*args).result()


class LocalTarget:
    """A model object in this process (the driver, or a Ray Data actor)."""

    def __init__(self, model: object):
        self.model = model

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self.model, method)(*args)


class FakeTarget:
    """A deterministic stand-in for a model, for tests: any method answers, per media item (the
    first argument), ``"<method>:<width>x<height>:<digest of the pixels>"``; a batch holding a frame
    of a size in ``refuse_sizes`` fails as a processor refusing that shape does, so the stream must
    isolate that item. ``calls`` counts the batches it was sent."""

    def __init__(self, refuse_sizes: Sequence[Sequence[int]] = ()):
        self.refuse = {tuple(s) for s in refuse_sizes}
        self.calls = 0

    def call(self, method: str, media: Sequence[Sequence], *args: Any) -> list[str]:
        self.calls += 1
        sizes = {f.size for frames in media for f in frames}
        if sizes & self.refuse:
            raise ValueError(f"fake model refuses frames of size {sorted(sizes & self.refuse)}")
        return [f"{method}:{frames[0].size[0]}x{frames[0].size[1]}:{_pixels_digest(frames)}" for frames in media]


def _pixels_digest(frames: Sequence) -> str:
    h = hashlib.sha256()
    for f in frames:
        h.update(np.asarray(f.convert("RGB")).tobytes())
    return h.hexdigest()[:12]


def connect_target(spec: dict, build_local: Callable[[dict], object]) -> ModelTarget:
    """A target spec -> a live target: ``{"serve": {"app", "deployment", ...}}`` a deployment handle,
    ``{"local": cfg}`` the model ``build_local(cfg)`` in this process, ``{"fake": kwargs}`` a
    :class:`FakeTarget`. Specs (not targets) travel to Ray Data actors: each connects its own."""
    if len(spec) != 1 or next(iter(spec)) not in ("serve", "local", "fake"):
        raise ValueError(f"a model target is one of serve / local / fake, got {sorted(spec)}")
    kind, args = next(iter(spec.items()))
    if kind == "serve":
        return ServeTarget(**args)
    if kind == "local":
        return LocalTarget(build_local(args))
    return FakeTarget(**args)


# ---------------------------------------------------------------------------------------------
# The stream's rows, and the UDF base


class StreamItem(Record):
    """One input row of a stream: an item, the media it decodes, and what its UDF needs besides."""

    item_id: str = Field(min_length=1)
    """Orders the shards; unique in a stream (a media id; evaluation: the question's position)."""
    media: MediaRef
    media_root: str = ""
    """What a relative ``media.uri`` is relative to ("" for none)."""
    report: str | None = None
    """The media's own free text (what the captioner's ``reports`` backend captions with)."""
    idx: int | None = None
    """Evaluation: the position of ``example`` among the examples evaluated."""
    example: VQAExample | None = None
    """Evaluation: the question asked about ``media``."""

    def to_row(self) -> dict:
        """The item as the flat columns Ray Data carries. The example travels as its JSON text:
        Arrow would make a struct column of it and reshape its free-form ``meta`` dicts."""
        return {"item_id": self.item_id, "media_id": self.media.id, "uri": self.media.uri, "kind": self.media.kind,
                "media_root": self.media_root, "report": self.report, "idx": self.idx,
                "example": None if self.example is None else self.example.model_dump_json()}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "StreamItem":
        """Inverse of :meth:`to_row`, from a batch row: its values may be numpy scalars, a column
        of nulls comes back from Ray Data as NaNs, and the columns the stream adds (``shard``,
        ``records``, ``error``) are not the item's."""
        col = {k: _cell(v) for k, v in row.items()}
        return cls.model_validate({
            "item_id": col.get("item_id"), "media_root": col.get("media_root"), "report": col.get("report"),
            "idx": col.get("idx"), "media": {"id": col.get("media_id"), "uri": col.get("uri"), "kind": col.get("kind")},
            "example": None if col.get("example") is None else json.loads(col["example"])})


def _cell(value: Any) -> Any:
    value = value.item() if isinstance(value, np.generic) else value
    return None if isinstance(value, float) and math.isnan(value) else value


Result = list[BaseModel] | ItemFailure
"""What ``process`` gives per item: its output records, or why the model refused it."""


class MediaUDF:
    """Batch UDF base, a plain class (``map_batches`` gets the class, the local loop an instance):
    :class:`StreamItem` rows -> the same rows plus ``records`` (a JSON list per row) and ``error``
    (empty when the row succeeded). Subclasses write :meth:`process`, and :meth:`build_local` when
    they accept a ``{"local": ...}`` target."""

    def __init__(self, target: dict, num_frames: int = 8, retry: dict | None = None):
        self.num_frames = num_frames
        self.retry = RetrySettings.model_validate(retry or {})
        self.target = connect_target(target, self.build_local)

    def build_local(self, cfg: dict) -> object:
        """The in-process model of a ``{"local": cfg}`` target."""
        raise NotImplementedError(f"{type(self).__name__} takes no local target")

    def process(self, items: list[StreamItem], media: list[list]) -> list[Result]:
        """One :data:`Result` per decoded item (``media``: its frames), in order."""
        raise NotImplementedError

    def isolating(self, fn: Callable[[list[int]], Sequence], n: int) -> list:
        """``fn`` over positions ``0..n-1`` through :func:`call_isolating`: a result or an
        :class:`ItemFailure` per position."""
        return call_isolating(fn, list(range(n)), self.retry) if n else []

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from leaml.media import load_media

        items = [StreamItem.from_row(row) for row in _rows(batch)]
        records, errors = [""] * len(items), [""] * len(items)
        ok, media = [], []
        for i, item in enumerate(items):
            try:
                media.append(load_media(item.media, num_frames=self.num_frames, root=item.media_root or None))
            except Exception as e:  # noqa: BLE001 - any unreadable item goes to the errors file
                errors[i] = f"{type(e).__name__}: {e}"
                continue
            ok.append(i)
        if ok:
            for i, got in zip(ok, self.process([items[i] for i in ok], media), strict=True):
                if isinstance(got, ItemFailure):  # the model refused this item: its error row, the rest kept
                    errors[i] = got.reason
                else:
                    records[i] = json.dumps([r.model_dump(mode="json") for r in got])
        return {**batch, "records": np.array(records, dtype=object), "error": np.array(errors, dtype=object)}


# ---------------------------------------------------------------------------------------------
# Shards


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.jsonl"


def plan_shards(items: Sequence[StreamItem], shard_size: int) -> dict[int, list[dict]]:
    """id-sorted items -> {shard index: their rows}; each row carries its shard."""
    items = sorted(items, key=lambda it: it.item_id)
    ids = [it.item_id for it in items]
    if len(set(ids)) != len(ids):
        raise ValueError("item ids repeat; shards would not be idempotent")
    shards: dict[int, list[dict]] = defaultdict(list)
    for i, item in enumerate(items):
        shards[i // shard_size].append({**item.to_row(), "shard": i // shard_size})
    return dict(shards)


def _shard_files(out_dir: str) -> tuple[list[str], list[str]]:
    """(records files, errors files) of the shards written in ``out_dir``, in shard order."""
    base = out_dir.rstrip("/") + "/"
    records, errors = [], []
    for f in storage.list_files(out_dir):
        rel = f[len(base):] if f.startswith(base) else f.rsplit("/", 1)[-1]
        name = rel.rsplit("/", 1)[-1]
        if name.startswith("shard-") and name.endswith(".jsonl") and rel in (name, f"errors/{name}"):
            (records if rel == name else errors).append(f)
    return records, errors


def pending_shards(out_dir: str, shards: dict[int, list[dict]]) -> dict[int, list[dict]]:
    """The shards whose records file is not written (an errors file alone, written first, is not done)."""
    done = {f.rsplit("/", 1)[-1] for f in _shard_files(out_dir)[0]}
    return {k: rows for k, rows in shards.items() if shard_name(k) not in done}


def run_sharded(items: Sequence[StreamItem], udf_cls: type, udf_kwargs: dict, out_dir: str, stage: str,
                cfg: StreamConfig | None = None, *, engine: Engine, key: dict | None = None) -> StreamCounts:
    """Process ``items`` into sharded outputs.

    ``udf_cls(**udf_kwargs)(batch)`` gets a column batch of :meth:`StreamItem.to_row` rows and
    returns it with ``records`` (a JSON list per row) and ``error`` (empty when the row
    succeeded), as :class:`MediaUDF` does. ``key``:
    what else the output depends on (a model's digest, its settings); shards written under another
    key, shard size or item set are removed first. Returns counts for the whole stage.
    """
    cfg = cfg or StreamConfig()
    shards = plan_shards(items, cfg.shard_size)
    _claim(out_dir, {"shard_size": cfg.shard_size, "items": _ids_digest(items), "key": key}, stage)
    todo = pending_shards(out_dir, shards)
    # said even when nothing is left: a resubmission's log shows what it found already written
    print(f"[{stage}] {sum(map(len, todo.values()))} items in {len(todo)} shards to do "
          f"({len(shards) - len(todo)} already written)", flush=True)
    if todo:
        results = (_stream_ray if engine == "ray" else _stream_local)(todo, udf_cls, udf_kwargs, cfg, stage)
        _write_shards(results, todo, out_dir, stage)
    return stage_counts(out_dir, len(items))


PLAN_FILE = "_stream.json"


def _ids_digest(items: Sequence[StreamItem]) -> str:
    return hashlib.sha256("\n".join(sorted(it.item_id for it in items)).encode()).hexdigest()


def _claim(out_dir: str, plan: dict, stage: str) -> None:
    """Record the shard plan in ``out_dir``; shards of another plan would resume the wrong rows."""
    uri = storage.join(out_dir, PLAN_FILE)
    text = json.dumps(plan, sort_keys=True, default=str)
    if storage.exists(uri) and storage.read_text(uri) != text:
        print(f"[{stage}] {out_dir} holds shards of another plan (inputs, key or shard size): starting over",
              flush=True)
        for f in sum(_shard_files(out_dir), []):
            storage.remove(f)
    storage.write_text(uri, text)


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


def actor_pool(cfg: StreamConfig, udf_kwargs: dict):
    """The Ray Data actor pool of a stream. A model behind Serve leaves the actors light: each
    waits on ``calls_per_actor`` batches at once (threads); an actor holding the model runs one."""
    import ray.data

    calls = cfg.calls_per_actor if "serve" in udf_kwargs.get("target", {}) else 1
    return ray.data.ActorPoolStrategy(min_size=min(cfg.min_actors, cfg.num_actors), max_size=cfg.num_actors,
                                      max_concurrent_calls_per_actor=calls, enable_true_multi_threading=calls > 1)


def _stream_ray(todo, udf_cls, udf_kwargs, cfg: StreamConfig, stage: str):
    import ray
    from tqdm.auto import tqdm

    rows = [r for k in sorted(todo) for r in todo[k]]
    ds = ray.data.from_items(rows, override_num_blocks=_num_blocks(len(rows), cfg.batch_size)).map_batches(
        udf_cls, fn_constructor_kwargs=udf_kwargs, batch_size=cfg.batch_size, compute=actor_pool(cfg, udf_kwargs),
        num_cpus=cfg.actor_cpus, num_gpus=cfg.actor_gpus,
    )
    with tqdm(total=len(rows), desc=stage, unit="item") as bar:
        for row in ds.iter_rows():
            bar.update(1)
            yield row


MAX_BLOCKS = 200
"""Ray Data's own default cap on the blocks of ``from_items``."""


def _num_blocks(n_rows: int, batch_size: int) -> int:
    """About one batch of rows per block. Left to itself, ``from_items`` cuts a few hundred rows
    into ~200 blocks of 2-3 rows, and every batch is then stitched from several of them: measured
    (benchmarks/streaming.py --items 512), that cost a one-replica stream 0.83x of the in-process
    loop at the margin; one block per batch gave 1.27x. Past ``MAX_BLOCKS`` batches a block holds
    several batches, so a million rows do not become 60,000 objects."""
    batches = max(1, -(-n_rows // batch_size))
    per_block = -(-batches // MAX_BLOCKS)
    return -(-batches // per_block)


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
    errors = [_error_record(r, stage) for r in rows if r["error"]]
    # errors first: a shard's records file is the marker that the whole shard is done
    storage.write_text(storage.join(out_dir, "errors", shard_name(k)),
                       "".join(e.model_dump_json() + "\n" for e in errors))
    storage.write_text(storage.join(out_dir, shard_name(k)), "".join(json.dumps(r) + "\n" for r in records))


def _error_record(row: dict, stage: str) -> ErrorRecord:
    # named by the item's media, not its item id (evaluation: items are questions about media)
    media = StreamItem.from_row(row).media
    return ErrorRecord(media_id=media.id, uri=media.uri, stage=stage, reason=str(row["error"]))


def stage_counts(out_dir: str, n_inputs: int) -> StreamCounts:
    records, errors = _shard_files(out_dir)
    n_err = sum(len(storage.read_text(f).splitlines()) for f in errors)
    n_rec = sum(len(storage.read_text(f).splitlines()) for f in records)
    return StreamCounts(inputs=n_inputs, errors=n_err, records=n_rec)


def read_shards(out_dir: str) -> list[dict]:
    """Every output record of a sharded stage, in shard order."""
    return [json.loads(line) for f in _shard_files(out_dir)[0] for line in storage.read_text(f).splitlines()
            if line.strip()]


def read_errors(out_dir: str) -> list[ErrorRecord]:
    """Every error row of a sharded stage, in shard order."""
    return [ErrorRecord.model_validate_json(line) for f in _shard_files(out_dir)[1]
            for line in storage.read_text(f).splitlines() if line.strip()]
