"""API keys: a source (env var or mounted secret file) -> a store that checks a presented key.

Keys are never compared as plain strings: both sides are hashed to SHA-256 digests and compared with
``hmac.compare_digest`` against every configured key (no early exit), so neither the position of
the first differing byte nor the key's length nor which key matched shows in the timing.

A secret file (a Kubernetes Secret mounted as a volume) is re-read when its mtime changes, so a
rotated key takes effect without restarting replicas. An empty source is an error at start-up:
the service fails closed instead of serving without keys.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import threading
from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator

DEFAULT_ENV = "LEAML_API_KEYS"


class ApiKeySource(BaseModel):
    """Where the service's API keys come from: exactly one of an env var or a secret file."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    env: str | None = DEFAULT_ENV
    """Name of an environment variable holding comma-separated keys (not the keys themselves)."""
    file: str | None = None
    """Path of a secret file with one key per line (``#`` starts a comment); re-read on change."""

    @model_validator(mode="before")
    @classmethod
    def _file_replaces_default_env(cls, data):
        # `{file: ...}` alone means "keys from the file", not "file and the default env var".
        if isinstance(data, dict) and data.get("file") and "env" not in data:
            data = {**data, "env": None}
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> "ApiKeySource":
        if (self.env is None) == (self.file is None):
            raise ValueError(f"set exactly one of `env` or `file`; got env={self.env!r}, file={self.file!r}")
        return self


class ApiKeyError(RuntimeError):
    """The key source is missing or empty (raised at start-up, never per request)."""


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def parse_keys(text: str, sep: str) -> list[str]:
    """Keys from env-var text (``sep=","``) or file text (``sep="\\n"``); blanks and comments dropped."""
    keys = []
    for raw in text.split(sep):
        key = raw.split("#", 1)[0].strip() if sep == "\n" else raw.strip()
        if key:
            keys.append(key)
    return keys


class ApiKeyStore:
    """Checks presented keys against the configured ones in constant time."""

    def __init__(self, source: ApiKeySource):
        self.source: ApiKeySource | None = source
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._digests: tuple[bytes, ...] = ()
        self._load()

    @classmethod
    def from_keys(cls, keys: list[str]) -> "ApiKeyStore":
        """A store holding ``keys`` directly (tests, embedding); still refuses an empty list."""
        if not [k for k in keys if k]:
            raise ApiKeyError("no API keys given; refusing to serve without authentication")
        store = cls.__new__(cls)
        store.source, store._lock, store._mtime = None, threading.Lock(), None
        store._digests = tuple(_digest(k) for k in keys if k)
        return store

    def _load(self) -> None:
        if self.source.env is not None:
            text = os.environ.get(self.source.env)
            if text is None:
                raise ApiKeyError(f"environment variable {self.source.env} (API keys) is not set")
            keys = parse_keys(text, ",")
            where = f"environment variable {self.source.env}"
        else:
            path = Path(self.source.file)
            try:
                self._mtime = path.stat().st_mtime
                keys = parse_keys(path.read_text(), "\n")
            except OSError as e:
                raise ApiKeyError(f"API key file {path} cannot be read: {e.strerror}") from e
            where = f"file {path}"
        if not keys:
            raise ApiKeyError(f"no API keys in {where}; refusing to serve without authentication")
        self._digests = tuple(_digest(k) for k in keys)

    def _maybe_reload(self) -> None:
        if self.source is None or self.source.file is None:
            return
        try:
            mtime = Path(self.source.file).stat().st_mtime
        except OSError:
            return  # a secret volume mid-update: keep the keys we have
        if mtime != self._mtime:
            with self._lock:
                try:
                    self._load()
                except ApiKeyError:
                    pass  # an empty or unreadable rewrite keeps the previous keys

    def check(self, presented: str | None) -> bool:
        """True if ``presented`` equals one of the configured keys."""
        if not presented:
            return False
        self._maybe_reload()
        probe = _digest(presented)
        ok = False
        for d in self._digests:  # every key is compared, match or not
            ok |= hmac.compare_digest(probe, d)
        return ok

    def __len__(self) -> int:
        return len(self._digests)


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a request presents: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""
    if x_api_key:
        return x_api_key.strip()
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None
