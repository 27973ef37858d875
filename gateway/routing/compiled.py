"""A config compiled for routing: every route's conditions and templates compiled once, at load.

`load_config` is the one way in: read and validate the file (`gateway.config.validate`),
compile it, and raise one ConfigError listing every problem either step found.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.config.credentials import config_credentials
from gateway.config.schema import GatewayConfig, RouteConfig
from gateway.config.validate import read_config
from gateway.errors import ConfigProblem, plural
from gateway.mask import Masker
from gateway.routing.chain import snapshot
from gateway.routing.conditions import Predicate, compile_condition
from gateway.routing.conversation import CHANGES, names_used, uses_changes
from gateway.routing.sandbox import RenderLimits, budget
from gateway.routing.template_env import ENV, Text, compile_text, render_text
from gateway.routing.templates import RequestTemplate, compile_request, request_source


@dataclass(frozen=True)
class CompiledSend:
    """One request of a route; `snapshot` (a chained one's source, see `gateway.routing.chain`) when it has `after`."""

    destination: str
    template: RequestTemplate
    max_attempts: int
    step: str | None = None
    after: str | None = None
    snapshot: bytes | None = None


@dataclass(frozen=True)
class CompiledOncePer:
    key: Text
    window_ms: int
    limits: RenderLimits

    def key_for(self, context: Mapping[str, Any]) -> str:
        """The key for one event's `template_context`; raises RenderError."""
        with budget(self.limits):
            return render_text(self.key, {**ENV.globals, **context})


@dataclass(frozen=True)
class CompiledRoute:
    name: str
    source: str
    predicate: Predicate | None
    sends: tuple[CompiledSend, ...]
    stop: bool
    uses_changes: bool = False
    once_per: CompiledOncePer | None = None


@dataclass(frozen=True)
class SourceState:
    """What a source's routes need from the store: its conversations' state, once_per windows (or nothing)."""

    conversations: bool
    windows: bool

    def __bool__(self) -> bool:
        return self.conversations or self.windows


@dataclass(frozen=True)
class LoadedConfig:
    """A valid config, with its conditions and templates compiled."""

    file: Path
    config: GatewayConfig
    routes: tuple[CompiledRoute, ...]
    secrets: frozenset[str]
    masker: Masker
    variables: Mapping[str, list[str]] = field(default_factory=dict)  # YAML path -> the ${VAR}s read

    def source_path(self, name: str) -> str:
        return self.config.sources[name].path or f"/hooks/{name}"

    def summary(self) -> str:
        """`1 source, 2 destinations, 3 routes`."""
        config = self.config
        return (
            f"{plural(len(config.sources), 'source')}, {plural(len(config.destinations), 'destination')}, "
            f"{plural(len(config.routes), 'route')}"
        )

    def warnings(self) -> list[str]:
        """What is valid but dangerous: logged by `serve` at start-up and on reload, printed by `gateway check`."""
        return [
            f"SOURCE {name} HAS NO SECRETS: anyone who can reach {self.source_path(name)} can inject events. "
            f"Set a secret on the Missive rule and list it under sources.{name}.secrets."
            for name, source in self.config.sources.items()
            if not source.secrets
        ]

    def routes_for(self, source: str) -> list[CompiledRoute]:
        """The routes that see `source`'s events, in order (grouped once: ingest asks on every request)."""
        return self._routes_by_source.get(source, [])

    def state_of(self, source: str) -> SourceState:
        return self._state_by_source.get(source, SourceState(False, False))

    @functools.cached_property
    def _state_by_source(self) -> dict[str, SourceState]:
        return {
            source: SourceState(any(route.uses_changes for route in routes), any(route.once_per for route in routes))
            for source, routes in self._routes_by_source.items()
        }

    @functools.cached_property
    def _routes_by_source(self) -> dict[str, list[CompiledRoute]]:
        grouped: dict[str, list[CompiledRoute]] = {}
        for route in self.routes:
            grouped.setdefault(route.source, []).append(route)
        return grouped


def load_config(file: str | Path, environ: typing.Mapping[str, str] | None = None) -> LoadedConfig:
    """Load and compile `file`; raise ConfigError listing every problem found."""
    read = read_config(file, environ)
    routes = _compile_routes(read.config, read.file.parent, read.problems)
    read.fail_if_problems()
    secrets = frozenset(config_credentials(read.config, read.document.secret_values))
    return LoadedConfig(
        file=read.file, config=read.config, routes=routes, secrets=secrets, masker=Masker(secrets),
        variables=read.document.variables,
    )


def _compile_routes(config: GatewayConfig, base_dir: Path, problems: list[ConfigProblem]) -> tuple[CompiledRoute, ...]:
    routes = []
    only_source = next(iter(config.sources)) if len(config.sources) == 1 else ""
    limits = RenderLimits(config.server.render_timeout, config.server.render_max_bytes)
    for index, route in enumerate(config.routes):
        at = f"routes[{index}]"
        predicate = compile_condition(route.when, f"{at}.when", problems) if route.when is not None else None
        sends = []
        for send_index, send in enumerate(route.send):
            destination = config.destinations.get(send.to)
            if destination is None:
                continue  # reported by _cross_check
            at_send = f"{at}.send[{send_index}]"
            template = compile_request(send, destination, base_dir, at_send, problems, route=route.name, limits=limits)
            if template is None:
                continue
            chained = None
            if send.after is not None:
                source = request_source(send, destination, base_dir, at_send, [], route=route.name)
                chained = snapshot(source, send_index, limits)
            sends.append(CompiledSend(send.to, template, destination.retry.attempts, send.id, send.after, chained))
        source_name = route.source or only_source
        once_per = _compile_once_per(route, f"{at}.once_per", limits, problems)
        texts = [send.template.text_source or "" for send in sends]  # template_file bodies among them, as read
        routes.append(CompiledRoute(route.name, source_name, predicate, tuple(sends), not route.continue_,
                                    uses_changes(route, texts), once_per))  # fmt: skip
    return tuple(routes)


def _compile_once_per(
    route: RouteConfig, at: str, limits: RenderLimits, problems: list[ConfigProblem]
) -> CompiledOncePer | None:
    if route.once_per is None:
        return None
    source = route.once_per.key
    if CHANGES in names_used(source):
        problems.append(ConfigProblem(f"{at}.key", "the key cannot use 'changes': it is rendered before the "
                                      "conversation's state is read", hint="key it on the payload, e.g. "
                                      "'{{ conversation.id }}'"))  # fmt: skip
    key = compile_text(source, f"{at}.key", problems)
    return CompiledOncePer(key, round(route.once_per.window * 1000), limits)
