"""Prometheus metrics, one registry per application so several apps (and tests) never share counters.

Under `serve --processes N` (PROMETHEUS_MULTIPROC_DIR set by the supervisor) every process writes its
values to that folder, and a scrape, whichever process answers it, reports them summed over all.

Label values are source, route and destination names from the config (never URLs), and
small fixed sets of outcomes.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.errors import ClientGone, GatewayError, PayloadError, SignatureError, StoreUnavailable
from gateway.ingest.accept import Accepted
from gateway.model import AttemptResult, Delivery, DeliveryStatus
from gateway.routing.compiled import LoadedConfig
from gateway.store.base import Store

log = logging.getLogger("gateway.metrics")

EVENT_OUTCOMES = (
    "accepted", "duplicate", "bad_signature", "too_large", "bad_json", "bad_encoding", "timeout", "client_gone",
    "validation", "unavailable",
)
_PAYLOAD_OUTCOMES = {413: "too_large", 415: "bad_encoding", 408: "timeout"}  # any other PayloadError: bad_json
FINAL_OUTCOMES = (DeliveryStatus.DELIVERED.value, DeliveryStatus.DEAD.value)
RELOAD_RESULTS = ("applied", "failed")
# From a fraction of a second (a healthy destination) to a day (retries through an outage).
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
STATS_TIMEOUT_S = 2.0
QUEUE_READ_INTERVAL_MS = 1000
# What generate_latest writes; every Prometheus version reads it.
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client reads it when imported


class Metrics:
    """The gateway's counters, gauges and histogram, in their own CollectorRegistry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.shared_dir = os.environ.get(MULTIPROCESS_DIR_ENV)
        if self.shared_dir is None:
            ProcessCollector(registry=self.registry)
        self.events = Counter(
            "gateway_events_received", "Webhook requests by source and outcome.", ["source", "outcome"],
            registry=self.registry,
        )
        self.route_matches = Counter(
            "gateway_route_matches", "Events matched, by route.", ["route"], registry=self.registry
        )
        self.suppressed = Counter(
            "gateway_route_suppressed", "Events a route's condition held for while its once_per window ran, by route.",
            ["route"], registry=self.registry,
        )
        self.deliveries = Counter(
            "gateway_deliveries", "Deliveries finished, by destination and final outcome (delivered, dead).",
            ["destination", "outcome"], registry=self.registry,
        )
        self.attempts = Counter(
            "gateway_delivery_attempts",
            "Delivery attempts by destination and result: 2xx..5xx, timeout, connection, invalid, token, not_sent.",
            ["destination", "result"], registry=self.registry,
        )
        self.latency = Histogram(
            "gateway_delivery_latency_seconds", "From event received to delivered, by destination.",
            ["destination"], buckets=LATENCY_BUCKETS_S, registry=self.registry,
        )
        # The queue gauges are the store's figures, the same whichever process read them last.
        self.pending = Gauge(
            "gateway_queue_pending", "Deliveries waiting to be sent.", registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.oldest_due_age = Gauge(
            "gateway_queue_oldest_due_age_seconds", "How long the most overdue pending delivery has been due.",
            registry=self.registry, multiprocess_mode="mostrecent",
        )
        self.dead = Gauge(
            "gateway_dead_letters", "Deliveries given up on, kept for replay.", registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.reloads = Counter(
            "gateway_config_reloads", "Config reloads by result (applied, failed).", ["result"],
            registry=self.registry,
        )
        for result in RELOAD_RESULTS:
            self.reloads.labels(result)
        self._children: dict[tuple[object, ...], Any] = {}
        self._queue_read = asyncio.Lock()
        self._queue_read_at_ms: int | None = None

    def _child(self, metric: Counter | Histogram, *labels: str) -> Any:
        """`metric.labels(*labels)`, found once: labels() takes a lock and builds a key on every call."""
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def track_config(self, loaded: LoadedConfig) -> None:
        """Show the config's sources, routes and destinations at 0 before anything happens to them."""
        for source in loaded.config.sources:
            for outcome in EVENT_OUTCOMES:
                self.events.labels(source, outcome)
        for route in loaded.routes:
            self.route_matches.labels(route.name)
            if route.once_per is not None:
                self.suppressed.labels(route.name)
        for destination in loaded.config.destinations:
            for final in FINAL_OUTCOMES:
                self.deliveries.labels(destination, final)

    def ingested(self, source: str, accepted: Accepted) -> None:
        result = accepted.result
        outcome = "validation" if result is None else "duplicate" if result.duplicate else "accepted"
        self._child(self.events, source, outcome).inc()
        for route in accepted.routes:
            self._child(self.route_matches, route).inc()
        for route in accepted.suppressed:
            self._child(self.suppressed, route).inc()
        for destination in accepted.dead:  # a template failed: dead before any attempt
            self._child(self.deliveries, destination, DeliveryStatus.DEAD.value).inc()

    def rejected(self, source: str, error: GatewayError) -> None:
        self._child(self.events, source, rejection_outcome(error)).inc()

    def attempted(self, delivery: Delivery, result: AttemptResult) -> None:
        """The worker's `on_attempt` callback."""
        self._child(self.attempts, delivery.destination, attempt_result(result)).inc()
        if result.status is DeliveryStatus.PENDING:
            return
        self._child(self.deliveries, delivery.destination, result.status.value).inc()
        if result.status is DeliveryStatus.DELIVERED:
            attempt = result.attempt
            finished_at_ms = attempt.started_at_ms + attempt.elapsed_ms
            latency_s = max(0.0, finished_at_ms - delivery.created_at_ms) / 1000
            self._child(self.latency, delivery.destination).observe(latency_s)

    def reloaded(self, applied: bool) -> None:
        self.reloads.labels("applied" if applied else "failed").inc()

    async def refresh_queue(self, store: Store, now_ms: int) -> None:
        """Set the queue gauges from `store.stats()` unless they were read less than QUEUE_READ_INTERVAL_MS ago, so
        scrapes, however frequent, cost the store one read a second at most. On a store outage they keep their
        last values."""
        async with self._queue_read:  # concurrent scrapes wait for one read, then share it
            if self._queue_read_at_ms is not None and now_ms - self._queue_read_at_ms < QUEUE_READ_INTERVAL_MS:
                return
            self._queue_read_at_ms = now_ms
            try:
                async with asyncio.timeout(STATS_TIMEOUT_S):
                    stats = await store.stats()
            except (StoreUnavailable, TimeoutError) as exc:
                log.warning("queue gauges not refreshed: %s", exc or "the store did not answer in time")
                return
        self.pending.set(stats.pending)
        self.dead.set(stats.dead)
        oldest_ms = stats.oldest_due_ms
        self.oldest_due_age.set(max(0, now_ms - oldest_ms) / 1000 if oldest_ms is not None else 0)


def rejection_outcome(error: GatewayError) -> str:
    if isinstance(error, SignatureError):
        return "bad_signature"
    if isinstance(error, PayloadError):
        return _PAYLOAD_OUTCOMES.get(error.status, "bad_json")
    if isinstance(error, ClientGone):
        return "client_gone"
    return "unavailable"


def attempt_result(result: AttemptResult) -> str:
    """`2xx`..`5xx` for an answer; otherwise the failure kind that starts the error (see gateway.delivery.classify)."""
    attempt = result.attempt
    if attempt.status_code is not None:
        return f"{attempt.status_code // 100}xx"
    kind = (attempt.error or "").partition(":")[0]
    return kind if kind in ("timeout", "connection", "invalid", "blocked", "token") else "not_sent"


def exposition(metrics: Metrics) -> web.Response:
    """The registry in Prometheus' text format (every process's values, under `--processes`)."""
    registry = metrics.registry
    if metrics.shared_dir is not None:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=metrics.shared_dir)  # type: ignore[no-untyped-call]
    return web.Response(body=generate_latest(registry), headers={"Content-Type": TEXT_FORMAT})


METRICS = web.AppKey("metrics", Metrics)
