"""One small storage layer: local paths and ``s3://`` URIs behind the same few functions.

Writes are atomic on both: a local write goes to a temporary file in the same directory and is
renamed into place; an S3 PUT is atomic by nature. So a stage killed mid-write never leaves a
half-written artifact that a re-run would mistake for a finished one.

S3 is reached through boto3, which honours ``AWS_ENDPOINT_URL`` (tests point it at a local moto
server), ``AWS_PROFILE`` and the usual credential chain.
"""
from __future__ import annotations

import functools
import os
import uuid
from pathlib import Path


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def join(base: str, *parts: str) -> str:
    if is_s3(base):
        return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(base, *parts))


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"not an s3 URI with a bucket: {uri!r}")
    return bucket, key


@functools.lru_cache(maxsize=1)
def _s3_client():
    import boto3

    return boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)


def reset_s3_client() -> None:
    """Forget the cached client (tests change the endpoint between sessions)."""
    _s3_client.cache_clear()


def read_bytes(uri: str) -> bytes:
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        try:
            return _s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except _s3_client().exceptions.NoSuchKey as e:
            raise FileNotFoundError(uri) from e
    return Path(uri).read_bytes()


def read_text(uri: str) -> str:
    return read_bytes(uri).decode()


def write_bytes(uri: str, data: bytes) -> None:
    """Atomic write (temp file + rename locally; a single PUT on S3)."""
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        _s3_client().put_object(Bucket=bucket, Key=key, Body=data)
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: it creates mode 0600, and the renamed artifact would keep it. O_EXCL with 0666
    # lets the kernel apply the umask, as for any plain open().
    tmp = str(path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode())


def exists(uri: str) -> bool:
    """True for an existing file, or a directory / S3 prefix holding at least one file."""
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        # An exact key, or a "directory": a bare prefix match would make "a.json" exist when only
        # "a.jsonl" does.
        keys = [key] if not key or key.endswith("/") else [key, key + "/"]
        for k in keys:
            resp = _s3_client().list_objects_v2(Bucket=bucket, Prefix=k, MaxKeys=1)
            first = resp.get("Contents", [{}])[0].get("Key")
            if first is not None and (k.endswith("/") or not k or first == k):
                return True
        return False
    return Path(uri).exists()


def list_files(prefix: str) -> list[str]:
    """Every file under ``prefix`` (recursive), as full URIs / paths, sorted."""
    if is_s3(prefix):
        bucket, key = _split_s3(prefix)
        key = key.rstrip("/") + "/" if key else ""
        out: list[str] = []
        for page in _s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
            out += [f"s3://{bucket}/{o['Key']}" for o in page.get("Contents", [])]
        return sorted(out)
    root = Path(prefix)
    if not root.exists():
        return []
    return sorted(str(p) for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def remove(uri: str) -> None:
    """Remove a file or, recursively, every file under a prefix."""
    if is_s3(uri):
        bucket, _ = _split_s3(uri)
        keys = list_files(uri) or ([uri] if exists(uri) else [])
        for k in keys:
            _s3_client().delete_object(Bucket=bucket, Key=_split_s3(k)[1])
        return
    import shutil

    p = Path(uri)
    if p.is_dir():
        shutil.rmtree(p)
    else:
        p.unlink(missing_ok=True)


def upload_dir(local_dir: str | Path, uri: str) -> None:
    """Copy a local directory tree to ``uri`` (local or S3)."""
    local_dir = Path(local_dir)
    for p in sorted(local_dir.rglob("*")):
        if p.is_file():
            write_bytes(join(uri, str(p.relative_to(local_dir))), p.read_bytes())


def download_dir(uri: str, local_dir: str | Path) -> Path:
    """Copy every file under ``uri`` into ``local_dir`` (for libraries that want a local path)."""
    local_dir = Path(local_dir)
    for f in list_files(uri):
        # Local listings come back normalised by Path ("./x/a" -> "x/a"), so take the relative part
        # with relative_to rather than by string prefix, which flattened nested trees.
        rel = f[len(uri.rstrip("/")) + 1:] if is_s3(uri) else str(Path(f).relative_to(Path(uri)))
        if rel.startswith("/") or ".." in rel.replace("\\", "/").split("/"):
            # an S3 key is any string: "a/../../x" would write outside local_dir
            raise ValueError(f"refusing to download {f!r}: its key leaves {local_dir}")
        dest = local_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(read_bytes(f))
    return local_dir


def local_path(uri: str, cache_root: str | Path | None = None) -> Path:
    """A local directory holding ``uri``: the path itself, or an S3 prefix downloaded to a cache.

    A cached copy is reused only if its completion stamp lists the same (key, ETag) pairs as the
    prefix has now, so a download killed half-way, or a checkpoint rewritten at the same URI, is
    fetched again. The download goes to a private temporary directory renamed into place, so
    several workers loading the same checkpoint never see each other's partial copies.
    """
    if not is_s3(uri):
        return Path(uri)
    import json
    import shutil
    import uuid

    bucket, key = _split_s3(uri)
    root = Path(cache_root or os.environ.get("LEAML_CACHE", Path.home() / ".cache" / "leaml"))
    dest = root / "s3" / bucket / key
    stamp_name = ".leaml-download-complete"
    listing = _listing(uri)
    stamp = dest / stamp_name
    if stamp.exists() and json.loads(stamp.read_text()) == listing:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex}.partial"
    download_dir(uri, tmp)
    (tmp / stamp_name).write_text(json.dumps(listing))
    old = dest.parent / f".{dest.name}.{uuid.uuid4().hex}.old"
    try:
        if dest.exists():
            os.rename(dest, old)
        os.rename(tmp, dest)
    except OSError:  # another loader put a complete copy in place first
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return dest


def _listing(uri: str) -> list[list[str]]:
    bucket, key = _split_s3(uri)
    prefix = key.rstrip("/") + "/" if key else ""
    out = []
    for page in _s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out += [[o["Key"], o.get("ETag", "")] for o in page.get("Contents", [])]
    return sorted(out)
