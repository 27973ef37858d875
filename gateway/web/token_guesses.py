"""How many wrong admin tokens a client may send before it has to wait.

The console's login and the admin API count, per client address (the connection's peer), the
wrong tokens sent in the last `WINDOW_MS`. A client with `LIMIT` of them is answered 429 until
the oldest leaves the window, whatever it sends: were a right token let through, the answers
would still tell a guesser when it found it. Counts live in the process (each of `--processes N`
keeps its own) and forget the least recently wrong client beyond `MAX_CLIENTS`.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict, deque
from collections.abc import Callable

LIMIT = 10
WINDOW_MS = 5 * 60_000
MAX_CLIENTS = 10_000

log = logging.getLogger("gateway.admin")


class TokenGuesses:
    """The wrong tokens each client sent lately, newest client last."""

    def __init__(self, limit: int = LIMIT, window_ms: int = WINDOW_MS, max_clients: int = MAX_CLIENTS) -> None:
        self._limit = limit
        self._window_ms = window_ms
        self._max_clients = max_clients
        self._wrong: OrderedDict[str, deque[int]] = OrderedDict()

    def attempt(self, client: str, now_ms: int, token_is_right: Callable[[], bool]) -> tuple[bool, int]:
        """Whether the token `client` sent is right, and how long the client must wait first (then the token is
        not looked at, and the answer is False); the token is counted."""
        wait_ms = self.wait_ms(client, now_ms)
        if wait_ms > 0:
            return False, wait_ms
        if token_is_right():
            self._wrong.pop(client, None)  # its count starts again
            return True, 0
        self._count_wrong(client, now_ms)
        return False, 0

    def wait_ms(self, client: str, now_ms: int) -> int:
        """How long `client` must wait before a token it sends is looked at (0: at once)."""
        times = self._recent(client, now_ms)
        return times[0] + self._window_ms - now_ms if len(times) >= self._limit else 0

    def _count_wrong(self, client: str, now_ms: int) -> None:
        """The token that makes the client wait is logged (the token is not)."""
        times = self._recent(client, now_ms)
        self._wrong.pop(client, None)
        self._wrong[client] = times  # the most recently wrong client last
        times.append(now_ms)
        if len(self._wrong) > self._max_clients:
            self._wrong.popitem(last=False)
        if len(times) == self._limit:
            log.warning("%d wrong admin tokens from %s within %d s: its tries wait %d s", self._limit, client,
                        self._window_ms // 1000, math.ceil(self.wait_ms(client, now_ms) / 1000))  # fmt: skip

    def _recent(self, client: str, now_ms: int) -> deque[int]:
        """The client's wrong tokens still in the window (an empty deque, not kept, if it has none)."""
        times = self._wrong.get(client, deque(maxlen=self._limit))
        while times and times[0] <= now_ms - self._window_ms:
            times.popleft()
        if not times:
            self._wrong.pop(client, None)
        return times


def client_of(remote: str | None) -> str:
    """The key a request is counted under: its peer's address (a Unix socket's peers share one)."""
    return remote or "unknown"


def waiting(wait_ms: int) -> tuple[str, dict[str, str]]:
    """What a client told to wait reads, and the Retry-After header that says for how long."""
    seconds = math.ceil(wait_ms / 1000)
    return (f"too many wrong admin tokens from this address: try again in {seconds} s",
            {"Retry-After": str(seconds)})  # fmt: skip
