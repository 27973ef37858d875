"""Hashes computed on the event loop without letting go of the GIL.

hashlib lets other threads run while it hashes 2 KiB or more. On the event loop that is a bad
trade: hashing a 3 KB webhook takes microseconds, but getting the GIL back from a busy thread
(the SQLite writer) can take up to the interpreter's switch interval, 5 ms, and every request
waits that long. Fed in pieces under that size, the hash keeps the GIL, for the same CPU time.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Protocol

_PIECE = 2047  # hashlib releases the GIL from 2048 bytes (HASHLIB_GIL_MINSIZE)


class _Hash(Protocol):
    def update(self, data: memoryview, /) -> None: ...


def _feed(hasher: _Hash, data: bytes) -> None:
    view = memoryview(data)
    for start in range(0, len(view), _PIECE):
        hasher.update(view[start : start + _PIECE])


def hmac_sha256(secret: bytes, data: bytes) -> bytes:
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    _feed(mac, data)
    return mac.digest()


def blake2b_64(data: bytes) -> bytes:
    hasher = hashlib.blake2b(digest_size=8)
    _feed(hasher, data)
    return hasher.digest()
