"""The config in force, swapped whole on reload so a request sees one config from start to end."""

from __future__ import annotations

from gateway.routing.compiled import LoadedConfig


class ActiveConfig:
    """A loaded config plus the lookups the request path needs."""

    def __init__(self, loaded: LoadedConfig) -> None:
        self.loaded = loaded
        self.source_by_path = {loaded.source_path(name): name for name in loaded.config.sources}


class ConfigHolder:
    """Holds the active config; `swap` replaces it atomically (one attribute assignment)."""

    def __init__(self, loaded: LoadedConfig) -> None:
        self.active = ActiveConfig(loaded)

    def swap(self, loaded: LoadedConfig) -> None:
        self.active = ActiveConfig(loaded)
