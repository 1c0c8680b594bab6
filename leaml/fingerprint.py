"""Fingerprints: what determines a stage or a training job -> a stable hex digest, and why it changed.

A fingerprint hashes (canonical JSON) three things: the config section that drives the work, the
code version of its output format, and a digest of every artifact it reads. Artifact digests are
by content, so a stage whose upstream re-ran but wrote the same bytes is not redone (a build
system's early cutoff), while an edited pseudo pair or a rewritten checkpoint is seen:

- a local file up to ``CONTENT_HASH_MAX_BYTES``: SHA-256 of its bytes; a larger one (model
  weights): its size and mtime, so a plan never reads gigabytes (a rewrite changes the mtime);
- an ``s3://`` object: its ETag (S3's own content digest), from a listing, no download;
- a directory or prefix: the digest of its sorted (relative name, file digest) pairs.

A stage's record (``<run_dir>/stages/<stage>.json``: fingerprint and the parts it was made from)
is written after its done marker; :func:`assess` compares it with the current parts and says
done / stale / pending, and why, naming the config keys or inputs that changed.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from leaml import storage
from leaml.config import StrictModel

RECORD_FORMAT = 1
"""Version of the record layout itself (a change makes every record unreadable, so stale)."""
CONTENT_HASH_MAX_BYTES = 64 << 20
MISSING = "missing"

_file_cache: dict[tuple[str, int, int], str] = {}


def canonical_digest(obj: Any) -> str:
    """SHA-256 hex of ``obj`` as canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _local_file_digest(path: Path) -> str:
    st = path.stat()
    if st.st_size > CONTENT_HASH_MAX_BYTES:
        return f"stat:{st.st_size}:{st.st_mtime_ns}"
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _file_cache:  # a plan digests the same student checkpoint for many stages
        h = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _file_cache[key] = "sha256:" + h.hexdigest()
    return _file_cache[key]


def _s3_digests(uri: str) -> dict[str, str]:
    """{relative name ("" for the object itself): ETag} of an object or of every object under a prefix."""
    bucket, key = storage._split_s3(uri)
    out: dict[str, str] = {}
    pages = storage._s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
    for page in pages:
        for o in page.get("Contents", []):
            rel = o["Key"][len(key):]
            if rel == "" or rel.startswith("/") or not key or key.endswith("/"):
                out[rel.lstrip("/")] = "etag:" + o.get("ETag", "").strip('"')
    return out


def digest_artifact(uri: str) -> str:
    """A file's or a directory's digest (see the module docstring); ``"missing"`` when absent."""
    if storage.is_s3(uri):
        found = _s3_digests(uri)
        if not found:
            return MISSING
        return found[""] if list(found) == [""] else "tree:" + canonical_digest(sorted(found.items()))
    path = Path(uri)
    if path.is_file():
        return _local_file_digest(path)
    if not path.is_dir():
        return MISSING
    files = sorted(p for p in path.rglob("*")
                   if p.is_file() and not any(s.startswith(".") for s in p.relative_to(path).parts))
    return "tree:" + canonical_digest([[str(p.relative_to(path)), _local_file_digest(p)] for p in files])


def digest_inputs(inputs: dict[str, str]) -> dict[str, str]:
    """{label: uri} -> {label: digest}; a URI that is neither local nor S3 (a hub id) stands for itself."""
    out = {}
    for label, uri in inputs.items():
        d = digest_artifact(uri)
        out[label] = f"name:{uri}" if d == MISSING and _is_name(uri) else d
    return out


def _is_name(uri: str) -> bool:
    # "Qwen/Qwen2.5-VL-7B-Instruct": a hub id, resolved by its name (pin a revision to be exact)
    return not storage.is_s3(uri) and not os.path.isabs(uri) and not uri.startswith(".") and uri.count("/") == 1


# ---------------------------------------------------------------------------------------------
# Training jobs


JOB_FORMAT = 1
"""Bump when the training state's layout or the loop's meaning of a job changes."""
SCHEDULING_ONLY = {"cpus_per_worker", "max_failures", "torch_threads"}
"""Scaling settings that do not change what is trained (``num_workers`` does: the global batch
is ``batch_size * num_workers``), so a job that changes only them still resumes."""


def job_fingerprint(job) -> str:
    """A TrainJob -> the digest of what it trains: its settings (not where it writes, nor
    :data:`SCHEDULING_ONLY`) and the content digests of its initial model, data files and masks.
    The resume key: a job that changed in any of these never picks up an old checkpoint."""
    spec = job.model_dump(mode="json", exclude={"name": True, "out_dir": True, "local_checkpoint_dir": True,
                                                "fingerprint": True, "train": {"scaling": SCHEDULING_ONLY}})
    inputs = {"init_model": job.init_model, **{f"data{i}": d.uri for i, d in enumerate(job.data)}}
    if job.masks:
        inputs["masks"] = job.masks
    return canonical_digest({"format": JOB_FORMAT, "job": spec, "inputs": digest_inputs(inputs)})


# ---------------------------------------------------------------------------------------------
# Stage records and their assessment


class StageRecord(StrictModel):
    """What a finished stage was made from (written after its done marker)."""

    stage: str
    fingerprint: str
    record_format: int = RECORD_FORMAT
    format: int
    """The stage's output format version when it ran."""
    config: dict
    inputs: dict[str, str]
    """label -> digest of each artifact it read."""
    finished_at: float = 0.0


def stage_parts(fmt: int, config: dict, inputs: dict[str, str]) -> dict:
    """The parts a stage's fingerprint hashes: its format, config and the digests of its inputs."""
    return {"format": fmt, "config": json.loads(json.dumps(config, default=str)), "inputs": digest_inputs(inputs)}


def make_record(name: str, parts: dict) -> StageRecord:
    return StageRecord(stage=name, fingerprint=canonical_digest(parts), format=parts["format"],
                       config=parts["config"], inputs=parts["inputs"], finished_at=time.time())


def load_record(uri: str) -> StageRecord | None:
    if not storage.exists(uri):
        return None
    try:
        record = StageRecord.model_validate_json(storage.read_text(uri))
    except ValueError:  # a file cut short: it proves nothing
        return None
    return record if record.record_format == RECORD_FORMAT else None


def save_record(uri: str, record: StageRecord) -> None:
    storage.write_text(uri, record.model_dump_json(indent=2))


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def explain_change(old: StageRecord, parts: dict) -> str:
    """Why a recorded stage differs from its current parts: format, config keys, inputs."""
    reasons = []
    if old.format != parts["format"]:
        reasons.append(f"output format v{old.format} -> v{parts['format']}")
    a, b = _flatten(old.config), _flatten(parts["config"])
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k, "<unset>") != b.get(k, "<unset>"))
    if keys:
        shown = ", ".join(f"{k}: {a.get(k, '<unset>')!r} -> {b.get(k, '<unset>')!r}" for k in keys[:4])
        reasons.append(f"config changed ({shown}{', ...' if len(keys) > 4 else ''})")
    new = parts["inputs"]
    changed = sorted(k for k in old.inputs.keys() | new.keys() if old.inputs.get(k) != new.get(k))
    if changed:
        reasons.append(f"input changed: {', '.join(changed)}")
    return "; ".join(reasons) or "fingerprint differs"


State = Literal["done", "stale", "pending"]


@dataclass(frozen=True)
class Status:
    name: str
    state: State
    why: str

    def line(self) -> str:
        return f"{self.state:<8}{self.name:<28}{self.why}"


def assess(name: str, done_marker: str, record_uri: str, parts_fn,
           redone_upstream: list[str]) -> tuple[Status, dict | None]:
    """(status, current parts) of one stage. ``parts_fn()`` computes the parts (it may read
    upstream outputs, so it is not called while an upstream stage is to be redone)."""
    if not storage.exists(done_marker):
        return _pending(name, record_uri, parts_fn, redone_upstream)
    if redone_upstream:
        why = f"input stage {redone_upstream[0]} is redone (this one too if that output changes)"
        return Status(name, "stale", why), None
    old = load_record(record_uri)
    parts = parts_fn()
    if old is None:
        why = "no fingerprint recorded (made before fingerprints, or killed before recording)"
        return Status(name, "stale", why), parts
    if old.fingerprint != canonical_digest(parts):
        return Status(name, "stale", explain_change(old, parts)), parts
    return Status(name, "done", f"fingerprint {old.fingerprint[:12]} matches"), parts


def _pending(name: str, record_uri: str, parts_fn, redone_upstream: list[str]) -> tuple[Status, dict | None]:
    """A stage without its done marker: never started, or interrupted (its record was written
    when it started), and then whether its partial output may resume."""
    old = load_record(record_uri)
    if old is None:
        return Status(name, "pending", "not run yet"), None
    if redone_upstream:
        return Status(name, "pending", f"interrupted; input stage {redone_upstream[0]} is redone first"), None
    parts = parts_fn()
    if old.fingerprint == canonical_digest(parts):
        return Status(name, "pending", "interrupted; resumes its partial output (same fingerprint)"), parts
    return Status(name, "pending", f"interrupted on other inputs ({explain_change(old, parts)}); "
                                   "its partial output is removed"), parts
