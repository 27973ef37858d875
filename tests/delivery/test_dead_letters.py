"""Dead letters and replay: the shared service and `gateway deliveries` / `gateway replay`, on real SQLite files."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.clock import FakeClock, SystemClock, utc_text
from gateway.delivery.dead_letters import NotFound, ReplayOutcome, parse_filter, replay, replay_filter
from gateway.delivery.filters import FilterError
from gateway.delivery.send import make_session
from gateway.delivery.worker import Worker
from gateway.ingest.accept import accept
from gateway.ingest.signature import sign
from gateway.model import Attempt, AttemptResult, DeliveryFilter, DeliveryStatus, DestinationPause
from gateway.routing.compiled import LoadedConfig, load_config
from gateway.store.sqlite import SqliteStore
from tests.conftest import FIXTURE_SECRET, fixture_bytes
from tests.fakes import FakeDestination, Reply

START_MS = 1_772_366_400_000
EMAIL = "incoming-email-with-labels.json"  # rule.type incoming_email, subject "Order HL-20931 arrived damaged"
CRM_TOKEN = "bearer-secret-value"
QUERY_SECRET = "querysecret123"
SECRETS = [CRM_TOKEN, QUERY_SECRET, FIXTURE_SECRET]
SUBJECT_BODY = '{subject: "{{ message.subject }}", key: "${CRM_TOKEN}"}'
BROKEN_BODY = '{subject: "{{ nope.field }}"}'
EITHER_EMAIL = "{path: $.rule.type, in: [incoming_email, outgoing_email]}"


def config_text(url: str, body: str = SUBJECT_BODY, when: str = "{path: $.rule.type, equals: incoming_email}",
                to: str = "crm", route: str = "vip") -> str:  # fmt: skip
    """A config whose route `route` sends `body` to `to`; crm carries credentials in its URL and headers."""
    return f"""\
storage: {{path: gateway.db}}
sources:
  missive: {{secrets: ["{FIXTURE_SECRET}"]}}
destinations:
  crm:
    url: "{url}?api_token={QUERY_SECRET}"
    headers: {{Authorization: "Bearer ${{CRM_TOKEN}}"}}
    retry: {{attempts: 3, backoff: 10ms, max_backoff: 50ms}}
  other: {{url: "{url}"}}
routes:
  - name: {route}
    when: {when}
    send:
      - to: {to}
        body: {body}
"""


@pytest.fixture(autouse=True)
def crm_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_TOKEN", CRM_TOKEN)


@pytest.fixture
def store(sqlite_store: SqliteStore) -> SqliteStore:
    return sqlite_store


@pytest.fixture
def clock() -> FakeClock:
    """Ten minutes ago, so that the CLI's `--since` (counted from the real clock) sees what tests stored."""
    return FakeClock(SystemClock().now_ms() - 600_000)


@pytest.fixture
def configure(write_config: Callable[[str, str], Path]) -> Callable[..., LoadedConfig]:
    """Write a config (config.yaml unless `name` says otherwise) and load it."""

    def make(url: str, name: str = "config.yaml", **options: str) -> LoadedConfig:
        return load_config(write_config(config_text(url, **options), name))

    return make


async def receive(loaded: LoadedConfig, store: SqliteStore, clock: FakeClock, fixture: str = EMAIL) -> str:
    body = fixture_bytes(fixture)
    accepted = await accept(loaded, store, "missive", body, sign(FIXTURE_SECRET.encode(), body), clock.now_ms())
    assert accepted.result is not None and not accepted.result.duplicate
    return accepted.result.event_id


async def deliver(loaded: LoadedConfig, store: SqliteStore, clock: FakeClock) -> None:
    async with make_session() as session:
        await Worker(store, loaded.config.destinations, session, clock=clock).drain()


async def only_delivery_id(store: SqliteStore) -> str:
    (delivery,) = await store.list_deliveries(DeliveryFilter())
    return delivery.id


async def statuses(store: SqliteStore) -> list[DeliveryStatus]:
    return [delivery.status for delivery in await store.list_deliveries(DeliveryFilter())]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({}, DeliveryFilter(limit=100), id="nothing-is-anything"),
        pytest.param({"status": "dead", "route": "vip", "destination": "crm", "event_id": "evt_1", "limit": "5"},
                     DeliveryFilter(DeliveryStatus.DEAD, "vip", "crm", "evt_1", limit=5), id="every-field"),
        pytest.param({"since": "1h"}, DeliveryFilter(since_ms=START_MS - 3_600_000, limit=100), id="since-is-an-age"),
        pytest.param({"limit": 7, "route": None}, DeliveryFilter(limit=7), id="json-int-limit-and-null"),
    ],
)  # fmt: skip
def test_parse_filter(fields: dict[str, object], expected: DeliveryFilter) -> None:
    assert parse_filter(fields, START_MS) == expected


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({"status": "deadd"}, "unknown status 'deadd'; use one of pending, held, delivered, dead",
                     id="status"),
        pytest.param({"since": "soon"}, "since: 'soon' is not a duration", id="since"),
        pytest.param({"since": "-1h"}, "since: '-1h' is not a duration", id="negative-since"),
        pytest.param({"limit": "0"}, "limit '0' must be a whole number from 1 to 10000", id="zero-limit"),
        pytest.param({"limit": "lots"}, "limit 'lots' must be a whole number", id="word-limit"),
        pytest.param({"limit": 10001}, "limit '10001' must be a whole number from 1 to 10000", id="huge-limit"),
        pytest.param({"statuss": "dead"}, "unknown filter 'statuss'; filters are: status, route", id="unknown-filter"),
        pytest.param({"route": ["a"]}, "filter 'route' must be a string, not list", id="not-a-string"),
    ],
)
def test_parse_filter_refuses_bad_values(fields: dict[str, object], message: str) -> None:
    with pytest.raises(FilterError) as caught:
        parse_filter(fields, START_MS)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("status", "ok"),
    [
        pytest.param("dead", True, id="dead"),
        pytest.param("delivered", True, id="delivered-to-send-again"),
        pytest.param("pending", False, id="pending-is-queued-already"),
        pytest.param(None, False, id="no-status-would-replay-everything"),
    ],
)
def test_replay_by_filter_needs_dead_or_delivered(status: str | None, ok: bool) -> None:
    if ok:
        assert replay_filter({"status": status}, START_MS).limit == 1000
    else:
        with pytest.raises(FilterError, match="replay by filter needs status dead"):
            replay_filter({"status": status}, START_MS)


async def test_dead_letter_is_delivered_after_the_destination_is_fixed(
    configure: Callable[..., LoadedConfig], store: SqliteStore, clock: FakeClock
) -> None:
    async with FakeDestination([Reply(400, "missing field"), 200]) as crm:
        loaded = configure(crm.url("/notes"))
        await receive(loaded, store, clock)
        await deliver(loaded, store, clock)
        (dead,) = await store.list_deliveries(DeliveryFilter(status=DeliveryStatus.DEAD))
        assert dead.last_error is not None and "400" in dead.last_error

        report = await replay(loaded, store, replay_filter({"status": "dead"}, clock.now_ms()), clock.now_ms())
        assert [(item.delivery.id, item.outcome) for item in report.items] == [(dead.id, ReplayOutcome.QUEUED)]
        await deliver(loaded, store, clock)

    assert await statuses(store) == [DeliveryStatus.DELIVERED]
    assert [attempt.status_code for attempt in await store.list_attempts(dead.id)] == [400, 200]
    first, second = crm.received
    assert second.body == first.body
    assert second.headers["Idempotency-Key"] == first.headers["Idempotency-Key"]


async def test_replaying_twice_queues_once(
    configure: Callable[..., LoadedConfig], store: SqliteStore, clock: FakeClock
) -> None:
    async with FakeDestination([400]) as crm:
        loaded = configure(crm.url())
        await receive(loaded, store, clock)
        await deliver(loaded, store, clock)
    delivery_id = await only_delivery_id(store)
    by_id = DeliveryFilter(ids=(delivery_id,))

    first = await replay(loaded, store, by_id, clock.now_ms())
    again = await replay(loaded, store, by_id, clock.now_ms())
    by_filter = await replay(loaded, store, replay_filter({"status": "dead"}, clock.now_ms()), clock.now_ms())

    assert first.count(ReplayOutcome.QUEUED) == 1
    assert [(item.outcome, item.reason) for item in again.items] == [(ReplayOutcome.SKIPPED, "already pending")]
    assert by_filter.items == ()
    assert await statuses(store) == [DeliveryStatus.PENDING]
    assert (await store.get_delivery(delivery_id)).attempts == 0  # type: ignore[union-attr]


async def test_replay_of_an_unknown_id_is_not_found(
    configure: Callable[..., LoadedConfig], store: SqliteStore, clock: FakeClock
) -> None:
    with pytest.raises(NotFound, match="no delivery with id 'dlv_nope'"):
        await replay(configure("http://127.0.0.1:9/"), store, DeliveryFilter(ids=("dlv_nope",)), clock.now_ms())


async def test_template_fix_and_rerender_delivers_the_new_request(
    configure: Callable[..., LoadedConfig], store: SqliteStore, clock: FakeClock
) -> None:
    async with FakeDestination([200]) as crm:
        broken = configure(crm.url(), body=BROKEN_BODY)
        event_id = await receive(broken, store, clock)
        delivery_id = await only_delivery_id(store)
        dead = await store.get_delivery(delivery_id)
        assert dead is not None and dead.request is None and "nope" in (dead.last_error or "")

        plain = await replay(broken, store, DeliveryFilter(ids=(delivery_id,)), clock.now_ms())
        assert plain.items[0].outcome is ReplayOutcome.SKIPPED
        assert "fix the template, then replay with rerender" in (plain.items[0].reason or "")
        still_broken = await replay(broken, store, DeliveryFilter(ids=(delivery_id,)), clock.now_ms(), rerender=True)
        assert still_broken.items[0].outcome is ReplayOutcome.FAILED
        assert "still cannot render" in (still_broken.items[0].reason or "")
        assert await statuses(store) == [DeliveryStatus.DEAD]

        fixed = configure(crm.url(), name="fixed.yaml")
        report = await replay(fixed, store, DeliveryFilter(ids=(delivery_id,)), clock.now_ms(), rerender=True)
        assert report.count(ReplayOutcome.QUEUED) == 1
        stored = await store.get_delivery(delivery_id)
        assert stored is not None and stored.request is not None and b"HL-20931" in stored.request.body
        await deliver(fixed, store, clock)

    assert await statuses(store) == [DeliveryStatus.DELIVERED]
    (received,) = crm.received
    assert json.loads(received.body) == {"subject": "Order HL-20931 arrived damaged", "key": CRM_TOKEN}
    assert received.headers["X-Gateway-Event-Id"] == event_id
    assert received.headers["Idempotency-Key"] == f"{event_id}:vip:0"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        pytest.param({"when": "{path: $.rule.type, equals: new_comment}"}, "route 'vip' no longer matches: ",
                     id="condition-changed"),
        pytest.param({"to": "other"}, "route 'vip' no longer sends to 'crm'", id="sends-elsewhere"),
        pytest.param({"route": "renamed"}, "route 'vip' is no longer in the config for its source", id="route-gone"),
    ],
)  # fmt: skip
async def test_rerender_skips_what_the_current_config_no_longer_sends(
    configure: Callable[..., LoadedConfig], store: SqliteStore, clock: FakeClock, change: dict[str, str], reason: str
) -> None:
    async with FakeDestination([400]) as crm:
        loaded = configure(crm.url())
        await receive(loaded, store, clock)
        await deliver(loaded, store, clock)
        changed = configure(crm.url(), name="changed.yaml", **change)
        report = await replay(changed, store, replay_filter({"status": "dead"}, clock.now_ms()), clock.now_ms(), True)

    (item,) = report.items
    assert item.outcome is ReplayOutcome.SKIPPED
    assert item.reason is not None and item.reason.startswith(reason)
    assert await statuses(store) == [DeliveryStatus.DEAD]


# The command line, as an operator runs it next to a running gateway (the store stays open meanwhile).


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def dead_letters(configure: Callable[..., LoadedConfig], store: SqliteStore, clock: FakeClock) -> LoadedConfig:
    """Two events, ten and one minute old, whose deliveries went dead: the CRM answered 400 echoing its token."""
    async with FakeDestination([Reply(400, f"bad token {CRM_TOKEN}")]) as crm:
        loaded = configure(crm.url("/notes"), when=EITHER_EMAIL)
        await receive(loaded, store, clock)
        clock.advance(540)
        await receive(loaded, store, clock, "outgoing-email.json")
        await deliver(loaded, store, clock)
    return loaded


async def test_cli_lists_deliveries_masked(
    configure: Callable[..., LoadedConfig], store: SqliteStore, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    loaded = await dead_letters(configure, store, clock)
    config = str(loaded.file)
    code, table, _ = await cli(capsys, "deliveries", "-c", config, "--status", "dead")
    _, listed, _ = await cli(capsys, "deliveries", "-c", config, "--json")
    newest = json.loads(listed)["deliveries"][0]
    _, detail, _ = await cli(capsys, "deliveries", "-c", config, "--id", newest["id"])
    _, detail_json, _ = await cli(capsys, "deliveries", "-c", config, "--id", newest["id"], "--json")

    assert code == 0
    header, *rows, footer = table.splitlines()
    assert header.split() == ["ID", "STATUS", "ATTEMPTS", "ROUTE", "DESTINATION", "CREATED", "LAST", "ERROR"]
    assert len(rows) == 2 and all(" dead " in row and " 1/3 " in row for row in rows)
    assert footer == "2 deliveries"
    assert json.loads(listed)["count"] == 2
    assert newest["request"]["url"].endswith("/notes?api_token=***")
    assert newest["request"]["headers"]["Authorization"] == "Bearer ***"
    assert f"delivery {newest['id']} (dead, 1/3 attempts)" in detail
    assert [attempt["status_code"] for attempt in json.loads(detail_json)["attempt_log"]] == [400]
    for output in (table, listed, detail, detail_json):
        assert not [secret for secret in SECRETS if secret in output]


async def test_cli_shows_one_delivery_with_whole_errors_and_the_attempts_after_a_replay(
    configure: Callable[..., LoadedConfig], store: SqliteStore, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    refusal = f"the note is refused: property 'hs_timestamp' must be milliseconds, token {CRM_TOKEN} was read"
    async with FakeDestination([Reply(400, refusal), Reply(200, "created")]) as crm:
        loaded = configure(crm.url("/notes"))
        await receive(loaded, store, clock)
        await deliver(loaded, store, clock)
        delivery_id = await only_delivery_id(store)
        _, queued, _ = await cli(capsys, "replay", "-c", str(loaded.file), "--id", delivery_id)
        await deliver(loaded, store, clock)
        code, detail, _ = await cli(capsys, "deliveries", "-c", str(loaded.file), "--id", delivery_id)

    assert code == 0 and queued.startswith("OUTCOME")
    lines = detail.splitlines()
    attempts = lines[lines.index("attempts:") + 1:]
    shown = refusal.replace(CRM_TOKEN, "***")
    assert [line.split("  ")[1] for line in attempts if line.startswith("  #")] == ["#1", "#1 after replay"]
    assert attempts[0].endswith("answered 400") and attempts[3].endswith("answered 200")
    assert attempts[1:3] == [f"      error: HTTP 400: {shown}", f"      answer: {shown}"]
    assert attempts[4] == "      answer: created"
    assert "ERROR" not in detail and CRM_TOKEN not in detail


async def test_cli_says_which_deliveries_wait_for_a_quota_and_until_when(
    configure: Callable[..., LoadedConfig], store: SqliteStore, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    loaded = configure("http://127.0.0.1:9/notes")
    await receive(loaded, store, clock)
    (claimed,) = await store.claim({"crm": 1}, clock.now_ms(), 30_000)
    until_ms = SystemClock().now_ms() + 3_600_000  # the CLI compares with the time it runs
    attempt = Attempt(claimed.id, 1, clock.now_ms(), 5.0, 429, "waiting for quota: HTTP 429: slow down", "slow down")
    pause = DestinationPause("crm", until_ms, "HTTP 429: slow down")
    await store.finish(claimed, AttemptResult(attempt, DeliveryStatus.PENDING, until_ms, counted=False, pause=pause))

    _, table, _ = await cli(capsys, "deliveries", "-c", str(loaded.file))
    _, detail, _ = await cli(capsys, "deliveries", "-c", str(loaded.file), "--id", claimed.id)

    waiting = f"waiting for quota until {utc_text(until_ms)}"
    _, row, count, destination = table.splitlines()
    assert " pending " in row and " 0/3 " in row and waiting in row
    assert (count, destination) == ("1 delivery", f"destination crm: {waiting}: HTTP 429: slow down")
    assert f"  {waiting} (the destination's quota is spent; waiting costs no attempt)" in detail.splitlines()


@pytest.mark.parametrize(
    ("filters", "count"),
    [
        pytest.param(["--route", "vip"], 2, id="route"),
        pytest.param(["--route", "other"], 0, id="other-route"),
        pytest.param(["--destination", "crm"], 2, id="destination"),
        pytest.param(["--destination", "other"], 0, id="other-destination"),
        pytest.param(["--since", "5m"], 1, id="since"),
        pytest.param(["--limit", "1"], 1, id="limit"),
        pytest.param(["--status", "pending"], 0, id="status"),
    ],
)
async def test_cli_filters(
    configure: Callable[..., LoadedConfig], store: SqliteStore, clock: FakeClock, capsys: pytest.CaptureFixture[str],
    filters: list[str], count: int,
) -> None:  # fmt: skip
    loaded = await dead_letters(configure, store, clock)
    code, out, _ = await cli(capsys, "deliveries", "-c", str(loaded.file), "--json", *filters)
    assert code == 0
    assert json.loads(out)["count"] == count


async def test_cli_filters_by_event(
    configure: Callable[..., LoadedConfig], store: SqliteStore, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    loaded = await dead_letters(configure, store, clock)
    event_ids = sorted({delivery.event_id for delivery in await store.list_deliveries(DeliveryFilter())})
    code, out, _ = await cli(capsys, "deliveries", "-c", str(loaded.file), "--json", "--event", event_ids[0])
    assert code == 0
    assert [doc["event_id"] for doc in json.loads(out)["deliveries"]] == [event_ids[0]]


async def test_cli_replays_dead_letters_once(
    configure: Callable[..., LoadedConfig], store: SqliteStore, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    loaded = await dead_letters(configure, store, clock)
    config = str(loaded.file)
    code, out, _ = await cli(capsys, "replay", "-c", config, "--status", "dead", "--route", "vip")
    _, again, _ = await cli(capsys, "replay", "-c", config, "--status", "dead")
    some_id = (await store.list_deliveries(DeliveryFilter()))[0].id
    _, by_id, _ = await cli(capsys, "replay", "-c", config, "--id", some_id, "--json")

    assert code == 0
    assert out.count("queued   dlv_") == 2
    assert "2 queued, 0 skipped, 0 failed" in out
    assert "picks them up within 0.5 s" in out
    assert again.strip() == "nothing to replay: no delivery matches"
    assert json.loads(by_id) == {
        "queued": 0, "skipped": 1, "failed": 0, "more": False,
        "deliveries": [{"id": some_id, "route": "vip", "destination": "crm", "outcome": "skipped",
                        "reason": "already pending"}],
    }  # fmt: skip
    assert await statuses(store) == [DeliveryStatus.PENDING] * 2


async def test_cli_rerenders_after_a_template_fix(
    configure: Callable[..., LoadedConfig], store: SqliteStore, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    async with FakeDestination([200]) as crm:
        broken = configure(crm.url(), body=BROKEN_BODY)
        await receive(broken, store, clock)
        _, listed, _ = await cli(capsys, "deliveries", "-c", str(broken.file), "--status", "dead")
        fixed = configure(crm.url(), name="fixed.yaml")
        code, out, _ = await cli(capsys, "replay", "-c", str(fixed.file), "--status", "dead", "--rerender")
        await deliver(fixed, store, clock)

    assert "'nope' is undefined" in listed
    assert code == 0 and "1 queued" in out
    assert await statuses(store) == [DeliveryStatus.DELIVERED]
    assert json.loads(crm.received[0].body)["subject"] == "Order HL-20931 arrived damaged"


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        pytest.param(["deliveries", "--status", "bogus"], "unknown status 'bogus'", id="status"),
        pytest.param(["deliveries", "--since", "1 hour"], "since: '1 hour' is not a duration", id="since"),
        pytest.param(["deliveries", "--id", "dlv_nope"], "no delivery with id 'dlv_nope'", id="unknown-delivery"),
        pytest.param(["replay", "--id", "dlv_nope"], "no delivery with id 'dlv_nope'", id="unknown-replay"),
        pytest.param(["replay", "--status", "pending"], "replay by filter needs status dead", id="replay-pending"),
    ],
)
async def test_cli_errors_are_one_line(
    configure: Callable[..., LoadedConfig], store: SqliteStore, capsys: pytest.CaptureFixture[str], argv: list[str],
    error: str,
) -> None:  # fmt: skip
    loaded = configure("http://127.0.0.1:9/")
    code, out, err = await cli(capsys, argv[0], "-c", str(loaded.file), *argv[1:])
    assert (code, out) == (1, "")
    assert err.startswith(f"error: {error}") and err.count("\n") == 1


async def test_cli_says_when_there_is_no_store(
    write_config: Callable[[str, str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    text = config_text("http://127.0.0.1:9/").replace("path: gateway.db", "path: never/made.db")
    config = write_config(text, "c.yaml")
    code, _, err = await cli(capsys, "deliveries", "-c", str(config))
    assert code == 1
    assert "no store at" in err and "has `gateway serve` run with this config?" in err
    assert not (config.parent / "never").exists()


async def test_replay_says_when_its_limit_left_some_behind(
    configure: Callable[..., LoadedConfig], store: SqliteStore, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    loaded = await dead_letters(configure, store, clock)
    code, first, _ = await cli(capsys, "replay", "-c", str(loaded.file), "--status", "dead", "--limit", "1")
    _, second, _ = await cli(capsys, "replay", "-c", str(loaded.file), "--status", "dead", "--limit", "1", "--json")
    assert code == 0
    assert "1 queued" in first and "the limit was reached: run the replay again for the rest" in first
    assert json.loads(second)["queued"] == 1
    assert await statuses(store) == [DeliveryStatus.PENDING] * 2
