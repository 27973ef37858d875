"""The SQLite store's work on events and deliveries: each function runs on a connection inside a transaction.

`gateway.store.sqlite.SqliteStore` runs the writes in its group-commit writer thread and the reads
in its reader thread; nothing here knows about threads or the event loop. Payloads, request bodies,
headers and chain snapshots are stored packed by the store's `Codec` (`gateway.store.compression`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.model import (
    Attempt,
    AttemptResult,
    Delivery,
    DeliveryFilter,
    DeliveryStatus,
    IngestResult,
    NewDelivery,
    NewEvent,
    QueueStats,
    RenderedRequest,
    StateWrite,
    StoredEvent,
)
from gateway.store import sqlite_pauses
from gateway.store.compression import Codec, Dictionary, Kind
from gateway.store.sqlite_state import still_as_seen, write_state

PRUNE_CHUNK = 500

_DELIVERY_COLUMNS = (
    "id, event_id, route, destination, status, attempts, max_attempts, next_attempt_at_ms, created_at_ms, "
    "updated_at_ms, method, url, headers, body, untrusted_host, last_error, lease_token, step, after_id, template, "
    "steps, quota_waits"
)
_FIND_DUPLICATE = (
    "SELECT id FROM events WHERE source = ? AND dedupe_key = ? AND received_at_ms > ? ORDER BY received_at_ms LIMIT 1"
)
_INSERT_EVENT = (
    "INSERT INTO events (id, source, dedupe_key, received_at_ms, body, conversation_id, subject, sender, rule_type, "
    "changes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_DELIVERY = f"INSERT INTO deliveries ({_DELIVERY_COLUMNS}) VALUES ({', '.join('?' * 22)})"
_SELECT_DUE = (
    "SELECT id FROM deliveries WHERE status = 'pending' AND destination = ? AND next_attempt_at_ms <= ? "
    "ORDER BY next_attempt_at_ms LIMIT ?"
)
_LEASE = (  # {} is one `?` per id; a fresh lease token per row
    "UPDATE deliveries SET next_attempt_at_ms = ?, lease_token = lower(hex(randomblob(16))) "
    f"WHERE id IN ({{}}) RETURNING {_DELIVERY_COLUMNS}"
)
_INSERT_ATTEMPT = (
    "INSERT INTO attempts (delivery_id, number, started_at_ms, elapsed_ms, status_code, error, response_excerpt) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_FINISH = (  # the first two: 1, 0 for a counted attempt; 0, 1 for a quota answer
    "UPDATE deliveries SET attempts = attempts + ?, quota_waits = quota_waits + ?, status = ?, "
    "next_attempt_at_ms = coalesce(?, next_attempt_at_ms), updated_at_ms = ?, last_error = ?, lease_token = NULL "
    "WHERE id = ? AND lease_token = ? AND status = 'pending'"
)
_REQUEUE = (  # the five coalesce() arguments replace the request when given; a delivery left without one stays dead
    # Plain `?` placeholders: Python 3.12.0-3.12.3 wrongly warn about numbered ones (`?1`) bound from a sequence.
    "UPDATE deliveries SET status = 'pending', attempts = 0, quota_waits = 0, next_attempt_at_ms = ?, "
    "updated_at_ms = ?, lease_token = NULL, method = coalesce(?, method), url = coalesce(?, url), "
    "headers = coalesce(?, headers), body = coalesce(?, body), untrusted_host = coalesce(?, untrusted_host) "
    "WHERE id = ? AND status IN ('dead', 'delivered') AND coalesce(?, method) IS NOT NULL"
)
_RELEASE = (  # a chained delivery freed by its step: pending with a request, or dead without one
    "UPDATE deliveries SET status = ?, attempts = 0, next_attempt_at_ms = ?, updated_at_ms = ?, lease_token = NULL, "
    "method = ?, url = ?, headers = ?, body = ?, untrusted_host = ?, last_error = ?, steps = coalesce(?, steps) "
    "WHERE id = ? AND status != 'pending'"
)



def pragmas(conn: sqlite3.Connection) -> dict[str, object]:
    return {name: conn.execute(f"PRAGMA {name}").fetchall()[0][0] for name in ("journal_mode", "synchronous")}


def touch(conn: sqlite3.Connection) -> None:
    """A real write, so a ping proves the file takes commits."""
    conn.execute("UPDATE schema_version SET version = version")


@dataclass(frozen=True, slots=True)
class IngestRows:
    """An event and its deliveries as the rows `ingest` writes, compressed already (see `ingest_rows`)."""

    event: NewEvent
    event_row: tuple[Any, ...]
    delivery_rows: list[tuple[Any, ...]]
    dedupe_window_ms: int
    state: StateWrite | None


def ingest_rows(
    codec: Codec, event: NewEvent, deliveries: list[NewDelivery], dedupe_window_ms: int, state: StateWrite | None
) -> IngestRows:
    """The rows of `ingest`, made without the database: the writer makes them before taking the write lock."""
    at_ms = event.received_at_ms
    facts = event.facts
    event_row = (event.id, event.source, event.dedupe_key, at_ms, codec.pack(Kind.PAYLOAD, event.body),
                 facts.conversation_id, facts.subject, facts.sender, facts.rule_type, event.changes)  # fmt: skip
    delivery_rows = [_delivery_row(codec, event.id, at_ms, delivery) for delivery in deliveries]
    return IngestRows(event, event_row, delivery_rows, dedupe_window_ms, state)


def ingest(conn: sqlite3.Connection, rows: IngestRows) -> IngestResult:
    event = rows.event
    if rows.dedupe_window_ms > 0:
        since_ms = event.received_at_ms - rows.dedupe_window_ms
        first = conn.execute(_FIND_DUPLICATE, (event.source, event.dedupe_key, since_ms)).fetchall()
        if first:
            return IngestResult(event_id=first[0][0], deliveries=0, duplicate=True)
    if rows.state is not None and not still_as_seen(conn, rows.state, event.received_at_ms):
        return IngestResult(event_id=event.id, deliveries=0, conflict=True)
    conn.execute(_INSERT_EVENT, rows.event_row)
    conn.executemany(_INSERT_DELIVERY, rows.delivery_rows)
    if rows.state is not None:
        write_state(conn, rows.state)
    return IngestResult(event_id=event.id, deliveries=len(rows.delivery_rows))


def _delivery_row(codec: Codec, event_id: str, at_ms: int, new: NewDelivery) -> tuple[Any, ...]:
    return (new.id, event_id, new.route, new.destination, new.status.value, 0, new.max_attempts, at_ms, at_ms, at_ms,
            *_request_columns(codec, new.request), new.error, None, new.step, new.after,
            _pack_optional(codec, new.template), None, 0)  # fmt: skip


def _request_columns(codec: Codec, request: RenderedRequest | None) -> tuple[Any, ...]:
    if request is None:
        return (None,) * 5
    headers = codec.pack(Kind.HEADERS, orjson.dumps(request.headers))
    return request.method, request.url, headers, codec.pack(Kind.BODY, request.body), int(request.untrusted_host)


def _pack_optional(codec: Codec, chain_blob: bytes | None) -> bytes | None:
    return None if chain_blob is None else codec.pack(Kind.CHAIN, chain_blob)


def _unpack_optional(codec: Codec, blob: bytes | None) -> bytes | None:
    return None if blob is None else codec.unpack(blob)


def claim(
    conn: sqlite3.Connection, codec: Codec, capacity: Mapping[str, int], now_ms: int, lease_ms: int
) -> list[Delivery]:
    claimed: list[Delivery] = []
    paused = sqlite_pauses.paused_at(conn, now_ms)
    for destination, limit in capacity.items():
        if limit <= 0 or destination in paused:
            continue
        due = [delivery_id for (delivery_id,) in conn.execute(_SELECT_DUE, (destination, now_ms, limit))]
        if not due:
            continue
        lease = _LEASE.format(", ".join("?" * len(due)))
        leased = {row[0]: row for row in conn.execute(lease, (now_ms + lease_ms, *due))}
        claimed.extend(_delivery(codec, leased[delivery_id]) for delivery_id in due)  # oldest due first
    return claimed


def finish(conn: sqlite3.Connection, codec: Codec, delivery: Delivery, result: AttemptResult) -> bool:
    attempt = result.attempt
    conn.execute(_INSERT_ATTEMPT, (delivery.id, attempt.number, attempt.started_at_ms, attempt.elapsed_ms,
                                   attempt.status_code, attempt.error, attempt.response_excerpt))  # fmt: skip
    ended_at_ms = attempt.started_at_ms + round(attempt.elapsed_ms)
    if result.pause is not None:
        sqlite_pauses.record(conn, result.pause)
    spent = (1, 0) if result.counted else (0, 1)
    changed = conn.execute(_FINISH, (*spent, result.status.value, result.next_attempt_at_ms, ended_at_ms,
                                     attempt.error, delivery.id, delivery.lease_token))  # fmt: skip
    if changed.rowcount != 1:
        return False
    conn.executemany(_RELEASE, [
        (DeliveryStatus.PENDING.value if release.request else DeliveryStatus.DEAD.value, ended_at_ms, ended_at_ms,
         *_request_columns(codec, release.request), release.error, _pack_optional(codec, release.steps),
         release.delivery_id)
        for release in result.released
    ])  # fmt: skip
    return True


def requeue(
    conn: sqlite3.Connection, codec: Codec, delivery_ids: list[str], now_ms: int,
    requests: Mapping[str, RenderedRequest],
) -> int:  # fmt: skip
    rows = []
    for delivery_id in delivery_ids:
        replacement = _request_columns(codec, requests.get(delivery_id))
        rows.append((now_ms, now_ms, *replacement, delivery_id, replacement[0]))
    return conn.executemany(_REQUEUE, rows).rowcount


def prune_chunk(conn: sqlite3.Connection, before_ms: int) -> tuple[int, int]:
    """Delete one chunk of old delivered deliveries and of old events left without deliveries."""
    delivered = conn.execute(
        "SELECT id FROM deliveries INDEXED BY deliveries_created "
        "WHERE created_at_ms < ? AND status = 'delivered' LIMIT ?",
        (before_ms, PRUNE_CHUNK),
    ).fetchall()
    conn.executemany("DELETE FROM attempts WHERE delivery_id = ?", delivered)
    conn.executemany("DELETE FROM deliveries WHERE id = ?", delivered)
    events = conn.execute(
        "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE received_at_ms < ? AND NOT EXISTS "
        "(SELECT 1 FROM deliveries WHERE deliveries.event_id = events.id) LIMIT ?)",
        (before_ms, PRUNE_CHUNK),
    )
    return len(delivered), events.rowcount





def get_event(conn: sqlite3.Connection, codec: Codec, event_id: str) -> StoredEvent | None:
    rows = conn.execute(
        "SELECT id, source, received_at_ms, body, changes FROM events WHERE id = ?", (event_id,)
    ).fetchall()
    if not rows:
        return None
    event_id, source, received_at_ms, body, changes = rows[0]
    return StoredEvent(event_id, source, received_at_ms, codec.unpack(body), changes)


def get_delivery(conn: sqlite3.Connection, codec: Codec, delivery_id: str) -> Delivery | None:
    rows = conn.execute(f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE id = ?", (delivery_id,)).fetchall()
    return _delivery(codec, rows[0]) if rows else None


def list_attempts(conn: sqlite3.Connection, delivery_id: str) -> list[Attempt]:
    rows = conn.execute(
        "SELECT delivery_id, number, started_at_ms, elapsed_ms, status_code, error, response_excerpt FROM attempts "
        "WHERE delivery_id = ? ORDER BY started_at_ms, rowid",
        (delivery_id,),
    ).fetchall()
    return [Attempt(*row) for row in rows]


def list_deliveries(conn: sqlite3.Connection, codec: Codec, where: DeliveryFilter) -> list[Delivery]:
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("status", where.status.value if where.status else None),
        ("route", where.route),
        ("destination", where.destination),
        ("event_id", where.event_id),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if where.since_ms is not None:
        clauses.append("created_at_ms >= ?")
        params.append(where.since_ms)
    if where.ids is not None:
        clauses.append("id IN (SELECT value FROM json_each(?))")
        params.append(json.dumps(where.ids))
    condition = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = conn.execute(
        f"SELECT {_DELIVERY_COLUMNS} FROM deliveries {condition} ORDER BY created_at_ms DESC, rowid DESC LIMIT ?",
        (*params, where.limit),
    ).fetchall()
    return [_delivery(codec, row) for row in rows]


def stats(conn: sqlite3.Connection) -> QueueStats:
    rows = conn.execute(
        "SELECT status, destination, count(*), min(next_attempt_at_ms) FROM deliveries "
        "WHERE status IN ('pending', 'dead') GROUP BY status, destination"
    ).fetchall()
    pending = {destination: count for status, destination, count, _ in rows if status == DeliveryStatus.PENDING}
    paused = sqlite_pauses.ends(conn)
    oldest = [max(due, paused.get(name, due)) for status, name, _, due in rows if status == DeliveryStatus.PENDING]
    return QueueStats(
        pending=sum(pending.values()),
        dead=sum(count for status, _, count, _ in rows if status == DeliveryStatus.DEAD),
        oldest_due_ms=min(oldest, default=None),
        by_destination=pending,
    )


def _delivery(codec: Codec, row: tuple[Any, ...]) -> Delivery:
    (delivery_id, event_id, route, destination, status, attempts, max_attempts, next_attempt_at_ms, created_at_ms,
     updated_at_ms, method, url, headers, body, untrusted_host, last_error, lease_token, step, after, template,
     steps, quota_waits) = row  # fmt: skip
    request = None
    if method is not None:
        headers = json.loads(codec.unpack(headers) if isinstance(headers, bytes) else headers)  # text before v7
        request = RenderedRequest(method, url, headers, codec.unpack(body), bool(untrusted_host))
    return Delivery(delivery_id, event_id, route, destination, DeliveryStatus(status), attempts, max_attempts,
                    next_attempt_at_ms, created_at_ms, updated_at_ms, request, last_error, lease_token, step, after,
                    _unpack_optional(codec, template), _unpack_optional(codec, steps), quota_waits)  # fmt: skip


def load_dictionaries(conn: sqlite3.Connection) -> list[Dictionary]:
    """Every compression dictionary the store keeps, oldest first."""
    rows = conn.execute("SELECT id, kind, data FROM dictionaries ORDER BY created_at_ms, rowid").fetchall()
    return [Dictionary(dictionary_id, Kind(kind), data) for dictionary_id, kind, data in rows]


def find_dictionary(conn: sqlite3.Connection, dictionary_id: int) -> Dictionary | None:
    rows = conn.execute("SELECT id, kind, data FROM dictionaries WHERE id = ?", (dictionary_id,)).fetchall()
    return Dictionary(rows[0][0], Kind(rows[0][1]), rows[0][2]) if rows else None


def keep_dictionary(conn: sqlite3.Connection, dictionary: Dictionary, now_ms: int) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO dictionaries (id, kind, created_at_ms, data) VALUES (?, ?, ?, ?)",
        (dictionary.id, dictionary.kind.value, now_ms, dictionary.data),
    )
