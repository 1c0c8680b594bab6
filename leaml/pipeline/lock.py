"""One driver per run dir: ``with run_lock(run_dir):`` -> an exclusive lock on ``<run_dir>/.lock``
for as long as ``leaml run`` drives that run, or :class:`RunLockedError` naming the driver that
holds it. Two drivers on one run dir would run the same stages at once: both train the same rows
into the same checkpoints, overwrite each other's shards, and the done markers stop meaning
anything (a resubmitted RayJob while the first still runs, two people on one shared run dir).

- **Local path** (NFS included): the kernel's lock (``fcntl.flock``) on the lock file, which holds
  the holder's pid, host and start time for the error message. The kernel drops the lock when its
  process ends, SIGKILL included, so a dead driver's lock is taken over at once, with a warning
  naming it (NFS: once the server's lease on the dead client's locks runs out, ~90 s). The file
  is removed on release; a filesystem without ``flock`` is an error, not a silent no-lock.
- **s3://**: best-effort. A lock object created with a conditional PUT (``If-None-Match: *``)
  holds an owner token, the pid, host, start time and ``ttl_s``; a heartbeat thread rewrites it
  every ``ttl_s / 3`` (``If-Match`` its own last ETag). A driver that died stops beating; once the
  object is ``ttl_s`` old by the store's own clock (``Last-Modified`` against the reply's ``Date``,
  so no client clock is trusted), the next driver takes it over, again conditionally (of two that
  try at once, one wins). What it cannot promise: a store that ignores conditional headers is
  caught only by reading the lock back (a near-simultaneous start can slip through), and a driver
  cut off from the store for longer than ``ttl_s`` loses its lock to the next one while it still
  runs; it is told when it ends (:class:`RunLockLost`). Deleting ``.lock`` by hand frees the run
  dir from a driver that cannot be stopped, at the same risk.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Iterator

from leaml import storage

log = logging.getLogger("leaml.pipeline.lock")
LOCK_NAME = ".lock"
DEFAULT_TTL_S = 120.0


class RunLockedError(RuntimeError):
    """Another driver holds the run dir; the message names it and what to do."""


class RunLockLost(RuntimeError):
    """The s3 lock was taken over while this driver ran (its heartbeats failed for ``ttl_s``)."""


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a lock: what the lock file / object says."""

    pid: int
    host: str
    started: str  # ISO 8601, UTC
    token: str = ""
    ttl_s: float | None = None  # s3 only

    @classmethod
    def me(cls, ttl_s: float | None = None) -> "Holder":
        started = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
        return cls(os.getpid(), socket.gethostname(), started, uuid.uuid4().hex, ttl_s)

    @classmethod
    def parse(cls, text: str | bytes) -> "Holder | None":
        try:
            d = json.loads(text)
            return cls(int(d["pid"]), str(d["host"]), str(d["started"]), str(d.get("token", "")), d.get("ttl_s"))
        except (ValueError, KeyError, TypeError):
            return None  # empty (being written) or not ours

    def dump(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}, started {self.started}"


@dataclass
class RunLock:
    """A held lock: where, who we are, and whose stale lock we took over (if any)."""

    uri: str
    holder: Holder
    took_over: Holder | None = None


@contextmanager
def run_lock(run_dir: str, ttl_s: float = DEFAULT_TTL_S) -> Iterator[RunLock]:
    """Hold ``<run_dir>/.lock`` for the ``with`` block (released on any exit, exceptions included);
    :class:`RunLockedError` if another live driver holds it. ``ttl_s``: s3 only (see the module)."""
    uri = storage.join(run_dir, LOCK_NAME)
    if storage.is_s3(uri):
        with _S3Lock(uri, ttl_s) as lock:
            yield lock
    else:
        with _local_lock(uri) as lock:
            yield lock


def _refusal(uri: str, holder: Holder | None, how_it_ends: str) -> RunLockedError:
    who = holder.describe() if holder else "a driver whose lock file is still being written"
    return RunLockedError(f"{os.path.dirname(uri) or uri} is in use by another driver: {who} ({uri}). "
                          f"Two drivers would run the same stages at once; wait for it to finish or stop it. "
                          f"{how_it_ends}")


def _took_over(uri: str, previous: Holder) -> None:
    log.warning("took over the stale lock %s of %s (that driver is gone)", uri, previous.describe())


# ---------------------------------------------------------------------------------------------
# Local: flock


@contextmanager
def _local_lock(path: str) -> Iterator[RunLock]:
    import fcntl

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    for _ in range(10):  # only a driver releasing between our open and our flock makes us go round
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = Holder.parse(os.pread(fd, 4096, 0))
            os.close(fd)
            raise _refusal(path, holder, "Its lock goes with its process, a kill included.") from None
        except OSError as e:
            os.close(fd)
            raise RunLockedError(f"cannot lock {path}: {e}; this filesystem has no flock, so two "
                                 "drivers could not be kept apart here. Use a local disk, NFS or s3://.") from e
        if _same_file(fd, path):
            break
        os.close(fd)  # we locked a file a releasing driver had just removed: lock the new one
    else:
        raise RunLockedError(f"cannot lock {path}: it keeps being replaced by other drivers")
    previous = Holder.parse(os.pread(fd, 4096, 0))  # a file we could lock: its holder is gone
    lock = RunLock(path, Holder.me(), previous)
    if previous:
        _took_over(path, previous)
    os.ftruncate(fd, 0)
    os.pwrite(fd, lock.holder.dump(), 0)
    os.fsync(fd)
    try:
        yield lock
    finally:
        if _same_file(fd, path):
            os.unlink(path)  # while still locked: a waiter that opened it re-checks and starts over
        os.close(fd)


def _same_file(fd: int, path: str) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


# ---------------------------------------------------------------------------------------------
# s3: conditional writes + heartbeat


def _conflict(e: Exception) -> bool:
    """A conditional write that lost: 412 PreconditionFailed, or 409 when two raced on AWS."""
    code = getattr(e, "response", {}).get("Error", {}).get("Code", "")
    return code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")


class _S3Lock:
    def __init__(self, uri: str, ttl_s: float):
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        self.uri, self.ttl_s = uri, ttl_s
        self.bucket, self.key = storage._split_s3(uri)
        self.lock = RunLock(uri, Holder.me(ttl_s))
        self.etag = ""
        self.lost = False
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> RunLock:
        self._acquire()
        self._beat = threading.Thread(target=self._heartbeat, name="leaml-run-lock", daemon=True)
        self._beat.start()
        return self.lock

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        self._beat.join()
        if not self.lost:
            self._delete()
        elif exc_type is None:
            raise RunLockLost(f"{self.uri} was taken over while this driver ran (no heartbeat reached the "
                              f"store for {self.ttl_s:g} s): another driver may have run the same stages; "
                              "check the run before trusting it")

    def _client(self):
        return storage._s3_client()

    def _put(self, **condition) -> str:
        resp = self._client().put_object(Bucket=self.bucket, Key=self.key, Body=self.lock.holder.dump(), **condition)
        return resp.get("ETag", "")

    def _read(self) -> tuple[Holder | None, str, float] | None:
        """(holder, ETag, age in s by the store's clock), or None when there is no lock object."""
        client = self._client()
        try:
            resp = client.get_object(Bucket=self.bucket, Key=self.key)
        except client.exceptions.NoSuchKey:
            return None
        now = parsedate_to_datetime(resp["ResponseMetadata"]["HTTPHeaders"]["date"])
        age = (now - resp["LastModified"]).total_seconds()
        return Holder.parse(resp["Body"].read()), resp.get("ETag", ""), age

    def _acquire(self) -> None:
        for _ in range(5):  # round again only when the holder released between our two requests
            try:
                self.etag = self._put(IfNoneMatch="*")
                return self._check_mine()
            except Exception as e:  # noqa: BLE001 - botocore's ClientError, without importing botocore here
                if not _conflict(e):
                    raise
            current = self._read()
            if current is None:
                continue
            holder, etag, age = current
            ttl = float(holder.ttl_s) if holder and holder.ttl_s else self.ttl_s
            if age < ttl:
                raise _refusal(self.uri, holder, f"Its lock was renewed {age:.0f} s ago; a driver that died "
                                                 f"leaves it to expire {ttl:g} s after its last heartbeat.")
            try:
                self.etag = self._put(IfMatch=etag)
            except Exception as e:  # noqa: BLE001
                if not _conflict(e):
                    raise
                raise _refusal(self.uri, self._read_holder(), "It took over the same stale lock just now.") from None
            self.lock.took_over = holder
            if holder:
                _took_over(self.uri, holder)
            return self._check_mine()
        raise RunLockedError(f"cannot lock {self.uri}: other drivers keep taking and releasing it")

    def _read_holder(self) -> Holder | None:
        current = self._read()
        return current[0] if current else None

    def _check_mine(self) -> None:
        """A store that ignores conditional headers lets the last writer win: read it back."""
        holder = self._read_holder()
        if holder is None or holder.token != self.lock.holder.token:
            raise _refusal(self.uri, holder, "It started at the same moment as this one.")

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.etag = self._put(IfMatch=self.etag)
            except Exception as e:  # noqa: BLE001 - a network error: try again next beat
                if _conflict(e):
                    self.lost = True
                    log.error("lost the run lock %s: another driver took it over after %g s without a "
                              "heartbeat from this one; stages may now run twice", self.uri, self.ttl_s)
                    return
                log.warning("run lock heartbeat to %s failed (%s); retrying in %g s",
                            self.uri, type(e).__name__, self.ttl_s / 3)

    def _delete(self) -> None:
        client = self._client()
        try:
            client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self.etag)
        except Exception as e:  # noqa: BLE001
            if _conflict(e):
                return  # no longer ours: leave the new holder's lock alone
            holder = self._read_holder()  # a store without conditional deletes: check, then delete
            if holder and holder.token == self.lock.holder.token:
                client.delete_object(Bucket=self.bucket, Key=self.key)

