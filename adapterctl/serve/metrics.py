"""Prometheus metrics of one server (its own registry, so several servers can live in one
process, as in the tests): requests, latency, batch sizes, and what clients abandoned."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

SIZES = (1, 2, 4, 8, 16, 32, 64, 128)
SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("adapterctl_requests", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("adapterctl_request_seconds", "HTTP request latency by route", ["route"],
                                 buckets=SECONDS, registry=r)
        self.batch_rows = Histogram("adapterctl_batch_rows", "rows per mixed batch", buckets=SIZES, registry=r)
        self.batch_adapters = Histogram("adapterctl_batch_adapters", "distinct adapters per mixed batch",
                                        buckets=SIZES, registry=r)
        self.batch_seconds = Histogram("adapterctl_batch_seconds", "model time per mixed batch", buckets=SECONDS,
                                       registry=r)
        self.queue_seconds = Histogram("adapterctl_queue_seconds", "time a row waits for its batch", buckets=SECONDS,
                                       registry=r)
        self.cancelled = Counter("adapterctl_rows_cancelled", "queued rows dropped because their client left",
                                 registry=r)
        self.disconnects = Counter("adapterctl_client_disconnects", "requests whose client left before the answer",
                                   registry=r)
        self.generated_tokens = Counter("adapterctl_generated_tokens", "tokens generated (POST /v1/generate)",
                                        registry=r)
        self.adapters = Gauge("adapterctl_adapters_loaded", "adapters loaded", registry=r)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
