"""The SQLite file itself: created private to its user, and checked for damage before the gateway uses it.

A damaged file (pages overwritten by a disk fault, a copy taken mid-write) would otherwise let the
gateway start, answer 200 and never deliver: `PRAGMA quick_check` finds it at start. The check reads
the whole file, so it runs on a time budget; a file too big to check within it is used unchecked
(logged), and the worker's own reads report damage found later (see /readyz).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

log = logging.getLogger("gateway.store")

QUICK_CHECK_BUDGET_S = 5.0
_PROGRESS_STEPS = 1000  # SQLite VM steps between two looks at the clock


class DamagedFile(sqlite3.DatabaseError):
    """The SQLite file failed its check; the message names it and says what to do."""


def create_private(path: Path) -> None:
    """Create `path`'s folder (0700) and an empty `path` (0600) if missing; SQLite gives its -wal and -shm files
    the same mode as the database file."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def check_integrity(conn: sqlite3.Connection, path: Path, budget_s: float = QUICK_CHECK_BUDGET_S) -> None:
    """Return when `PRAGMA quick_check` finds nothing wrong or runs out of time; raise DamagedFile otherwise."""
    deadline = time.monotonic() + budget_s
    conn.set_progress_handler(lambda: time.monotonic() > deadline, _PROGRESS_STEPS)
    try:
        rows = conn.execute("PRAGMA quick_check(3)").fetchall()
    except sqlite3.OperationalError as exc:
        if "interrupt" not in str(exc):
            raise _damaged(path, str(exc)) from None
        log.warning("SQLite store %s not fully checked: quick_check did not finish within %g s", path, budget_s)
        return
    except sqlite3.DatabaseError as exc:  # "database disk image is malformed" before quick_check could report
        raise _damaged(path, str(exc)) from None
    finally:
        conn.set_progress_handler(None, 0)
    if rows != [("ok",)]:
        raise _damaged(path, "; ".join(str(row[0]) for row in rows))


def _damaged(path: Path, found: str) -> DamagedFile:
    found = "; ".join(line.strip() for line in found.splitlines() if line.strip() and not line.startswith("***"))
    return DamagedFile(
        f"SQLite store {path} is damaged ({found}); the gateway does not start on it. Stop every gateway using it, "
        f"move {path.name} and its -wal and -shm files aside, then restore a backup, or rebuild what can be read "
        f"with: sqlite3 {path} .recover | sqlite3 {path.with_suffix('.recovered.db')}"
    )
