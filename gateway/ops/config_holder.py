"""The config in force, swapped whole on reload so a request sees one config from start to end."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.clock import SystemClock
from gateway.routing.compiled import LoadedConfig


class ActiveConfig:
    """A loaded config plus the lookups the request path needs, and when it came into force."""

    def __init__(self, loaded: LoadedConfig, loaded_at_ms: int) -> None:
        self.loaded = loaded
        self.loaded_at_ms = loaded_at_ms
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
        self.active = ActiveConfig(loaded, SystemClock().now_ms())
        self.last_rejected: RejectedReload | None = None

    def swap(self, loaded: LoadedConfig) -> None:
        self.active = ActiveConfig(loaded, SystemClock().now_ms())

    def reject(self, rejected: RejectedReload) -> None:
        self.last_rejected = rejected
