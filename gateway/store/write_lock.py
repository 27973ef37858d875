"""One writer at a time across processes, woken the moment the file is free.

SQLite lets one connection write at a time and makes the others wait in its busy handler,
which sleeps 1, 2, 5, 10 ... 100 ms between tries. Two processes committing without pause
(`serve --processes 2` under load) then starve each other: one writer keeps getting the lock
back while the other sleeps, and its requests wait a second or more. A writer that first
takes an advisory lock (`flock`) on a file beside the database waits in the kernel instead,
and is woken as soon as the other lets go. Writers that do not take it (the CLI) still get
SQLite's own busy handling.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType


def lock_path(database: Path) -> Path:
    """`data/gateway.db` -> `data/gateway.db.write-lock`."""
    return database.with_name(f"{database.name}.write-lock")


class WriteLock:
    """A context manager holding an exclusive `flock` on `lock_path(database)`; the file is created 0600."""

    def __init__(self, database: Path) -> None:
        self._fd: int | None = os.open(lock_path(database), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def __enter__(self) -> None:
        if self._fd is None:
            raise RuntimeError("the write lock is closed")
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
