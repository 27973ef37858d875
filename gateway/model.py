"""The records that move between ingest, the store and the worker."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

SUBJECT_CHARS = 500

# Where an event's lookup facts are found in a Missive payload: the first string found wins.
# Ingest reads them (`event_facts`), and the stores fill them in for events stored before they were kept.
FACT_PATHS: dict[str, tuple[tuple[str, ...], ...]] = {
    "conversation_id": (("conversation", "id"),),
    "subject": (
        ("conversation", "subject"), ("conversation", "latest_message_subject"), ("message", "subject"),
        ("latest_message", "subject"),
    ),
    "sender": (
        ("message", "from_field", "address"), ("latest_message", "from_field", "address"),
        ("comment", "author", "email"),
    ),
    "rule_type": (("rule", "type"),),
}  # fmt: skip


class DeliveryStatus(StrEnum):
    """Where a delivery stands. `pending` covers both "due" and "claimed by a worker"; `held` is a chained
    request held until the step it runs after is delivered (it has no request yet)."""

    PENDING = "pending"
    HELD = "held"
    DELIVERED = "delivered"
    DEAD = "dead"


@dataclass(frozen=True)
class RenderedRequest:
    """The exact request a destination will receive; rendered once, at ingest.

    `untrusted_host`: the URL's scheme, host or port came from a template (so perhaps from the payload): it is
    sent only to a public address, unless its destination sets `allow_private_hosts`.
    """

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    untrusted_host: bool = False


@dataclass(frozen=True)
class EventFacts:
    """What an event is looked up by: its conversation, subject, sender address (lower case) and rule type."""

    conversation_id: str | None = None
    subject: str | None = None
    sender: str | None = None
    rule_type: str | None = None


def event_facts(payload: Any) -> EventFacts:
    """The lookup facts of a parsed payload (see FACT_PATHS); the subject is cut at SUBJECT_CHARS."""
    found: dict[str, str] = {}
    for name, paths in FACT_PATHS.items():
        for path in paths:
            value = payload
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            if isinstance(value, str) and value:
                found[name] = value
                break
    if "subject" in found:
        found["subject"] = found["subject"][:SUBJECT_CHARS]
    if "sender" in found:
        found["sender"] = found["sender"].lower()
    return EventFacts(**found)


@dataclass(frozen=True)
class NewEvent:
    """An accepted webhook, as it goes into the store."""

    id: str
    source: str
    received_at_ms: int
    body: bytes
    dedupe_key: str
    facts: EventFacts = EventFacts()
    changes: str | None = None  # JSON of the `changes` its routes saw, when its source tracks conversations


@dataclass(frozen=True)
class NewDelivery:
    """One rendered request for one route and destination.

    `request` is None when rendering failed; `error` then says why and the store keeps the
    delivery as dead so it can be fixed and replayed with `--rerender`. A chained request
    (`after`: the id of the delivery it runs after) has no request and no error: it starts
    `held`, and `template` holds what rendering it needs (see `gateway.routing.chain`).
    `step` is the send's `id`, when it has one.
    """

    id: str
    route: str
    destination: str
    max_attempts: int
    request: RenderedRequest | None
    error: str | None = None
    step: str | None = None
    after: str | None = None
    template: bytes | None = None

    @property
    def status(self) -> DeliveryStatus:
        if self.request is not None:
            return DeliveryStatus.PENDING
        return DeliveryStatus.DEAD if self.error is not None else DeliveryStatus.HELD


@dataclass(frozen=True)
class IngestResult:
    """What the store did; `conflict`: nothing was stored, the state changed since it was read (route again)."""

    event_id: str
    deliveries: int
    duplicate: bool = False
    conflict: bool = False


@dataclass(frozen=True)
class StoredEvent:
    id: str
    source: str
    received_at_ms: int
    body: bytes
    changes: str | None = None


# --- conversation state and once_per: what routing reads from the store and writes back with the event ---

OnceKey = tuple[str, str]  # (route, the rendered once_per key)


@dataclass(frozen=True)
class Assignee:
    id: str
    name: str | None
    email: str | None


@dataclass(frozen=True)
class ConversationState:
    """What the gateway remembers of one conversation of one source."""

    labels: tuple[str, ...]
    assignees: tuple[Assignee, ...]
    last_seen_ms: int

    def to_json(self) -> str:
        """Labels and assignees as the stores keep them (`last_seen_ms` is kept beside, to prune by)."""
        return json.dumps({"labels": list(self.labels), "assignees": [vars(person) for person in self.assignees]})

    @classmethod
    def from_json(cls, text: str | bytes, last_seen_ms: int) -> ConversationState:
        kept = json.loads(text)
        return cls(tuple(kept["labels"]), tuple(Assignee(**person) for person in kept["assignees"]), last_seen_ms)


@dataclass(frozen=True)
class StateKeys:
    """The state one event's routing depends on: its conversation `(source, id)` and its routes' once_per keys."""

    conversation: tuple[str, str] | None = None
    once: tuple[OnceKey, ...] = ()


@dataclass(frozen=True)
class StateSnapshot:
    """The state of some `StateKeys` at a moment. `version` counts the conversation's writes (0: never seen);
    `once_until_ms` holds the once_per windows still running then, and when each ends."""

    conversation: ConversationState | None = None
    version: int = 0
    once_until_ms: dict[OnceKey, int] = field(default_factory=dict)


@dataclass(frozen=True)
class StateWrite:
    """Written with an event, only if the state of `keys` is still `seen`: the conversation's new state (None:
    unchanged) and the once_per windows its routes open."""

    keys: StateKeys
    seen: StateSnapshot
    conversation: ConversationState | None
    once_until_ms: dict[OnceKey, int]


@dataclass(frozen=True)
class Delivery:
    """A delivery as the store holds it. `lease_token` is set on deliveries returned by a claim."""

    id: str
    event_id: str
    route: str
    destination: str
    status: DeliveryStatus
    attempts: int
    max_attempts: int
    next_attempt_at_ms: int
    created_at_ms: int
    updated_at_ms: int
    request: RenderedRequest | None
    last_error: str | None = None
    lease_token: str | None = None
    step: str | None = None
    after: str | None = None
    template: bytes | None = None
    steps: bytes | None = None  # JSON: the step answers it was rendered from (chained requests)
    quota_waits: int = 0  # answers that said "quota spent" (they do not count towards max_attempts)


@dataclass(frozen=True)
class Attempt:
    """One try at sending a delivery."""

    delivery_id: str
    number: int
    started_at_ms: int
    elapsed_ms: float
    status_code: int | None
    error: str | None
    response_excerpt: str | None


@dataclass(frozen=True)
class Release:
    """A chained delivery freed by its step's outcome: pending with `request`, or dead with `error`."""

    delivery_id: str
    request: RenderedRequest | None
    error: str | None
    steps: bytes | None = None


@dataclass(frozen=True)
class DestinationPause:
    """No delivery to `destination` is sent before `until_ms`: it answered that its quota is spent (`reason`)."""

    destination: str
    until_ms: int
    reason: str


@dataclass(frozen=True)
class AttemptResult:
    """What the worker tells the store after an attempt: the attempt, the delivery's next state, and the
    chained deliveries its outcome frees (the store applies them with the outcome, or not at all)."""

    attempt: Attempt
    status: DeliveryStatus
    next_attempt_at_ms: int | None = None
    released: tuple[Release, ...] = ()
    counted: bool = True  # False for a quota answer: it spends none of the attempts
    pause: DestinationPause | None = None  # its whole destination waits until then


@dataclass(frozen=True)
class DeliveryFilter:
    """Which deliveries to list or replay; None means "any"."""

    status: DeliveryStatus | None = None
    route: str | None = None
    destination: str | None = None
    event_id: str | None = None
    since_ms: int | None = None
    ids: tuple[str, ...] | None = None
    limit: int = 1000


@dataclass(frozen=True)
class QueueStats:
    pending: int
    dead: int
    oldest_due_ms: int | None
    by_destination: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class EventQuery:
    """Which events to look up, newest first; None means "any".

    `text` finds a conversation id, subject or sender containing it; `subject` a subject containing it (both in
    any case); `sender` is a whole address in any case. `route`, `destination` and `status` hold when one of the
    event's deliveries has all three. `cursor` continues after the last event of a page (`EventPage.next_cursor`).
    """

    text: str | None = None
    conversation_id: str | None = None
    sender: str | None = None
    subject: str | None = None
    rule_type: str | None = None
    source: str | None = None
    route: str | None = None
    destination: str | None = None
    status: DeliveryStatus | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    cursor: EventCursor | None = None
    limit: int = 100


@dataclass(frozen=True, order=True)
class EventCursor:
    """A place in the newest-first order of events; as text, `<received_at_ms>:<event id>`."""

    received_at_ms: int
    event_id: str

    def __str__(self) -> str:
        return f"{self.received_at_ms}:{self.event_id}"

    @classmethod
    def parse(cls, text: str) -> EventCursor:
        """Raises ValueError when `text` is not a cursor a page gave."""
        at, sep, event_id = text.partition(":")
        if not sep or not at.isdigit() or not event_id:
            raise ValueError(f"{text!r} is not a cursor; pass back the next_cursor of the previous page")
        return cls(int(at), event_id)


@dataclass(frozen=True)
class DeliveryBrief:
    """A delivery as an event lookup shows it: where it went and how it stands."""

    id: str
    route: str
    destination: str
    status: DeliveryStatus
    attempts: int
    max_attempts: int
    last_error: str | None


@dataclass(frozen=True)
class EventSummary:
    id: str
    source: str
    received_at_ms: int
    facts: EventFacts
    deliveries: tuple[DeliveryBrief, ...]


@dataclass(frozen=True)
class EventPage:
    """One page of a lookup; `next_cursor` is None on the last page."""

    events: list[EventSummary]
    next_cursor: EventCursor | None


@dataclass(frozen=True)
class HourCounts:
    """Deliveries created in one stretch of time, by where they stand now."""

    delivered: int = 0
    pending: int = 0
    dead: int = 0


@dataclass(frozen=True)
class DestinationActivity:
    """One destination now: pending deliveries not tried yet (`waiting`) or tried (`retrying`), those a worker
    holds (`in_flight`), dead letters, the oldest pending one's creation time, the last error of a delivery
    still pending or dead, and `buckets` of the deliveries created in each stretch of the activity's window."""

    waiting: int
    retrying: int
    in_flight: int
    dead: int
    oldest_pending_ms: int | None
    last_error: str | None
    last_error_at_ms: int | None
    buckets: tuple[HourCounts, ...]


@dataclass(frozen=True)
class Activity:
    """What the console's overview shows: `buckets` stretches of `bucket_ms` from `since_ms` on.

    `events`: per source, the events received in each stretch; `destinations`: every destination
    that has deliveries stored.
    """

    since_ms: int
    bucket_ms: int
    events: dict[str, tuple[int, ...]]
    destinations: dict[str, DestinationActivity]
