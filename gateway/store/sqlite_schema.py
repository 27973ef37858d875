"""The SQLite store's file: its schema, its migrations, and connections opened with the pragmas it relies on.

Writes need WAL (readers run beside the writer) and `synchronous=FULL` (a commit survives
power loss); `open_writer_connection` refuses a file where WAL cannot be had.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

from gateway.model import event_facts
from gateway.store.base import dedupe_key
from gateway.store.sqlite_file import QUICK_CHECK_BUDGET_S, check_integrity, create_private
from gateway.store.write_lock import WriteLock

SCHEMA_VERSION = 8
_BACKFILL_CHUNK = 1000
_BUSY_TIMEOUT_S = 5.0

# The file as version 1 made it; later versions migrate from it, so a new file takes the same path as an old one.
V1_SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    dedupe_key TEXT NOT NULL,
    received_at_ms INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_dedupe ON events (source, dedupe_key, received_at_ms);
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    route TEXT NOT NULL,
    destination TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    next_attempt_at_ms INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    method TEXT,
    url TEXT,
    headers TEXT,
    body BLOB,
    last_error TEXT,
    lease_token TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_claim ON deliveries (status, destination, next_attempt_at_ms);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (next_attempt_at_ms) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_created ON deliveries (created_at_ms);
CREATE TABLE IF NOT EXISTS attempts (
    delivery_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    started_at_ms INTEGER NOT NULL,
    elapsed_ms REAL NOT NULL,
    status_code INTEGER,
    error TEXT,
    response_excerpt TEXT
);
CREATE INDEX IF NOT EXISTS attempts_delivery ON attempts (delivery_id, started_at_ms);
INSERT INTO schema_version (version) SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM schema_version);
COMMIT;
"""

# Version 2 (a new file is made at version 1, then migrated): events keep what they are looked up by. The
# newest-first index covers every column a lookup filters on, so a lookup never reads the bodies;
# deliveries_event covers what it asks of deliveries.
_LOOKUP = """
ALTER TABLE events ADD COLUMN conversation_id TEXT;
ALTER TABLE events ADD COLUMN subject TEXT;
ALTER TABLE events ADD COLUMN sender TEXT;
ALTER TABLE events ADD COLUMN rule_type TEXT;
"""
_LOOKUP_INDEXES = """
DROP INDEX IF EXISTS events_received;
DROP INDEX IF EXISTS deliveries_event;
CREATE INDEX IF NOT EXISTS events_newest
    ON events (received_at_ms, id, source, rule_type, conversation_id, sender, subject);
CREATE INDEX IF NOT EXISTS events_conversation ON events (conversation_id, received_at_ms)
    WHERE conversation_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_sender ON events (sender, received_at_ms) WHERE sender IS NOT NULL;
CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries (event_id, status, route, destination);
"""
# Version 3: request chains. A delivery keeps the step it is (its send's `id`), the delivery it runs after,
# what rendering it needs (a snapshot of its request's source) and the step answers it was rendered from.
_CHAINS = """
ALTER TABLE deliveries ADD COLUMN step TEXT;
ALTER TABLE deliveries ADD COLUMN after_id TEXT;
ALTER TABLE deliveries ADD COLUMN template BLOB;
ALTER TABLE deliveries ADD COLUMN steps BLOB;
"""

# Version 6 (after 5, below): quota waits. A delivery counts the quota answers it got (they spend no attempt),
# and a destination that answered "quota spent" is paused until it said to come back.
_QUOTAS = """
ALTER TABLE deliveries ADD COLUMN quota_waits INTEGER NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS destination_pauses (
    destination TEXT PRIMARY KEY,
    until_ms INTEGER NOT NULL,
    reason TEXT NOT NULL
);
"""

# Version 5: conversation state and once_per windows, and the `changes` each event's routes saw.
_STATE = """
ALTER TABLE events ADD COLUMN changes TEXT;
CREATE TABLE IF NOT EXISTS conversations (
    source TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (source, conversation_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS conversations_seen ON conversations (last_seen_ms);
CREATE TABLE IF NOT EXISTS once_per (
    route TEXT NOT NULL,
    key TEXT NOT NULL,
    until_ms INTEGER NOT NULL,
    PRIMARY KEY (route, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS once_per_until ON once_per (until_ms);
"""


# Version 7: payloads, request bodies, headers and chain snapshots are stored as zstd frames (raw blobs
# from before still read), against dictionaries learnt from the data and kept here; dedupe keys are 64
# bits of BLAKE2b instead of SHA-256 (`gateway.store.base.dedupe_key`), the events stored before rekeyed.
_DICTIONARIES = """
CREATE TABLE IF NOT EXISTS dictionaries (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    data BLOB NOT NULL
);
"""

# Version 8: the console's queue figures come from indexes alone, however long the queue. The claim index also
# holds what the overview counts (attempts, age, lease; the token is NULL but while a worker holds the delivery),
# and the deliveries that failed and still wait, or are dead, are indexed by destination and time for each
# destination's last error (a new delivery has no error, so an ingest adds no entry there).
_QUEUE_FIGURES = """
DROP INDEX IF EXISTS deliveries_claim;
CREATE INDEX IF NOT EXISTS deliveries_queue
    ON deliveries (status, destination, next_attempt_at_ms, attempts, created_at_ms, lease_token);
CREATE INDEX IF NOT EXISTS deliveries_failing ON deliveries (destination, updated_at_ms)
    WHERE status IN ('pending', 'dead') AND last_error IS NOT NULL;
"""


def connect(path: Path, read_only: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    if read_only:
        conn.execute("PRAGMA query_only = ON")
    return conn


def open_writer_connection(
    path: Path, check_budget_s: float = QUICK_CHECK_BUDGET_S
) -> tuple[sqlite3.Connection, WriteLock]:
    """The connection every write goes through, on a file created private and checked for damage first, and
    the file's write lock; processes opening one file at once set it up (WAL, schema) in turn."""
    create_private(path)
    lock = WriteLock(path)
    conn = connect(path, read_only=False)
    try:
        check_integrity(conn, path, check_budget_s)
        with lock:
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchall()[0]
            if mode != "wal":
                raise sqlite3.OperationalError(f"journal_mode is {mode!r}, WAL is needed; put the file on a local disk")
            conn.execute("PRAGMA synchronous = FULL")
            # Savepoints copy the pages they touch into a statement journal: keep it off the disk.
            conn.execute("PRAGMA temp_store = MEMORY")
            _migrate(conn)
    except BaseException:
        conn.close()
        lock.close()
        raise
    return conn, lock


def _version(conn: sqlite3.Connection) -> int | None:
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_version'").fetchall():
        return None
    version: int | None = conn.execute("SELECT max(version) FROM schema_version").fetchall()[0][0]
    return version


def _migrate(conn: sqlite3.Connection) -> None:
    version = _version(conn)
    if version is not None and version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(f"schema version {version} is newer than this gateway knows ({SCHEMA_VERSION})")
    if version is None:
        conn.executescript(V1_SCHEMA)
    for target, step in ((2, _to_lookup), (3, _to_chains), (4, _to_untrusted_hosts), (5, _to_state),
                         (6, _to_quotas), (7, _to_compressed), (8, _to_queue_figures)):  # fmt: skip
        if version is not None and version >= target:
            continue
        conn.execute("BEGIN IMMEDIATE")
        if _version(conn) == target - 1:  # asked again inside the transaction: another process may have migrated
            step(conn)
            conn.execute("UPDATE schema_version SET version = ?", (target,))
        conn.execute("COMMIT")


def _run(conn: sqlite3.Connection, script: str) -> None:
    """The statements of `script` inside the open transaction (executescript would commit first)."""
    for statement in script.split(";")[:-1]:
        conn.execute(statement)


def _to_lookup(conn: sqlite3.Connection) -> None:
    _run(conn, _LOOKUP)
    _backfill_facts(conn)
    _run(conn, _LOOKUP_INDEXES)


def _to_chains(conn: sqlite3.Connection) -> None:
    _run(conn, _CHAINS)


def _to_untrusted_hosts(conn: sqlite3.Connection) -> None:
    """Whether a delivery's URL took its host from a template (NULL: no)."""
    conn.execute("ALTER TABLE deliveries ADD COLUMN untrusted_host INTEGER")


def _to_state(conn: sqlite3.Connection) -> None:
    _run(conn, _STATE)


def _to_quotas(conn: sqlite3.Connection) -> None:
    _run(conn, _QUOTAS)


def _to_compressed(conn: sqlite3.Connection) -> None:
    _run(conn, _DICTIONARIES)
    _rekey_dedupe(conn)


def _to_queue_figures(conn: sqlite3.Connection) -> None:
    _run(conn, _QUEUE_FIGURES)


def _backfill_facts(conn: sqlite3.Connection) -> None:
    """Fill in the lookup facts of events stored by a version 1 gateway."""

    def facts_of(body: bytes) -> tuple[object, ...] | None:
        try:
            facts = event_facts(json.loads(body))
        except ValueError:
            return None
        return facts.conversation_id, facts.subject, facts.sender, facts.rule_type

    _rewrite_events(conn, "conversation_id = ?, subject = ?, sender = ?, rule_type = ?", facts_of)


def _rekey_dedupe(conn: sqlite3.Connection) -> None:
    """Events stored before version 6 were keyed by SHA-256 for dedupe: key them as new ones are."""
    _rewrite_events(conn, "dedupe_key = ?", lambda body: (dedupe_key(body),))


def _rewrite_events(
    conn: sqlite3.Connection, assignments: str, compute: Callable[[bytes], tuple[object, ...] | None]
) -> None:
    """Set `assignments` on every event, chunk by chunk, to what `compute` makes of its (raw) body."""
    last = 0
    while True:
        rows = conn.execute(
            "SELECT rowid, body FROM events WHERE rowid > ? ORDER BY rowid LIMIT ?", (last, _BACKFILL_CHUNK)
        ).fetchall()
        if not rows:
            return
        updates = [
            (*values, rowid) for rowid, body in rows
            if (values := compute(body if isinstance(body, bytes) else str(body).encode())) is not None
        ]  # fmt: skip
        conn.executemany(f"UPDATE events SET {assignments} WHERE rowid = ?", updates)
        last = rows[-1][0]
