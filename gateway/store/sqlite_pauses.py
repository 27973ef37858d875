"""Destinations paused for a spent quota, in the SQLite file: recorded with an attempt, checked by claims.

A pause only ever grows longer; one that has ended is forgotten at the next claim. While any
is recorded, the next due time is found per destination and held back to its pause's end.
"""

from __future__ import annotations

import sqlite3

from gateway.model import DestinationPause

_RECORD = (  # its reason is the latest answer's that lengthened it
    "INSERT INTO destination_pauses (destination, until_ms, reason) VALUES (?, ?, ?) ON CONFLICT (destination) DO "
    "UPDATE SET reason = excluded.reason, until_ms = excluded.until_ms WHERE excluded.until_ms > until_ms"
)
# Each pending destination's earliest due delivery (found by walking the claim index, one seek per destination),
# held back to the end of its pause.
_NEXT_DUE_PAUSED = """
WITH RECURSIVE pending (name) AS (
    SELECT (SELECT min(destination) FROM deliveries WHERE status = 'pending')
    UNION ALL
    SELECT (SELECT min(destination) FROM deliveries WHERE status = 'pending' AND destination > pending.name)
    FROM pending WHERE pending.name IS NOT NULL
)
SELECT min(max(
    (SELECT min(next_attempt_at_ms) FROM deliveries WHERE status = 'pending' AND destination = pending.name),
    coalesce((SELECT until_ms FROM destination_pauses WHERE destination = pending.name), 0)
)) FROM pending WHERE pending.name IS NOT NULL
"""


def record(conn: sqlite3.Connection, pause: DestinationPause) -> None:
    conn.execute(_RECORD, (pause.destination, pause.until_ms, pause.reason))


def paused_at(conn: sqlite3.Connection, now_ms: int) -> set[str]:
    """The destinations paused beyond `now_ms`, forgetting the pauses that have ended (a write)."""
    conn.execute("DELETE FROM destination_pauses WHERE until_ms <= ?", (now_ms,))
    return {name for (name,) in conn.execute("SELECT destination FROM destination_pauses")}


def ends(conn: sqlite3.Connection) -> dict[str, int]:
    """When each recorded pause ends, by destination."""
    return dict(conn.execute("SELECT destination, until_ms FROM destination_pauses").fetchall())


def active(conn: sqlite3.Connection, now_ms: int) -> list[DestinationPause]:
    rows = conn.execute(
        "SELECT destination, until_ms, reason FROM destination_pauses WHERE until_ms > ? ORDER BY destination",
        (now_ms,),
    ).fetchall()
    return [DestinationPause(*row) for row in rows]


def next_due_ms(conn: sqlite3.Connection) -> int | None:
    """When the earliest pending delivery is due, a paused destination's at the end of its pause."""
    if conn.execute("SELECT 1 FROM destination_pauses LIMIT 1").fetchall():
        rows = conn.execute(_NEXT_DUE_PAUSED).fetchall()
    else:
        rows = conn.execute(
            "SELECT min(next_attempt_at_ms) FROM deliveries INDEXED BY deliveries_due WHERE status = 'pending'"
        ).fetchall()
    due: int | None = rows[0][0]
    return due
