"""`gateway test PAYLOAD` on a config that keeps conversations: it routes on the state the store has now (SQLite
and Redis, filled by a real server) and shows what it would change; `--no-state` routes as if nothing were
known; rule tests route a case's `previous` payloads first."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.cli.cases import load_cases, run_cases
from gateway.ops.config_holder import ConfigHolder
from gateway.routing.compiled import load_config
from gateway.web.app import create_app
from tests.delivery.test_dead_letters import cli
from tests.ingest.test_conversations import ROUTES, config_text, label_change, post

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def config(storage: str, write_config: Callable[[str, str], Path]) -> Path:
    return write_config(config_text(storage), "config.yaml")


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    """A label change that adds Urgent to a conversation labelled Billing."""
    path = tmp_path / "urgent.json"
    path.write_bytes(label_change(["Billing", "Urgent"], nonce=1))
    return path


async def seen_billing(config: Path, aiohttp_client: Callable[[web.Application], Awaitable[Client]]) -> None:
    """A real server receives the conversation labelled Billing: the state the dry run must find."""
    client = await aiohttp_client(create_app(ConfigHolder(load_config(config)), run_worker=False))
    assert (await post(client, label_change(["Billing"])))["deliveries"] == 1
    await client.close()


async def test_the_dry_run_routes_on_the_state_now(
    config: Path, payload: Path, capsys: pytest.CaptureFixture[str],
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
) -> None:  # fmt: skip
    await seen_billing(config, aiohttp_client)
    code, text, _ = await cli(capsys, "test", "-c", str(config), str(payload))
    _, as_json, _ = await cli(capsys, "test", "-c", str(config), str(payload), "--json")
    _, ignoring, _ = await cli(capsys, "test", "-c", str(config), str(payload), "--no-state", "--json")

    assert code == 0
    lines = text.splitlines()
    known = "conversation d1773781-5438-45b5-87bd-a21c604af42a: known: labels Billing; assignees Alma Reyes, Boris"
    assert f"{known} Lindqvist" in lines
    assert ("changes: labels added Urgent, removed none; assignees added none, removed none; first_seen false"
            in lines)  # fmt: skip
    assert "this event would leave it: labels Billing, Urgent; assignees Alma Reyes, Boris Lindqvist" in lines
    assert "✓ urgent-added: matched" in lines
    (suppressed,) = [line for line in lines if line.startswith("✗ once-per-conversation: ")]
    assert suppressed.startswith("✗ once-per-conversation: suppressed by once_per until ")
    assert suppressed.endswith("Z (key 'd1773781-5438-45b5-87bd-a21c604af42a')")
    report = json.loads(as_json)
    assert report["conversation"]["changes"]["labels_added"] == ["Urgent"]
    assert report["conversation"]["before"]["labels"] == ["Billing"]
    fresh = json.loads(ignoring)
    assert (fresh["conversation"]["read"], fresh["conversation"]["changes"]["first_seen"]) == (False, True)
    assert [route["matched"] for route in fresh["routes"]] == [True, True]
    assert fresh["routes"][1]["once_per"]["key"] == "d1773781-5438-45b5-87bd-a21c604af42a"


async def test_the_dry_run_changes_nothing(
    config: Path, payload: Path, capsys: pytest.CaptureFixture[str],
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
) -> None:  # fmt: skip
    await seen_billing(config, aiohttp_client)
    _, first, _ = await cli(capsys, "test", "-c", str(config), str(payload), "--json")
    _, second, _ = await cli(capsys, "test", "-c", str(config), str(payload), "--json")

    assert json.loads(first)["conversation"] == json.loads(second)["conversation"]


async def test_before_the_store_exists_every_conversation_is_new(
    write_config: Callable[[str, str], Path], payload: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(config_text("storage: {path: never-started.db}"), "config.yaml")
    code, text, _ = await cli(capsys, "test", "-c", str(config), str(payload))

    assert code == 0
    assert "conversation d1773781-5438-45b5-87bd-a21c604af42a: new to the gateway" in text.splitlines()
    assert not (config.parent / "never-started.db").exists()


async def test_an_unreachable_store_says_how_to_do_without(
    write_config: Callable[[str, str], Path], payload: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(config_text('storage: {backend: redis, url: "redis://127.0.0.1:9/0"}'), "config.yaml")
    code, out, error = await cli(capsys, "test", "-c", str(config), str(payload))

    assert (code, out) == (1, "")
    assert error.startswith("error: Redis store cannot open")
    assert error.strip().endswith("; add --no-state to route without the store's state")


def test_cases_route_their_previous_payloads_first(write_config: Callable[[str, str], Path], tmp_path: Path) -> None:
    (tmp_path / "billing.json").write_bytes(label_change(["Billing"]))
    (tmp_path / "urgent.json").write_bytes(label_change(["Billing", "Urgent"], nonce=1))
    config = load_config(write_config(config_text("storage: {path: gateway.db}", ROUTES), "config.yaml"))
    cases_file = write_config("""\
        cases:
          - name: Urgent added to a known conversation
            previous: [{payload_file: billing.json}]
            payload_file: urgent.json
            routes: [urgent-added]
          - name: a new conversation that has Urgent already
            payload_file: urgent.json
            routes: [urgent-added, once-per-conversation]
          - name: wrong on purpose
            previous: [{payload_file: urgent.json}]
            payload_file: urgent.json
            routes: [urgent-added]
        """, "cases.yaml")  # fmt: skip

    results = run_cases(config, load_cases(cases_file, config))

    assert [result.passed for result in results] == [True, True, False]
    assert results[2].failures[0] == "routes: expected [urgent-added], got []"
    assert results[2].failures[1].startswith(
        "urgent-added did not match: $.changes.labels_added[*] equals 'Urgent' failed: path yielded nothing")
    assert not (tmp_path / "gateway.db").exists()
