"""The console overview's figures from the SQLite store: grouped reads over indexes, none reading a table row
(a queue of many deliveries, after a destination was down for days, costs an index scan)."""

from __future__ import annotations

import sqlite3
from collections import defaultdict

from gateway.model import Activity, DeliveryStatus, DestinationActivity, HourCounts

_EVENTS = (
    "SELECT source, (received_at_ms - :since) / :bucket, count(*) FROM events "
    "WHERE received_at_ms >= :since AND received_at_ms < :end GROUP BY 1, 2"
)
_CREATED = (
    "SELECT destination, status, (created_at_ms - :since) / :bucket, count(*) FROM deliveries "
    "INDEXED BY deliveries_created WHERE created_at_ms >= :since AND created_at_ms < :end GROUP BY 1, 2, 3"
)
_QUEUE = (  # grouped in the index's order: no sort
    "SELECT status, destination, count(*), sum(attempts > 0), min(created_at_ms), "
    "sum(lease_token IS NOT NULL AND next_attempt_at_ms > ?) FROM deliveries INDEXED BY deliveries_queue "
    "WHERE status IN ('pending', 'dead') GROUP BY 1, 2"
)
_LAST_ERROR = (  # of a destination that has pending or dead deliveries: one seek
    "SELECT last_error, updated_at_ms FROM deliveries INDEXED BY deliveries_failing "
    "WHERE destination = ? AND status IN ('pending', 'dead') AND last_error IS NOT NULL "
    "ORDER BY updated_at_ms DESC LIMIT 1"
)


def read_activity(conn: sqlite3.Connection, since_ms: int, bucket_ms: int, buckets: int, now_ms: int) -> Activity:
    window = {"since": since_ms, "bucket": bucket_ms, "end": since_ms + bucket_ms * buckets}
    events: dict[str, list[int]] = defaultdict(lambda: [0] * buckets)
    for source, bucket, count in conn.execute(_EVENTS, window):
        events[source][bucket] = count
    created: dict[str, list[dict[str, int]]] = defaultdict(lambda: [{} for _ in range(buckets)])
    for destination, status, bucket, count in conn.execute(_CREATED, window):
        created[destination][bucket][status] = count
    queue: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    oldest: dict[str, int] = {}
    for status, destination, count, tried, first_ms, leased in conn.execute(_QUEUE, (now_ms,)):
        counts = queue[destination]
        if status == DeliveryStatus.DEAD:
            counts["dead"] = count
            continue
        counts["retrying"], counts["waiting"], counts["in_flight"] = tried, count - tried, leased
        oldest[destination] = first_ms
    errors = {name: rows[0] for name in queue if (rows := conn.execute(_LAST_ERROR, (name,)).fetchall())}
    destinations = {
        name: DestinationActivity(
            waiting=queue[name]["waiting"], retrying=queue[name]["retrying"], in_flight=queue[name]["in_flight"],
            dead=queue[name]["dead"], oldest_pending_ms=oldest.get(name),
            last_error=errors.get(name, (None, None))[0], last_error_at_ms=errors.get(name, (None, None))[1],
            buckets=tuple(_hour(counts) for counts in created[name]),
        )
        for name in sorted(set(created) | set(queue) | set(errors))
    }  # fmt: skip
    return Activity(since_ms, bucket_ms, {source: tuple(counts) for source, counts in events.items()}, destinations)


def _hour(counts: dict[str, int]) -> HourCounts:
    return HourCounts(counts.get("delivered", 0), counts.get("pending", 0), counts.get("dead", 0))
