"""An example config running on a real SQLite store against fakes of its services, on a fake clock."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from aiohttp import ClientSession

from gateway.clock import FakeClock
from gateway.delivery.send import make_session
from gateway.delivery.worker import Worker
from gateway.ingest.accept import accept
from gateway.ingest.signature import sign
from gateway.model import Delivery, DeliveryFilter
from gateway.routing.compiled import LoadedConfig, load_config
from gateway.store.sqlite import SqliteStore
from tests.test_examples import EXAMPLES, MISSIVE_SECRET, placeholder_env

START_MS = 1_772_366_400_000


def payload(name: str, change: Callable[[dict[str, Any]], None] | None = None) -> bytes:
    """A payload of examples/payloads, changed by `change` when given (a copy, re-encoded)."""
    body = (EXAMPLES / "payloads" / name).read_bytes()
    if change is None:
        return body
    document = json.loads(body)
    change(document)
    return json.dumps(document).encode()


class Example:
    """One example config, used as `async with`: receive signed payloads, then deliver what they made until
    nothing is left, with one worker (and so one OAuth2 token cache) throughout, as a running gateway has."""

    def __init__(self, config: LoadedConfig, store: SqliteStore, clock: FakeClock) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self._session: ClientSession | None = None
        self._worker: Worker | None = None

    async def __aenter__(self) -> Example:
        self._session = make_session()
        self._worker = Worker(self.store, self.config.config.destinations, self._session, clock=self.clock,
                              rng=random.Random(1), masker=self.config.masker)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def receive(self, body: bytes) -> int:
        """Ingest `body` as Missive would send it, a second after the last one; the number of deliveries it made."""
        self.clock.advance(1)
        signature = sign(MISSIVE_SECRET.encode(), body)
        accepted = await accept(self.config, self.store, "missive", body, signature, self.clock.now_ms())
        assert accepted.result is not None
        return accepted.result.deliveries

    async def deliver(self) -> list[Delivery]:
        """Run the worker until nothing is pending; every delivery, oldest first (a step before its dependents)."""
        assert self._worker is not None, "use the example as `async with`"
        await self._worker.drain()
        found = await self.store.list_deliveries(DeliveryFilter())
        return sorted(found, key=lambda delivery: (delivery.created_at_ms, delivery.after is not None))


def load_example(name: str, store: SqliteStore, tmp_path: Path, clock: FakeClock, urls: dict[str, str] | None = None,
                 **env: str) -> Example:  # fmt: skip
    """Example `name` with `env` for its variables, on `clock`; `urls` points destinations whose preset knows the
    service's address (missive, pagerduty) at a fake instead."""
    config = EXAMPLES / f"{name}.yaml"
    if urls:
        document = yaml.safe_load(config.read_text(encoding="utf-8"))
        for destination, url in urls.items():
            document["destinations"][destination]["url"] = url
        config = tmp_path / config.name
        config.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    loaded = load_config(config, environ=placeholder_env(EXAMPLES / f"{name}.yaml", **env))
    return Example(loaded, store, clock)
