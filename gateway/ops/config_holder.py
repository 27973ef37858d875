"""The config in force, swapped whole on reload so a request sees one config from start to end."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.clock import SystemClock
from gateway.mask import Masker
from gateway.routing.compiled import LoadedConfig


class ActiveConfig:
    """A loaded config plus the lookups the request path needs, and when it came into force.

    `masker` hides the secrets of every config held so far, not only this one's: deliveries queued under an
    earlier config still carry its URLs and tokens (logs keep them all too).
    """

    def __init__(self, loaded: LoadedConfig, loaded_at_ms: int, masker: Masker) -> None:
        self.loaded = loaded
        self.loaded_at_ms = loaded_at_ms
        self.masker = masker
        self.source_by_path = {loaded.source_path(name): name for name in loaded.config.sources}


@dataclass(frozen=True)
class RejectedReload:
    """A reload that failed: when, why it was tried, and its problems (masked, one line each)."""

    at_ms: int
    why: str
    problems: tuple[str, ...]


class ConfigHolder:
    """Holds the active config; `swap` replaces it atomically (one attribute assignment)."""

    def __init__(self, loaded: LoadedConfig) -> None:
        self._secrets = loaded.secrets
        self.active = ActiveConfig(loaded, SystemClock().now_ms(), loaded.masker)
        self.last_rejected: RejectedReload | None = None

    def swap(self, loaded: LoadedConfig) -> None:
        self._secrets |= loaded.secrets
        self.active = ActiveConfig(loaded, SystemClock().now_ms(), Masker(self._secrets))

    def reject(self, rejected: RejectedReload) -> None:
        self.last_rejected = rejected
