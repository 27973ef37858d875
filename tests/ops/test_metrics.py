"""/metrics after real traffic: a running gateway, a SQLite file, fake destinations answering like real ones."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from gateway.clock import FakeClock
from gateway.ingest.signature import sign
from gateway.model import Attempt, AttemptResult, DeliveryStatus
from gateway.ops.config_holder import ConfigHolder
from gateway.ops.metrics import attempt_result
from gateway.routing.compiled import load_config
from gateway.web.app import create_app
from gateway.web.keys import STORE
from tests.conftest import FIXTURE_SECRET, fixture_bytes
from tests.fakes import HANG, FakeDestination, refused_url, retry_after, slack_ok

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

VIP = fixture_bytes("incoming-email-with-labels.json")
SMS = fixture_bytes("incoming-sms.json")


def config_text(slack: str, crm: str, slow: str, gone: str, later: str) -> str:
    return f"""\
storage: {{path: gateway.db}}
server: {{max_body: 64KiB}}
sources:
  missive: {{secrets: ["{FIXTURE_SECRET}"]}}
destinations:
  slack: {{type: slack, url: "{slack}", retry: {{attempts: 3, backoff: 10ms, max_backoff: 20ms}}}}
  crm: {{url: "{crm}", retry: {{attempts: 3, backoff: 10ms, max_backoff: 20ms}}}}
  slow: {{url: "{slow}", timeout: 100ms, retry: {{attempts: 1}}}}
  gone: {{url: "{gone}", retry: {{attempts: 1}}}}
  later: {{url: "{later}", concurrency: 1, retry: {{attempts: 5, backoff: 1s, max_backoff: 1h}}}}
routes:
  - name: vip
    when: {{path: "$.conversation.shared_labels[*].name", equals: VIP}}
    send: [{{to: slack, body: {{text: hi}}}}, {{to: crm}}]
  - name: everything
    send: [{{to: slow}}, {{to: gone}}, {{to: later}}]
  - name: never
    when: {{path: $.rule.type, equals: no-such-type}}
    send: [{{to: crm}}]
"""


async def scrape(client: Client) -> Samples:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(await response.text())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def post(client: Client, body: bytes, signed: bool = True) -> int:
    secret = FIXTURE_SECRET if signed else "not-the-secret"
    response = await client.post("/hooks/missive", data=body, headers={"X-Hook-Signature": sign(secret.encode(), body)})
    return response.status


async def scrape_until(client: Client, done: Callable[[Samples], bool], timeout_s: float = 10.0) -> Samples:
    async with asyncio.timeout(timeout_s):
        while True:
            samples = await scrape(client)
            if done(samples):
                return samples
            await asyncio.sleep(0.05)


def make_app(config: Path, **options: Any) -> web.Application:
    return create_app(ConfigHolder(load_config(config, environ={})), **options)


def attempts_total(samples: Samples) -> float:
    return sum(count for (name, _), count in samples.items() if name == "gateway_delivery_attempts_total")


async def test_counters_follow_real_traffic(aiohttp_client: MakeClient, write_config: Callable[[str], Path]) -> None:
    async with (
        FakeDestination([503, slack_ok()]) as slack,
        FakeDestination([400]) as crm,
        FakeDestination([HANG]) as slow,
        FakeDestination([retry_after(3600, status=503)]) as later,
    ):
        text = config_text(slack.url(), crm.url(), slow.url(), refused_url(), later.url())
        client = await aiohttp_client(make_app(write_config(text)))
        before = await scrape(client)
        statuses = [
            await post(client, VIP),
            await post(client, VIP),  # the same body again: a duplicate
            await post(client, SMS),
            await post(client, SMS + b" ", signed=False),
            await post(client, b'{"rule": "x", "pad": "' + b"x" * 70_000 + b'"}'),
            await post(client, b'{"rule": '),
            await post(client, b"{}"),
        ]
        await scrape_until(client, lambda samples: attempts_total(samples) >= 8)
        await asyncio.sleep(0.2)  # nothing else is due: a late attempt would show up here
        # The queue gauges are read from the store once a second at most: wait for a fresh reading.
        after = await scrape_until(client, lambda samples: value(samples, "gateway_dead_letters") == 5)

    assert statuses == [200, 200, 200, 401, 413, 400, 200]
    events = {
        outcome: value(after, "gateway_events_received_total", source="missive", outcome=outcome)
        for outcome in ("accepted", "duplicate", "bad_signature", "too_large", "bad_json", "validation", "unavailable")
    }
    assert events == {
        "accepted": 2, "duplicate": 1, "bad_signature": 1, "too_large": 1, "bad_json": 1, "validation": 1,
        "unavailable": 0,
    }
    assert value(before, "gateway_events_received_total", source="missive", outcome="accepted") == 0
    assert {route: value(after, "gateway_route_matches_total", route=route) for route in ("vip", "everything")} == {
        "vip": 1, "everything": 2
    }
    assert ("gateway_route_matches_total", frozenset({("route", "never")})) in after  # shown at 0
    attempts = {
        (dict(labels)["destination"], dict(labels)["result"]): count
        for (name, labels), count in after.items()
        if name == "gateway_delivery_attempts_total"
    }
    assert attempts == {
        ("slack", "5xx"): 1, ("slack", "2xx"): 1, ("crm", "4xx"): 1, ("slow", "timeout"): 2,
        ("gone", "connection"): 2, ("later", "5xx"): 1,  # a 503 with Retry-After pauses `later`: one is sent
    }
    finals = {
        (destination, outcome): value(after, "gateway_deliveries_total", destination=destination, outcome=outcome)
        for destination in ("slack", "crm", "slow", "gone", "later")
        for outcome in ("delivered", "dead")
    }
    assert {key: count for key, count in finals.items() if count} == {
        ("slack", "delivered"): 1, ("crm", "dead"): 1, ("slow", "dead"): 2, ("gone", "dead"): 2
    }
    assert value(after, "gateway_delivery_latency_seconds_count", destination="slack") == 1
    assert value(after, "gateway_delivery_latency_seconds_sum", destination="slack") > 0
    assert value(after, "gateway_delivery_latency_seconds_count", destination="crm") == 0
    assert value(after, "gateway_queue_pending") == 2  # both wait an hour for `later`, as its Retry-After asked
    assert value(after, "gateway_queue_oldest_due_age_seconds") == 0  # not due yet
    assert value(after, "gateway_dead_letters") == 5


async def test_store_outage_is_counted_as_unavailable(
    aiohttp_client: MakeClient, write_config: Callable[[str], Path]
) -> None:
    text = config_text(*(refused_url() for _ in range(5)))
    client = await aiohttp_client(make_app(write_config(text), run_worker=False))
    await client.app[STORE].close()
    assert await post(client, VIP) == 503
    samples = await scrape(client)  # the queue gauges cannot be read now; the scrape still answers
    assert value(samples, "gateway_events_received_total", source="missive", outcome="unavailable") == 1
    assert value(samples, "gateway_events_received_total", source="missive", outcome="accepted") == 0


async def test_queue_gauges_show_what_waits(aiohttp_client: MakeClient, write_config: Callable[[str], Path]) -> None:
    clock = FakeClock()
    text = config_text(*(refused_url() for _ in range(5)))
    client = await aiohttp_client(make_app(write_config(text), clock=clock, run_worker=False))
    assert await post(client, VIP) == 200
    clock.advance(90)
    assert await post(client, SMS) == 200
    clock.advance(30)
    samples = await scrape(client)
    assert value(samples, "gateway_queue_pending") == 5 + 3
    assert value(samples, "gateway_queue_oldest_due_age_seconds") == 120
    assert value(samples, "gateway_dead_letters") == 0


async def test_each_app_counts_alone(aiohttp_client: MakeClient, write_config: Callable[[str], Path]) -> None:
    text = config_text(*(refused_url() for _ in range(5)))
    first_config = write_config(text)
    second_config = first_config.with_name("second.yaml")
    second_config.write_text(text.replace("gateway.db", "second.db"), encoding="utf-8")
    first = await aiohttp_client(make_app(first_config, run_worker=False))
    second = await aiohttp_client(make_app(second_config, run_worker=False))
    assert await post(first, b"{}") == 200
    assert await post(first, b"{}") == 200
    assert await post(second, b"{}") == 200
    counts = [
        value(await scrape(client), "gateway_events_received_total", source="missive", outcome="validation")
        for client in (first, second)
    ]
    assert counts == [2, 1]


def result_of(status_code: int | None, error: str | None) -> AttemptResult:
    return AttemptResult(Attempt("d", 1, 0, 5.0, status_code, error, None), DeliveryStatus.PENDING)


@pytest.mark.parametrize(
    ("status_code", "error", "expected"),
    [
        pytest.param(204, None, "2xx", id="no-content"),
        pytest.param(302, "HTTP 302; redirects are not followed", "3xx", id="redirect"),
        pytest.param(429, "HTTP 429: slow down", "4xx", id="rate-limited"),
        pytest.param(503, "HTTP 503", "5xx", id="unavailable"),
        pytest.param(None, "timeout: no answer within 10 s", "timeout", id="timeout"),
        pytest.param(None, "connection: cannot connect to h:1: refused (gave up after 3 attempts)", "connection",
                     id="refused-gave-up"),
        pytest.param(None, "invalid: the URL is not a valid http(s) URL", "invalid", id="invalid-url"),
        pytest.param(None, "token: HTTP 400: invalid_client", "token", id="token-endpoint"),
        pytest.param(None, "destination 'x' is not in the config; add it back and replay", "not_sent",
                     id="removed-destination"),
    ],
)
def test_attempt_result_classes(status_code: int | None, error: str | None, expected: str) -> None:
    assert attempt_result(result_of(status_code, error)) == expected


async def test_the_queue_is_read_from_the_store_once_a_second_at_most(
    aiohttp_client: MakeClient, write_config: Callable[[str], Path]
) -> None:
    clock = FakeClock()
    text = config_text(*(refused_url() for _ in range(5)))
    client = await aiohttp_client(make_app(write_config(text), clock=clock, run_worker=False))
    assert value(await scrape(client), "gateway_queue_pending") == 0
    assert await post(client, VIP) == 200
    scrapes = await asyncio.gather(*(scrape(client) for _ in range(20)))
    assert {value(samples, "gateway_queue_pending") for samples in scrapes} == {0}  # not read again yet
    clock.advance(1)
    assert value(await scrape(client), "gateway_queue_pending") == 5
