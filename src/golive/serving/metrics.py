"""Prometheus metrics of the inference server, in a registry of its own (never the process-global one)."""

from __future__ import annotations

__all__ = ["Metrics"]

_LATENCY = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "golive_requests",
            "Inference requests by model, protocol and outcome",
            ["model", "protocol", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "golive_request_seconds", "Request latency, received to answered", ["model"], buckets=_LATENCY, registry=self.registry
        )
        self.queue_time = Histogram(
            "golive_queue_seconds", "Time a request waited for the session", ["model"], buckets=_LATENCY, registry=self.registry
        )
        self.compute_time = Histogram(
            "golive_compute_seconds", "Time of one session run (one batch)", ["model"], buckets=_LATENCY, registry=self.registry
        )
        self.batch_size = Histogram(
            "golive_batch_size", "Rows per session run", ["model"], buckets=_BATCH, registry=self.registry
        )
        self.pending = Gauge("golive_pending_requests", "Requests waiting or running", ["model"], registry=self.registry)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
