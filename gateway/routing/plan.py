"""Routing one payload: which routes match, and the requests each one renders.

Ingest and the dry run share this code, so what `gateway test` shows is what `serve` does.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import RenderError
from gateway.model import NewDelivery, RenderedRequest
from gateway.routing.compiled import CompiledRoute
from gateway.routing.payload import payload_view
from gateway.routing.templates import template_context

EVENT_ID_HEADER = "X-Gateway-Event-Id"
IDEMPOTENCY_HEADER = "Idempotency-Key"


@dataclass(frozen=True)
class PlannedSend:
    route: str
    destination: str
    max_attempts: int
    request: RenderedRequest | None
    error: str | None


@dataclass(frozen=True)
class RouteVerdict:
    """How one route judged one payload. `failed` explains a miss when explanations were asked for."""

    route: str
    matched: bool
    failed: str | None
    sends: tuple[PlannedSend, ...]


# Ids need to be unique, not unpredictable: a seeded PRNG costs a fraction of os.urandom per call.
_id_bits = random.Random(secrets.randbits(128)).getrandbits


def new_id(prefix: str, now_ms: int) -> str:
    """A unique id that sorts by creation time: `evt_0192a4c3e1b29f3a1c0b4d`."""
    return f"{prefix}_{now_ms:012x}{_id_bits(48):012x}"


def plan(
    routes: list[CompiledRoute], payload: Any, original: bytes, event: Mapping[str, Any], explain: bool = False
) -> list[RouteVerdict]:
    """Judge every route in order, rendering the requests of those that match; `original` is the body `payload`
    was parsed from.

    A route with `continue: false` that matches ends the walk; the routes after it are
    reported as not matched, with the reason when `explain` is set.
    """
    view = payload_view(payload)
    context: dict[str, Any] | None = None
    verdicts: list[RouteVerdict] = []
    stopped_by: str | None = None
    for route in routes:
        if stopped_by is not None:
            if explain:
                reason = f"not evaluated: route '{stopped_by}' has continue: false"
                verdicts.append(RouteVerdict(route.name, False, reason, ()))
            continue
        if route.predicate is not None and not route.predicate.matches(view):
            if explain:
                verdicts.append(RouteVerdict(route.name, False, route.predicate.explain(view), ()))
            continue
        if context is None:
            context = template_context(payload, event, original)
        verdicts.append(RouteVerdict(route.name, True, None, tuple(_render(route, context, event))))
        if route.stop:
            stopped_by = route.name
    return verdicts


def _render(route: CompiledRoute, context: Mapping[str, Any], event: Mapping[str, Any]) -> list[PlannedSend]:
    planned = []
    for index, send in enumerate(route.sends):
        try:
            request = send.template.render(context)
        except RenderError as exc:
            planned.append(PlannedSend(route.name, send.destination, send.max_attempts, None, str(exc)))
            continue
        # Stable across retries and replays, so receivers can drop duplicates.
        request.headers.setdefault(EVENT_ID_HEADER, str(event["id"]))
        request.headers.setdefault(IDEMPOTENCY_HEADER, f"{event['id']}:{route.name}:{index}")
        planned.append(PlannedSend(route.name, send.destination, send.max_attempts, request, None))
    return planned


def to_deliveries(verdicts: list[RouteVerdict], now_ms: int) -> list[NewDelivery]:
    return [
        NewDelivery(
            id=new_id("dlv", now_ms),
            route=send.route,
            destination=send.destination,
            max_attempts=send.max_attempts,
            request=send.request,
            error=send.error,
        )
        for verdict in verdicts
        for send in verdict.sends
    ]
