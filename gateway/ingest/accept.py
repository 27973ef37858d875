"""Accepting one webhook: verify, parse, dedupe, route, render and store it durably."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gateway.ingest.rendering import quick_or_in_a_thread
from gateway.ingest.signature import verify
from gateway.ingest.stateful import route_and_store
from gateway.model import IngestResult, NewDelivery, NewEvent, event_facts
from gateway.routing.compiled import LoadedConfig
from gateway.routing.payload import is_validation_request, parse_payload
from gateway.routing.plan import new_id, plan, to_deliveries
from gateway.store.base import Store, dedupe_key

log = logging.getLogger("gateway.ingest")

@dataclass(frozen=True)
class Accepted:
    """What ingest did with a request; `result` is None for a validation request."""

    result: IngestResult | None
    routes: tuple[str, ...] = ()
    dead: tuple[str, ...] = ()  # destinations of the deliveries whose template failed: stored as dead letters
    suppressed: tuple[str, ...] = ()  # routes whose condition held while their once_per window ran


async def accept(
    config: LoadedConfig, store: Store, source: str, body: bytes, signature: str | None, now_ms: int
) -> Accepted:
    """Run the whole ingest path; raises SignatureError, PayloadError or StoreUnavailable."""
    if is_validation_request(body):
        return Accepted(None)
    source_config = config.config.sources[source]
    if source_config.secrets:
        verify([secret.get_secret_value().encode() for secret in source_config.secrets], body, signature)
    payload = parse_payload(body)
    if not isinstance(payload, dict) or "rule" not in payload:
        return Accepted(None)
    event_id = new_id("evt", now_ms)
    event_meta = {"id": event_id, "source": source, "received_at": now_ms / 1000}
    event = NewEvent(event_id, source, now_ms, body, dedupe_key(body), event_facts(payload))
    dedupe_window_ms = int(source_config.dedupe_window * 1000)
    if config.state_of(source):
        routed = await route_and_store(config, store, event, payload, event_meta, dedupe_window_ms)
        result, verdicts, deliveries = routed.result, routed.verdicts, routed.deliveries
    else:
        routes = config.routes_for(source)
        verdicts = await quick_or_in_a_thread(plan, routes, payload, body, event_meta)
        deliveries = to_deliveries(verdicts, now_ms)
        result = await store.ingest(event, deliveries, dedupe_window_ms)
    matched = tuple(verdict.route for verdict in verdicts if verdict.matched)
    suppressed = tuple(verdict.route for verdict in verdicts if verdict.suppressed_until_ms is not None)
    if result.duplicate:
        log.info(
            "event %s from %s is a duplicate of %s; not routed again", event_id, source, result.event_id,
            extra={"event_id": result.event_id, "source": source, "outcome": "duplicate"},
        )
        return Accepted(result)
    log.info(
        "event %s from %s stored: routes %s, %d deliveries%s", event_id, source, list(matched), len(deliveries),
        f"; suppressed by once_per: {list(suppressed)}" if suppressed else "",
        extra={
            "event_id": event_id, "source": source, "outcome": "accepted", "routes": list(matched),
            "deliveries": len(deliveries), **({"suppressed": list(suppressed)} if suppressed else {}),
        },
    )
    dead = [delivery for delivery in deliveries if delivery.request is None]
    for delivery in dead:
        _log_dead_at_ingest(event_id, delivery)
    return Accepted(result, matched, tuple(delivery.destination for delivery in dead), suppressed)


def _log_dead_at_ingest(event_id: str, delivery: NewDelivery) -> None:
    """A template failed on this event: the delivery is stored as a dead letter, which someone must see."""
    log.warning(
        "delivery %s dead at ingest: route=%s destination=%s error=%s",
        delivery.id, delivery.route, delivery.destination, delivery.error,
        extra={
            "delivery_id": delivery.id, "event_id": event_id, "route": delivery.route,
            "destination": delivery.destination, "outcome": "dead",
        },
    )
