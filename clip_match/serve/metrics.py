"""The server's Prometheus metrics, in a registry of their own (one per app, so several apps in one
process, as in the tests, do not collide in prometheus-client's global registry)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48)


disable_created_metrics()  # (no "_created" twin of every series: the server's scrape stays short)


class Metrics:
    """Requests and errors by endpoint and status, latencies, encoder calls, queue depth."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        prefix = "clip_match_"
        self.requests = Counter(prefix + "requests", "HTTP requests answered", ("endpoint", "status"),
                                registry=self.registry)
        self.errors = Counter(prefix + "request_errors", "HTTP requests answered with a 4xx or 5xx status",
                              ("endpoint", "status"), registry=self.registry)
        self.latency = Histogram(prefix + "request_seconds", "Time from the request's start to its answer",
                                 ("endpoint",), buckets=LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge(prefix + "requests_in_flight", "Requests admitted to /v1 and not yet answered",
                               registry=self.registry)
        self.queue_depth = Gauge(prefix + "queue_depth", "Encode jobs waiting for the encoder", ("bundle",),
                                 registry=self.registry)
        self.batch_inputs = Histogram(prefix + "encoder_batch_inputs", "Images or texts per encoder call",
                                      ("bundle", "tower"), buckets=SIZE_BUCKETS, registry=self.registry)
        self.batch_requests = Histogram(prefix + "encoder_batch_requests", "Requests served by one encoder call",
                                        ("bundle", "tower"), buckets=SIZE_BUCKETS, registry=self.registry)
        self.encoder_seconds = Histogram(prefix + "encoder_seconds", "Time of one encoder call",
                                         ("bundle", "tower"), buckets=LATENCY_BUCKETS, registry=self.registry)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
