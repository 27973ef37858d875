"""The ready-made configs in examples/: each is valid, its cases pass, and the CRM ones deliver end to end."""

from __future__ import annotations

import json
import random
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.cli.cases import load_cases, run_cases
from gateway.clock import FakeClock
from gateway.delivery.send import make_session
from gateway.delivery.worker import Worker
from gateway.ingest.accept import accept
from gateway.ingest.signature import sign
from gateway.model import Delivery, DeliveryFilter, DeliveryStatus
from gateway.routing.compiled import LoadedConfig, load_config
from gateway.store.sqlite import SqliteStore
from tests.fakes import FakeApi, Received, json_reply

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CONFIGS = sorted(path for path in EXAMPLES.glob("*.yaml") if not path.name.endswith(".cases.yaml"))
START_MS = 1_772_366_400_000
MISSIVE_SECRET = "missive-rule-secret"
_REQUIRED_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def placeholder_env(config: Path, **overrides: str) -> dict[str, str]:
    """A value for every `${VAR}` without a default in the config: a URL, an id or a token, by the name."""
    env: dict[str, str] = {}
    for name in _REQUIRED_VARIABLE.findall(config.read_text(encoding="utf-8")):
        if name.endswith("_URL"):
            env[name] = f"https://{name.lower().replace('_', '-')}.example.invalid/hook"
        elif name.endswith("_ID"):
            env[name] = "4242"
        else:
            env[name] = f"placeholder-{name.lower()}"
    env["MISSIVE_SECRET"] = MISSIVE_SECRET
    return {**env, **overrides}


def cases_file(config: Path) -> Path:
    return config.with_name(config.name.removesuffix(".yaml") + ".cases.yaml")


def test_there_are_examples() -> None:
    names = {path.stem for path in CONFIGS}
    assert {"slack-vip", "hubspot", "pipedrive", "missive-postback", "fanout"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_each_example_is_valid_and_its_cases_pass(config: Path) -> None:
    env = placeholder_env(config)
    loaded = load_config(config, environ=env)
    assert loaded.routes, "an example without routes shows nothing"

    cases = load_cases(cases_file(config), loaded, environ=env)
    results = run_cases(loaded, cases)

    assert len(results) >= 3
    assert [(result.name, result.failures) for result in results if not result.passed] == []


@pytest.mark.parametrize("compose", ["compose.yaml", "compose.redis.yaml"])
def test_compose_files_mount_configs_that_exist(compose: str) -> None:
    services = yaml.safe_load((EXAMPLES.parent / compose).read_text(encoding="utf-8"))["services"]
    gateways = [service for service in services.values() if service.get("build") == "."]
    assert gateways
    for service in gateways:
        [mount] = [volume for volume in service["volumes"] if volume.endswith(":/config/config.yaml:ro")]
        default = re.fullmatch(r"\$\{GATEWAY_CONFIG:-(.+)\}:/config/config.yaml:ro", mount)
        assert default and (EXAMPLES.parent / default.group(1)).is_file()
        assert service["stop_grace_period"] == "30s"


def test_redis_compose_fsyncs_every_write() -> None:
    redis = yaml.safe_load((EXAMPLES.parent / "compose.redis.yaml").read_text(encoding="utf-8"))["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--appendfsync always" in command


# --- end to end against fake CRMs ------------------------------------------------------------------------------------


@dataclass
class Gateway:
    """An example config on a real SQLite store: ingest a signed payload, then drain the worker."""

    config: LoadedConfig
    store: SqliteStore
    clock: FakeClock

    async def receive(self, payload: str) -> None:
        body = (EXAMPLES / "payloads" / payload).read_bytes()
        accepted = await accept(self.config, self.store, "missive", body, sign(MISSIVE_SECRET.encode(), body),
                                self.clock.now_ms())
        assert accepted.result is not None and accepted.result.deliveries > 0

    async def deliver(self) -> dict[str, Delivery]:
        async with make_session() as session:
            worker = Worker(self.store, self.config.config.destinations, session, clock=self.clock,
                            rng=random.Random(1))
            await worker.drain()
        return {d.destination: d for d in await self.store.list_deliveries(DeliveryFilter())}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "gateway.db")
    await store.open()
    yield store
    await store.close()


def gateway(example: str, store: SqliteStore, **env: str) -> Gateway:
    config = EXAMPLES / f"{example}.yaml"
    return Gateway(load_config(config, environ=placeholder_env(config, **env)), store, FakeClock(START_MS))


def json_body(received: Received) -> Any:
    return json.loads(received.body)


HUBSPOT_UPSERTED = json_reply(200, {
    "status": "COMPLETE",
    "results": [{"id": "51", "properties": {"email": "priya.natarajan@example.org"}, "new": True}],
    "startedAt": "2024-06-03T08:33:16.000Z", "completedAt": "2024-06-03T08:33:16.120Z",
})
HUBSPOT_NOTE_CREATED = json_reply(201, {
    "id": "9001", "properties": {"hs_timestamp": "2024-06-03T08:33:15Z"},
    "createdAt": "2024-06-03T08:33:16.200Z", "updatedAt": "2024-06-03T08:33:16.200Z", "archived": False,
})
HUBSPOT_CONFLICT = json_reply(409, {
    "status": "error", "message": "Contact already exists. Existing ID: 12345",
    "correlationId": "1f6a2b4c-0e8d-4a51-9d7e-3b2f6c1a9e10", "category": "CONFLICT",
})
CONTACTS = "/crm/v3/objects/contacts/batch/upsert"
NOTES = "/crm/v3/objects/notes"


async def test_hubspot_upserts_the_contact_and_adds_a_note(store: SqliteStore) -> None:
    async with FakeApi({CONTACTS: [HUBSPOT_UPSERTED], NOTES: [HUBSPOT_NOTE_CREATED]}) as hubspot:
        gw = gateway("hubspot", store, HUBSPOT_API=hubspot.url("").rstrip("/"), HUBSPOT_TOKEN="pat-na1-test-token")
        await gw.receive("incoming-email-with-labels.json")
        deliveries = await gw.deliver()

    assert {name: d.status for name, d in deliveries.items()} == {
        "hubspot-contacts": DeliveryStatus.DELIVERED, "hubspot-notes": DeliveryStatus.DELIVERED,
    }
    [upsert], [note] = hubspot.to(CONTACTS), hubspot.to(NOTES)
    assert upsert.headers["Authorization"] == note.headers["Authorization"] == "Bearer pat-na1-test-token"
    [contact] = json_body(upsert)["inputs"]
    assert (contact["idProperty"], contact["id"]) == ("email", "priya.natarajan@example.org")
    assert contact["properties"]["firstname"] == "Priya"
    assert json_body(note)["properties"]["hs_timestamp"] == 1_717_401_195_000


async def test_hubspot_conflict_is_a_dead_letter_with_hubspots_reason(store: SqliteStore) -> None:
    async with FakeApi({CONTACTS: [HUBSPOT_CONFLICT], NOTES: [HUBSPOT_NOTE_CREATED]}) as hubspot:
        gw = gateway("hubspot", store, HUBSPOT_API=hubspot.url("").rstrip("/"))
        await gw.receive("incoming-email-with-labels.json")
        deliveries = await gw.deliver()

    contacts = deliveries["hubspot-contacts"]
    assert (contacts.status, contacts.attempts) == (DeliveryStatus.DEAD, 1)  # a 409 is not retried
    assert contacts.last_error is not None and contacts.last_error.startswith("HTTP 409: ")
    assert "Contact already exists. Existing ID: 12345" in contacts.last_error
    assert len(hubspot.to(CONTACTS)) == 1
    assert deliveries["hubspot-notes"].status is DeliveryStatus.DELIVERED


PIPEDRIVE_OVER_LIMIT = json_reply(429, {"success": False, "error": "Request over limit", "errorCode": 429})
PIPEDRIVE_PERSON = json_reply(201, {"success": True, "data": {"id": 101, "name": "Priya Natarajan"}})
PIPEDRIVE_NOTE = json_reply(201, {"success": True, "data": {"id": 7, "deal_id": 31}})


async def test_pipedrive_rate_limit_is_retried_then_delivered(store: SqliteStore) -> None:
    persons_script = [PIPEDRIVE_OVER_LIMIT, PIPEDRIVE_OVER_LIMIT, PIPEDRIVE_PERSON]
    async with FakeApi({"/v1/persons": persons_script, "/v1/notes": [PIPEDRIVE_NOTE]}) as pipedrive:
        gw = gateway("pipedrive", store, PIPEDRIVE_API=pipedrive.url("/v1"), PIPEDRIVE_API_TOKEN="pd-test-token",
                     PIPEDRIVE_NOTES_DEAL_ID="31")
        await gw.receive("incoming-email-with-labels.json")
        deliveries = await gw.deliver()

    persons = deliveries["pipedrive-persons"]
    assert (persons.status, persons.attempts) == (DeliveryStatus.DELIVERED, 3)
    attempts = await store.list_attempts(persons.id)
    assert [attempt.status_code for attempt in attempts] == [429, 429, 201]
    assert attempts[1].started_at_ms > attempts[0].started_at_ms  # waited (on the fake clock) before retrying
    assert deliveries["pipedrive-notes"].status is DeliveryStatus.DELIVERED
    sent = pipedrive.to("/v1/persons")
    assert len(sent) == 3 and all(request.path_qs == "/v1/persons?api_token=pd-test-token" for request in sent)
    assert json_body(sent[0]) == {
        "name": "Priya Natarajan",
        "email": [{"value": "priya.natarajan@example.org", "primary": True, "label": "work"}],
    }
    [note] = pipedrive.to("/v1/notes")
    assert json_body(note)["deal_id"] == 31
