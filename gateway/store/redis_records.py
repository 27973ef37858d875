"""How the Redis store's records are written as hash fields and script arguments, and read back."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from gateway.model import (
    ConversationState,
    Delivery,
    DeliveryFilter,
    DeliveryStatus,
    NewDelivery,
    NewEvent,
    Release,
    RenderedRequest,
    StateKeys,
    StateSnapshot,
    StateWrite,
)


def counted(fields: Mapping[str, Any]) -> list[Any]:
    """A record as script arguments: its number of fields, then field, value, field, value..."""
    return [len(fields), *(item for pair in fields.items() for item in pair)]


def new_delivery_fields(event: NewEvent, new: NewDelivery) -> dict[str, Any]:
    at_ms = event.received_at_ms
    fields: dict[str, Any] = {
        "id": new.id, "event_id": event.id, "route": new.route, "destination": new.destination,
        "status": new.status.value, "attempts": 0, "max_attempts": new.max_attempts, "next_attempt_at_ms": at_ms,
        "created_at_ms": at_ms, "updated_at_ms": at_ms,
    }  # fmt: skip
    if new.request is not None:
        fields.update(request_fields(new.request))
    optional = {"last_error": new.error, "step": new.step, "after": new.after, "template": new.template}
    fields.update((name, value) for name, value in optional.items() if value is not None)
    return fields


def release_fields(release: Release) -> dict[str, Any]:
    """What a freed chained delivery becomes: pending with its request, or dead with the error."""
    if release.request is not None:
        fields: dict[str, Any] = {"status": DeliveryStatus.PENDING.value, **request_fields(release.request)}
    else:
        fields = {"status": DeliveryStatus.DEAD.value, "last_error": release.error or ""}
    if release.steps is not None:
        fields["steps"] = release.steps
    return fields


def request_fields(request: RenderedRequest) -> dict[str, Any]:
    return {"method": request.method, "url": request.url, "headers": json.dumps(request.headers),
            "body": request.body, "untrusted_host": int(request.untrusted_host)}  # fmt: skip


def pairs(flat: Iterable[bytes]) -> dict[bytes, bytes]:
    items = iter(flat)
    return dict(zip(items, items, strict=True))


def read_delivery(fields: Mapping[bytes, bytes]) -> Delivery:
    def text(name: bytes) -> str | None:
        value = fields.get(name)
        return None if value is None else value.decode()

    def number(name: bytes) -> int:
        return int(fields[name])

    request = None
    if b"method" in fields:
        headers = json.loads(fields[b"headers"])
        untrusted = fields.get(b"untrusted_host") == b"1"
        method, url = fields[b"method"].decode(), fields[b"url"].decode()
        request = RenderedRequest(method, url, headers, fields[b"body"], untrusted)
    return Delivery(
        id=fields[b"id"].decode(),
        event_id=fields[b"event_id"].decode(),
        route=fields[b"route"].decode(),
        destination=fields[b"destination"].decode(),
        status=DeliveryStatus(fields[b"status"].decode()),
        attempts=number(b"attempts"),
        max_attempts=number(b"max_attempts"),
        next_attempt_at_ms=number(b"next_attempt_at_ms"),
        created_at_ms=number(b"created_at_ms"),
        updated_at_ms=number(b"updated_at_ms"),
        request=request,
        last_error=text(b"last_error"),
        lease_token=text(b"lease_token"),
        step=text(b"step"),
        after=text(b"after"),
        template=fields.get(b"template"),
        steps=fields.get(b"steps"),
        quota_waits=int(fields.get(b"quota_waits", 0)),
    )


def matches(delivery: Delivery, where: DeliveryFilter) -> bool:
    wanted = (
        (where.status, delivery.status),
        (where.route, delivery.route),
        (where.destination, delivery.destination),
        (where.event_id, delivery.event_id),
    )
    if any(want is not None and want != have for want, have in wanted):
        return False
    if where.ids is not None and delivery.id not in where.ids:
        return False
    return where.since_ms is None or delivery.created_at_ms >= where.since_ms


def pair_key(pair: tuple[str, str]) -> str:
    """`<source>:<conversation id>` or `<route>:<once_per key>`, as keys and the conversations zset name them."""
    return f"{pair[0]}:{pair[1]}"


def state_arguments(state: StateWrite | None) -> list[Any]:
    """INGEST's state arguments (none without a state to write)."""
    if state is None:
        return []
    keys, new = state.keys, state.conversation
    args: list[Any] = [
        pair_key(keys.conversation) if keys.conversation else "", state.seen.version,
        new.to_json() if new is not None else "", new.last_seen_ms if new is not None else "",
    ]  # fmt: skip
    for once in keys.once:
        running, opened = state.seen.once_until_ms.get(once), state.once_until_ms.get(once)
        args += [pair_key(once), "" if running is None else running, "" if opened is None else opened]
    return args


def snapshot(keys: StateKeys, replies: list[Any], now_ms: int) -> StateSnapshot:
    """The state from read_state's pipeline: the conversation's HMGET (when asked), then each window's GET."""
    conversation, version = None, 0
    if keys.conversation is not None:
        (stored_version, last_seen_ms, state), *replies = replies
        if stored_version is not None:
            version = int(stored_version)
            conversation = ConversationState.from_json(state, int(last_seen_ms))
    running = {once: int(until) for once, until in zip(keys.once, replies, strict=True)
               if until is not None and int(until) > now_ms}  # fmt: skip
    return StateSnapshot(conversation, version, running)
