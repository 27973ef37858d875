"""The SQLite store's file: its schema, its migrations, and connections opened with the pragmas it relies on.

Writes need WAL (readers run beside the writer) and `synchronous=FULL` (a commit survives
power loss); `open_writer_connection` refuses a file where WAL cannot be had.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA_VERSION = 1
_BUSY_TIMEOUT_S = 5.0

_SCHEMA = """
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
CREATE INDEX IF NOT EXISTS events_received ON events (received_at_ms);
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
CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries (event_id);
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


def connect(path: Path, read_only: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    if read_only:
        conn.execute("PRAGMA query_only = ON")
    return conn


def open_writer_connection(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(path, read_only=False)
    try:
        (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchall()[0]
        if mode != "wal":
            raise sqlite3.OperationalError(f"journal_mode is {mode!r}, WAL is needed; put the file on a local disk")
        conn.execute("PRAGMA synchronous = FULL")
        # Savepoints copy the pages they touch into a statement journal: keep it off the disk.
        conn.execute("PRAGMA temp_store = MEMORY")
        _migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    has_table = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_version'").fetchall()
    version = conn.execute("SELECT max(version) FROM schema_version").fetchall()[0][0] if has_table else None
    if version is not None and version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(f"schema version {version} is newer than this gateway knows ({SCHEMA_VERSION})")
    if version is None:
        conn.executescript(_SCHEMA)
