"""Request metrics: one ``observe(endpoint, outcome, code, seconds)`` per HTTP request.

Inside a Ray Serve replica this feeds ``ray.serve.metrics`` (exported to Prometheus with the
deployment, replica and application tags Serve adds):

- ``leaml_vqa_requests_total{endpoint, outcome, code}``: a counter per outcome;
- ``leaml_vqa_request_latency_ms{endpoint, outcome}``: a latency histogram.

Outside Serve (unit tests, a plain ASGI server) :class:`LocalMetrics` keeps the same numbers in
memory, so tests can assert them and nothing needs a Ray cluster. All labels come from small fixed
sets (route templates, outcomes, error codes), never from request content.
"""
from __future__ import annotations

import bisect
import threading
from collections import Counter
from typing import Literal, Protocol

Outcome = Literal["ok", "rejected", "unauthorized", "error"]
LATENCY_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)


def outcome_of(status: int) -> Outcome:
    """``ok`` (2xx/3xx), ``unauthorized`` (401), ``rejected`` (other 4xx), ``error`` (5xx)."""
    if status >= 500:
        return "error"
    if status == 401:
        return "unauthorized"
    if status >= 400:
        return "rejected"
    return "ok"


class Metrics(Protocol):
    def observe(self, endpoint: str, outcome: Outcome, code: str, seconds: float) -> None: ...


class LocalMetrics:
    """In-memory counters and histogram buckets: the shim used when not running in Serve."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str, str]] = Counter()
        self.latency_buckets: Counter[tuple[str, str, float]] = Counter()  # (endpoint, outcome, le)

    def observe(self, endpoint: str, outcome: Outcome, code: str, seconds: float) -> None:
        ms = seconds * 1000.0
        i = bisect.bisect_left(LATENCY_BUCKETS_MS, ms)
        le = float(LATENCY_BUCKETS_MS[i]) if i < len(LATENCY_BUCKETS_MS) else float("inf")
        with self._lock:
            self.requests[(endpoint, outcome, code)] += 1
            self.latency_buckets[(endpoint, outcome, le)] += 1

    def count(self, endpoint: str | None = None, outcome: str | None = None, code: str | None = None) -> int:
        """Requests matching the given labels (``None`` matches any)."""
        with self._lock:
            return sum(
                n for (e, o, c), n in self.requests.items()
                if endpoint in (None, e) and outcome in (None, o) and code in (None, c)
            )


class ServeMetrics:
    """``ray.serve.metrics`` counter + histogram; only constructible inside a Serve replica."""

    def __init__(self) -> None:
        from ray.serve import metrics

        self._requests = metrics.Counter(
            "leaml_vqa_requests",  # Prometheus shows it as leaml_vqa_requests_total
            description="VQA service HTTP requests by endpoint, outcome and error code.",
            tag_keys=("endpoint", "outcome", "code"),
        )
        self._latency = metrics.Histogram(
            "leaml_vqa_request_latency_ms",
            description="VQA service request latency in milliseconds, from first byte to response.",
            boundaries=list(LATENCY_BUCKETS_MS),
            tag_keys=("endpoint", "outcome"),
        )

    def observe(self, endpoint: str, outcome: Outcome, code: str, seconds: float) -> None:
        self._requests.inc(1, tags={"endpoint": endpoint, "outcome": outcome, "code": code})
        self._latency.observe(seconds * 1000.0, tags={"endpoint": endpoint, "outcome": outcome})


def in_serve_replica() -> bool:
    """True inside a Ray Serve replica (checked without importing Ray when it is not loaded)."""
    import sys

    if "ray.serve" not in sys.modules:
        return False
    from ray import serve
    from ray.serve.exceptions import RayServeException

    try:
        serve.get_replica_context()
    except RayServeException:
        return False
    return True


def build_metrics() -> Metrics:
    """:class:`ServeMetrics` inside a Serve replica, else :class:`LocalMetrics`."""
    return ServeMetrics() if in_serve_replica() else LocalMetrics()
