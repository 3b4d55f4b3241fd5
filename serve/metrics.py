"""Prometheus metrics of one app instance (its own registry: two apps in one process never mix).

Counters and the latency histogram are updated by the HTTP middleware and the chat service;
engine gauges (queue depth, running, batch size) are read from `engine.stats()` at scrape time.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """The gateway's metrics."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("openvlthinker_http_requests_total", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("openvlthinker_http_request_seconds", "HTTP latency until the response ends",
                                 ["route"], buckets=_BUCKETS, registry=r)
        self.tokens = Counter("openvlthinker_tokens_total", "tokens processed", ["kind"], registry=r)
        self.version_requests = Counter("openvlthinker_version_requests_total",
                                        "chat completions by served version", ["version"], registry=r)
        self.completions = Counter("openvlthinker_completions_total", "choices by finish reason and mode",
                                   ["finish_reason", "mode"], registry=r)
        self.queue_depth = Gauge("openvlthinker_engine_queue_depth", "requests waiting in the engine", registry=r)
        self.running = Gauge("openvlthinker_engine_running", "sequences being decoded", registry=r)
        self.batch_size = Gauge("openvlthinker_engine_batch_size", "size of the last decode batch", registry=r)
        self.restarts = Gauge("openvlthinker_engine_restarts", "times the engine's child process was restarted",
                              registry=r)
        self.in_flight = Gauge("openvlthinker_in_flight_requests", "chat requests in flight", registry=r)

    def record_completion(self, version: str | None, prompt_tokens: int, completion_tokens: int,
                          reasoning_tokens: int, finishes: list[tuple[str, str]]) -> None:
        self.version_requests.labels(version or "base").inc()
        self.tokens.labels("prompt").inc(prompt_tokens)
        self.tokens.labels("completion").inc(completion_tokens)
        self.tokens.labels("reasoning").inc(reasoning_tokens)
        for finish_reason, mode in finishes:
            self.completions.labels(finish_reason, mode).inc()

    def render(self, engine_stats: dict[str, Any]) -> bytes:
        self.queue_depth.set(float(engine_stats.get("queue_depth", 0)))
        self.running.set(float(engine_stats.get("running", 0)))
        self.batch_size.set(float(engine_stats.get("last_batch_size", 0)))
        self.restarts.set(float(engine_stats.get("restarts", 0)))
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware: count every HTTP response by route template and status, time it."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def _send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = scope.get("route")
            # Label by route template (/v1/images/{sha256}), not the raw path: bounded cardinality.
            name = getattr(route, "path", None) or "unmatched"
            m = self.metrics
            m.requests.labels(scope.get("method", ""), name, str(status)).inc()
            m.latency.labels(name).observe(time.perf_counter() - start)
