"""Conversation state and once_per windows in the SQLite store, read and written inside an ingest's transaction.

An ingest that carries a `StateWrite` stores its event only if the state it was routed on is still the
state now (the same conversation version, the same once_per windows running); otherwise it stores nothing
and says `conflict`, and ingest routes the event again on the new state. The writer thread runs one
operation at a time, so of two events of one conversation, one sees the other's state.
"""

from __future__ import annotations

import sqlite3

from gateway.model import ConversationState, StateKeys, StateSnapshot, StateWrite


def read_state(conn: sqlite3.Connection, keys: StateKeys, now_ms: int) -> StateSnapshot:
    conversation, version = None, 0
    if keys.conversation is not None:
        rows = conn.execute(
            "SELECT version, last_seen_ms, state FROM conversations WHERE source = ? AND conversation_id = ?",
            keys.conversation,
        ).fetchall()
        if rows:
            version, last_seen_ms, state = rows[0]
            conversation = ConversationState.from_json(state, last_seen_ms)
    running = {}
    for route, key in keys.once:
        rows = conn.execute(
            "SELECT until_ms FROM once_per WHERE route = ? AND key = ? AND until_ms > ?", (route, key, now_ms)
        ).fetchall()
        if rows:
            running[(route, key)] = rows[0][0]
    return StateSnapshot(conversation, version, running)


def still_as_seen(conn: sqlite3.Connection, write: StateWrite, now_ms: int) -> bool:
    now = read_state(conn, write.keys, now_ms)
    return (now.version, now.once_until_ms) == (write.seen.version, write.seen.once_until_ms)


def write_state(conn: sqlite3.Connection, write: StateWrite) -> None:
    state = write.conversation
    if write.keys.conversation is not None and state is not None:
        conn.execute(
            "INSERT INTO conversations (source, conversation_id, version, last_seen_ms, state) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (source, conversation_id) DO UPDATE SET version = excluded.version, "
            "last_seen_ms = excluded.last_seen_ms, state = excluded.state",
            (*write.keys.conversation, write.seen.version + 1, state.last_seen_ms, state.to_json()),
        )
    conn.executemany(
        "INSERT INTO once_per (route, key, until_ms) VALUES (?, ?, ?) "
        "ON CONFLICT (route, key) DO UPDATE SET until_ms = excluded.until_ms",
        [(route, key, until_ms) for (route, key), until_ms in write.once_until_ms.items()],
    )


def prune_state(conn: sqlite3.Connection, before_ms: int, chunk: int) -> int:
    """Forget conversations last seen before `before_ms` and once_per windows ended by then; how many of each,
    the larger count (at most `chunk`)."""
    conversations = conn.execute(
        "DELETE FROM conversations WHERE (source, conversation_id) IN "
        "(SELECT source, conversation_id FROM conversations WHERE last_seen_ms < ? LIMIT ?)",
        (before_ms, chunk),
    ).rowcount
    windows = conn.execute(
        "DELETE FROM once_per WHERE (route, key) IN (SELECT route, key FROM once_per WHERE until_ms < ? LIMIT ?)",
        (before_ms, chunk),
    ).rowcount
    return max(conversations, windows)
