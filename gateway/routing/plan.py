"""Routing one payload: which routes match, and the requests each one renders.

Ingest and the dry run share this code, so what `gateway test` shows is what `serve` does.
"""

from __future__ import annotations

import base64
import json
import random
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.errors import RenderError
from gateway.model import NewDelivery, OnceKey, RenderedRequest, StoredEvent
from gateway.routing.chain import compiled_snapshot
from gateway.routing.compiled import CompiledRoute
from gateway.routing.conversation import CHANGES
from gateway.routing.payload import payload_view
from gateway.routing.templates import RequestTemplate, template_context

EVENT_ID_HEADER = "X-Gateway-Event-Id"
IDEMPOTENCY_HEADER = "Idempotency-Key"


@dataclass(frozen=True)
class PlannedSend:
    """One request of a matched route. A chained one (`after`) carries its `snapshot`; it has no request yet
    (`waiting_on` its step) unless a dry run was given that step's answer, and an error when its step failed."""

    route: str
    destination: str
    max_attempts: int
    request: RenderedRequest | None
    error: str | None
    index: int = 0  # its place in the route's `send`
    step: str | None = None
    after: str | None = None
    snapshot: bytes | None = None
    forwards_original: bool = False  # the body is the webhook as received

    @property
    def waiting_on(self) -> str | None:
        return self.after if self.request is None and self.error is None else None


@dataclass(frozen=True)
class RouteVerdict:
    """How one route judged one payload. `failed` explains a miss when explanations were asked for; a route whose
    condition held but whose once_per window runs is not matched, and says until when (always listed)."""

    route: str
    matched: bool
    failed: str | None
    sends: tuple[PlannedSend, ...]
    suppressed_until_ms: int | None = None


@dataclass(frozen=True)
class PlanState:
    """What routing knows besides the payload, on a source whose routes need it: the `changes` its routes see
    (None: not kept), each once_per route's key for this event, and the windows running."""

    changes: dict[str, Any] | None = None
    once_keys: Mapping[str, str] = field(default_factory=dict)
    running: Mapping[OnceKey, int] = field(default_factory=dict)


# Ids need to be unique, not unpredictable: a seeded PRNG costs a fraction of os.urandom per call.
_id_bits = random.Random(secrets.randbits(128)).getrandbits


# base64's digits in ASCII order, so that ids sort as the numbers they encode.
_ORDERED_DIGITS = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
    b"-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz",
)


_last_id = 0
_last_id_lock = threading.Lock()


def new_id(prefix: str, now_ms: int) -> str:
    """A unique id that sorts by creation time: `evt_P4TPnp7YmBlD3Xf-`.

    42 bits of milliseconds (until 2109) and 54 random bits in 16 URL-safe characters, where hex
    took 24: every id is stored several times over (rows, indexes, headers). Within one process,
    ids made in the same millisecond follow one another (the random part counts up), so events
    list in the order they arrived.
    """
    global _last_id
    number = (now_ms << 54) | _id_bits(54)
    with _last_id_lock:
        if number >> 54 == _last_id >> 54 and number <= _last_id:
            number = _last_id + 1
        _last_id = number
    return f"{prefix}_{base64.b64encode(number.to_bytes(12, 'big')).translate(_ORDERED_DIGITS).decode()}"


def plan(
    routes: list[CompiledRoute],
    payload: Any,
    original: bytes,
    event: Mapping[str, Any],
    explain: bool = False,
    answers: Mapping[str, Mapping[str, Any]] | None = None,
    state: PlanState | None = None,
) -> list[RouteVerdict]:
    """Judge every route in order, rendering the requests of those that match; `original` is the body `payload`
    was parsed from.

    A route with `continue: false` that matches ends the walk; the routes after it are
    reported as not matched, with the reason when `explain` is set. Chained requests wait for
    their step, unless `answers` (a dry run's sample answers, as `steps.<id>` shows them) has it.
    """
    changes = state.changes if state is not None else None
    view = payload_view(payload)
    if changes is not None and isinstance(view, dict):
        view = {**view, CHANGES: changes}
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
        until_ms = _running_until(route, state)
        if until_ms is not None:
            reason = f"suppressed by once_per until {utc_text(until_ms)}"
            verdicts.append(RouteVerdict(route.name, False, reason, (), suppressed_until_ms=until_ms))
            continue
        if context is None:
            context = template_context(payload, event, original, changes)
        verdicts.append(RouteVerdict(route.name, True, None, tuple(_render(route, context, event, answers or {}))))
        if route.stop:
            stopped_by = route.name
    return verdicts


def _running_until(route: CompiledRoute, state: PlanState | None) -> int | None:
    key = state.once_keys.get(route.name) if state is not None else None
    return state.running.get((route.name, key)) if state is not None and key is not None else None


def once_keys(
    routes: list[CompiledRoute], payload: Any, original: bytes, event: Mapping[str, Any]
) -> tuple[dict[str, str], dict[str, str]]:
    """Each once_per route's key for this event, and why a key could not be rendered (that route is not limited)."""
    keys: dict[str, str] = {}
    errors: dict[str, str] = {}
    context = template_context(payload, event, original)
    for route in routes:
        if route.once_per is None:
            continue
        try:
            keys[route.name] = route.once_per.key_for(context)
        except RenderError as exc:
            errors[route.name] = str(exc)
    return keys, errors


def windows_opened(
    routes: list[CompiledRoute], verdicts: list[RouteVerdict], keys: Mapping[str, str], now_ms: int
) -> dict[OnceKey, int]:
    """The once_per windows the matched routes open, and when each ends."""
    windows = {route.name: route.once_per.window_ms for route in routes if route.once_per is not None}
    return {
        (verdict.route, keys[verdict.route]): now_ms + windows[verdict.route]
        for verdict in verdicts
        if verdict.matched and verdict.route in windows and verdict.route in keys
    }


def utc_text(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _render(
    route: CompiledRoute, context: Mapping[str, Any], event: Mapping[str, Any], answers: Mapping[str, Any]
) -> list[PlannedSend]:
    planned: list[PlannedSend] = []
    seen: dict[str, dict[str, Any]] = {}  # step id -> the steps its templates saw
    by_step: dict[str, PlannedSend] = {}
    for index, send in enumerate(route.sends):
        steps: dict[str, Any] = {}
        request: RenderedRequest | None = None
        error: str | None = None
        before = by_step.get(send.after) if send.after is not None else None
        if send.after is None:
            request, error = _request(send.template, context, event, route.name, index)
        elif before is None or before.error is not None:
            error = f"step {send.after} failed"
        elif before.request is not None and send.after in answers:
            steps = {**seen.get(send.after, {}), send.after: answers[send.after]}
            request, error = _request(send.template, {**context, "steps": steps}, event, route.name, index)
        one = PlannedSend(route.name, send.destination, send.max_attempts, request, error, index, send.step,
                          send.after, send.snapshot, send.template.forwards_original)
        planned.append(one)
        if send.step is not None:
            by_step[send.step], seen[send.step] = one, steps
    return planned


def _request(
    template: RequestTemplate, context: Mapping[str, Any], event: Mapping[str, Any], route: str, index: int
) -> tuple[RenderedRequest | None, str | None]:
    try:
        request = template.render(context)
    except RenderError as exc:
        return None, str(exc)
    # Stable across retries and replays, so receivers can drop duplicates.
    request.headers.setdefault(EVENT_ID_HEADER, str(event["id"]))
    request.headers.setdefault(IDEMPOTENCY_HEADER, f"{event['id']}:{route}:{index}")
    return request, None


def event_context(event: StoredEvent) -> dict[str, Any]:
    """`event` as templates see it, for a stored event rendered again (chains, replay with re-rendering)."""
    return {"id": event.id, "source": event.source, "received_at": event.received_at_ms / 1000}


def stored_changes(event: StoredEvent) -> dict[str, Any] | None:
    """The `changes` a stored event's routes saw (None: its source kept no conversations)."""
    changes: dict[str, Any] | None = json.loads(event.changes) if event.changes is not None else None
    return changes


def render_chained(blob: bytes, route: str, payload: Any, event: StoredEvent, steps: Mapping[str, Any]
                   ) -> RenderedRequest:
    """A chained delivery's request, from its snapshot, its stored event and its steps' answers; raises RenderError."""
    index, template = compiled_snapshot(blob)
    meta = event_context(event)
    context = {**template_context(payload, meta, event.body, stored_changes(event)), "steps": steps}
    request, error = _request(template, context, meta, route, index)
    if request is None:
        raise RenderError(error)
    return request


def to_deliveries(verdicts: list[RouteVerdict], now_ms: int) -> list[NewDelivery]:
    deliveries: list[NewDelivery] = []
    for verdict in verdicts:
        by_step: dict[str, str] = {}
        for send in verdict.sends:
            delivery_id = new_id("dlv", now_ms)
            if send.step is not None:
                by_step[send.step] = delivery_id
            after = by_step.get(send.after) if send.after is not None else None
            deliveries.append(NewDelivery(
                id=delivery_id, route=send.route, destination=send.destination, max_attempts=send.max_attempts,
                request=send.request, error=send.error, step=send.step, after=after, template=send.snapshot,
            ))  # fmt: skip
    return deliveries
