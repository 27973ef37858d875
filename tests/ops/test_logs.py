"""Logs: one JSON object per line with the ids of what changed, and never a secret anywhere a gateway writes."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import signal
import sys
import textwrap
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.config.credentials import literal_credentials
from gateway.config.schema import GatewayConfig
from gateway.ops.logs import LogFormat, default_format, make_handler, remember_secrets
from gateway.routing.compiled import load_config
from tests.conftest import fixture_bytes
from tests.ops.test_reload import GatewayProcess, start_gateway, stop_gateway

MakeServer = Callable[[web.Application], Awaitable[TestServer]]
REPO = Path(__file__).resolve().parents[2]

SOURCE_SECRET = "src-secret-7Hq2"
OLD_SOURCE_SECRET = "src-secret-old-9Xk"
NEW_SOURCE_SECRET = "src-secret-new-4Gb"
CRM_TOKEN = "crm-env-token-5Tz"
HEADER_TOKEN = "literal-header-token-3Rw"
URL_PASSWORD = "url-password-8Lm"
QUERY_KEY = "query-key-4Np"
SLACK_PATH_SECRET = "slack-path-secret-6Yv"
DISCORD_TOKEN = "discord-token-2Kd"
SIGNING_SECRET = "outbound-sign-secret-1Qa"
ADMIN_TOKEN = "admin-token-0Zc"
RELOADED_TOKEN = "reload-added-token-8Pp"
BASIC_CREDENTIALS = base64.b64encode(f"svc-user:{URL_PASSWORD}".encode()).decode()
EVERY_SECRET = [
    SOURCE_SECRET, OLD_SOURCE_SECRET, NEW_SOURCE_SECRET, CRM_TOKEN, HEADER_TOKEN, URL_PASSWORD, QUERY_KEY,
    SLACK_PATH_SECRET, DISCORD_TOKEN, SIGNING_SECRET, ADMIN_TOKEN, RELOADED_TOKEN, BASIC_CREDENTIALS,
]


# --- the formatter and the filter, on their own --------------------------------------------------------------------

@pytest.fixture
def captured() -> Iterator[Callable[[LogFormat], tuple[logging.Logger, io.StringIO]]]:
    """A logger of our own writing through `make_handler` into a string, detached again afterwards."""
    logger = logging.getLogger("gateway.test-logs")
    logger.propagate = False
    logger.setLevel(logging.INFO)

    def attach(log_format: LogFormat) -> tuple[logging.Logger, io.StringIO]:
        stream = io.StringIO()
        logger.addHandler(make_handler(log_format, stream))
        return logger, stream

    yield attach
    logger.handlers.clear()
    logger.propagate = True


def test_json_logs_are_one_object_per_line_with_the_extra_fields(
    captured: Callable[[LogFormat], tuple[logging.Logger, io.StringIO]],
) -> None:
    logger, stream = captured("json")
    logger.info("delivery %s delivered", "dlv_1", extra={"delivery_id": "dlv_1", "attempt": 2, "max_attempts": 8})
    logger.warning("two\nlines")
    first, second = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert {key: first[key] for key in ("level", "logger", "msg", "delivery_id", "attempt", "max_attempts")} == {
        "level": "info", "logger": "gateway.test-logs", "msg": "delivery dlv_1 delivered", "delivery_id": "dlv_1",
        "attempt": 2, "max_attempts": 8,
    }
    assert first["ts"].endswith("+00:00")
    assert second["msg"] == "two\nlines"


def test_every_part_of_a_record_is_masked(
    captured: Callable[[LogFormat], tuple[logging.Logger, io.StringIO]], write_config: Callable[[str], Path]
) -> None:
    remember_secrets(load_config(write_config(f"""\
        sources:
          missive: {{secrets: ["{SOURCE_SECRET}"]}}
        destinations:
          crm: {{url: "https://crm.example/x", headers: {{X-Api-Token: "{HEADER_TOKEN}"}}}}
        """), environ={}))
    logger, stream = captured("json")
    try:
        raise ValueError(f"boom with {HEADER_TOKEN}")
    except ValueError:
        logger.exception(
            "message %s and https://u:%s@h/p", SOURCE_SECRET, URL_PASSWORD,
            extra={"error": f"echo {HEADER_TOKEN}", "routes": [SOURCE_SECRET], "attempt": 1},
        )
    record = json.loads(stream.getvalue())
    assert record["msg"] == "message *** and https://u:***@h/p"
    assert (record["error"], record["routes"], record["attempt"]) == ("echo ***", ["***"], 1)
    assert record["exc"].endswith("ValueError: boom with ***")
    assert HEADER_TOKEN not in stream.getvalue() and SOURCE_SECRET not in stream.getvalue()


def test_text_logs_are_masked_too(
    captured: Callable[[LogFormat], tuple[logging.Logger, io.StringIO]],
) -> None:
    logger, stream = captured("text")
    logger.info("posting to https://hooks.slack.com/services/T1/B2/%s", "abcdefghSECRET")
    assert stream.getvalue().rstrip().endswith("INFO gateway.test-logs: posting to https://hooks.slack.com/services/***")


def test_default_format_is_text_on_a_terminal_and_json_otherwise() -> None:
    leader, follower = os.openpty()
    try:
        with os.fdopen(follower, "w") as terminal:
            assert default_format(terminal) == "text"
    finally:
        os.close(leader)
    assert default_format(io.StringIO()) == "json"


@pytest.mark.parametrize(
    ("destination", "expected"),
    [
        pytest.param({"url": "https://x.example/", "headers": {"Authorization": "Bearer abc12345"}},
                     {"Bearer abc12345", "abc12345"}, id="bearer-header"),
        pytest.param({"url": "https://x.example/", "headers": {"X-Api-Token": "tok-9876"}}, {"tok-9876"},
                     id="token-header"),
        pytest.param({"url": "https://x.example/", "headers": {"Authorization": "Bearer {{ event.id }}"}}, set(),
                     id="templated-header"),
        pytest.param({"url": "https://x.example/", "headers": {"X-Team": "support"}}, set(), id="plain-header"),
        pytest.param({"url": "https://bot:pa55word@x.example/"},
                     {"pa55word", base64.b64encode(b"bot:pa55word").decode()}, id="url-password"),
        pytest.param({"url": "https://x.example/notes?api_key=k3y-value&page=2"}, {"k3y-value"}, id="query-key"),
        pytest.param({"type": "slack", "url": "https://hooks.slack.com/services/T1/B2/xyzXYZ123456789"},
                     {"xyzXYZ123456789"}, id="webhook-token"),
        pytest.param({"type": "discord", "url": "http://127.0.0.1:8080/hook"}, set(), id="short-webhook-path"),
        pytest.param({"url": "https://x.example/services/T1/B2/xyzXYZ123456789"}, set(), id="http-path-is-not-secret"),
    ],
)
def test_config_secrets(destination: dict[str, Any], expected: set[str]) -> None:
    config = GatewayConfig.model_validate({"sources": {"missive": {}}, "destinations": {"d": destination}})
    assert literal_credentials(config) == expected


# --- a real gateway through a day's worth of trouble ---------------------------------------------------------------

def echoing_service() -> web.Application:
    """A service that refuses, quoting back the credentials and URL it got (as some APIs' error pages do):
    503 the first time for each path, then 401."""
    seen: Counter[str] = Counter()

    async def refuse(request: web.Request) -> web.Response:
        await request.read()
        seen[request.path] += 1
        quoted = f"{request.headers.get('Authorization', '-')} {request.headers.get('X-Api-Token', '-')} {request.url}"
        return web.Response(status=503 if seen[request.path] == 1 else 401, text=f"denied: {quoted}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    return app


def scenario_config(base: str, reloaded: bool = False) -> str:
    """Every kind of secret, with every destination pointing at the echoing service."""
    host = base.removeprefix("http://")
    text = f"""\
        storage: {{path: gateway.db}}
        admin: {{token: "{ADMIN_TOKEN}"}}
        sources:
          missive: {{secrets: ["{NEW_SOURCE_SECRET if reloaded else SOURCE_SECRET}", "{OLD_SOURCE_SECRET}"]}}
        destinations:
          crm:
            url: "{base}/crm/notes?api_key={QUERY_KEY}"
            headers: {{Authorization: "Bearer ${{CRM_TOKEN}}"}}
            sign: {{secret: "{SIGNING_SECRET}"}}
            retry: {{attempts: 2, backoff: 10ms, max_backoff: 10ms}}
          vault:
            url: "http://svc-user:{URL_PASSWORD}@{host}/vault"
            headers: {{X-Api-Token: "{HEADER_TOKEN}"}}
            retry: {{attempts: 2, backoff: 10ms, max_backoff: 10ms}}
          slack:
            type: slack
            url: "{base}/services/T0SECRET/B0SECRET/{SLACK_PATH_SECRET}"
            retry: {{attempts: 2, backoff: 10ms, max_backoff: 10ms}}
          discord:
            type: discord
            url: "{base}/api/webhooks/123456789/{DISCORD_TOKEN}"
            retry: {{attempts: 2, backoff: 10ms, max_backoff: 10ms}}
        routes:
          - name: everything
            when: {{path: $.rule.type, equals: incoming_email}}
            send:
              - {{to: crm, body: {{subject: "{{{{ message.subject }}}}"}}}}
              - {{to: vault}}
              - {{to: slack, body: {{text: hi}}}}
              - {{to: discord, body: {{content: hi}}}}
        """
    if reloaded:
        text = text.replace("        routes:\n", f"""\
          added:
            url: "{base}/added"
            headers: {{Authorization: "Bearer {RELOADED_TOKEN}"}}
            retry: {{attempts: 2, backoff: 10ms, max_backoff: 10ms}}
        routes:
          - name: sms
            when: {{path: $.rule.type, equals: incoming_sms_message}}
            send: [{{to: added}}]
""")
    return textwrap.dedent(text)


async def run_cli(*argv: str, env: dict[str, str]) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **env},
    )
    out, err = await process.communicate()
    return out.decode() + err.decode()


def dead_records(gateway: GatewayProcess) -> list[dict[str, Any]]:
    return [record for record in gateway.log_records() if record.get("outcome") == "dead"]


async def test_no_secret_reaches_any_output(aiohttp_server: MakeServer, tmp_path: Path) -> None:
    env = {"CRM_TOKEN": CRM_TOKEN}
    service = await aiohttp_server(echoing_service())
    base = str(service.make_url("")).rstrip("/")
    config = tmp_path / "config.yaml"
    config.write_text(scenario_config(base), encoding="utf-8")
    gateway = await start_gateway(config, env)
    try:
        email = fixture_bytes("incoming-email-with-labels.json")
        assert (await gateway.post("/hooks/missive", email, SOURCE_SECRET))[0] == 200
        assert (await gateway.post("/hooks/missive", email + b"\n", OLD_SOURCE_SECRET))[0] == 200  # rotation
        assert (await gateway.post("/hooks/missive", email + b"\n\n", "wrong-secret"))[0] == 401
        await gateway.wait_for_log(lambda record: record.get("outcome") == "dead", count=8)

        config.write_text(scenario_config(base, reloaded=True), encoding="utf-8")
        gateway.signal(signal.SIGHUP)
        await gateway.wait_for_log(lambda record: record["msg"].startswith("config reloaded"))
        sms = fixture_bytes("incoming-sms.json")
        assert (await gateway.post("/hooks/missive", sms, NEW_SOURCE_SECRET))[0] == 200
        await gateway.wait_for_log(lambda record: record.get("destination") == "added" and "outcome" in record, 2)

        valid = tmp_path / "valid.yaml"
        valid.write_text(config.read_text(encoding="utf-8"), encoding="utf-8")
        broken = tmp_path / "broken.yaml"
        broken.write_text(config.read_text(encoding="utf-8").replace("backoff: 10ms,", "backof: 10ms,"), "utf-8")
        config.write_text(broken.read_text(encoding="utf-8"), encoding="utf-8")
        await gateway.wait_for_log(lambda record: "rejected" in record["msg"])
        payload = tmp_path / "email.json"
        payload.write_bytes(email)
        dry_run = await run_cli("test", "-c", str(valid), str(payload), env=env)
        dry_run_json = await run_cli("test", "-c", str(valid), str(payload), "--json", env=env)
        check = await run_cli("check", "-c", str(broken), env=env)
    finally:
        await stop_gateway(gateway)

    everything = gateway.output() + dry_run + dry_run_json + check
    leaks = {
        secret: spelling
        for secret in EVERY_SECRET
        for spelling in (secret, quote(secret, safe=""))
        if spelling in everything
    }
    assert leaks == {}
    # The scenario did happen, and its records say what changed:
    dead = dead_records(gateway)
    assert Counter(record["destination"] for record in dead) == {
        "crm": 2, "vault": 2, "slack": 2, "discord": 2, "added": 1
    }
    assert all("denied: " in record["msg"] and "***" in record["msg"] for record in dead)
    retried = next(record for record in gateway.log_records() if record.get("outcome") == "pending")
    gave_up = next(record for record in dead if record["delivery_id"] == retried["delivery_id"])
    assert {key: (retried[key], gave_up[key]) for key in ("route", "attempt", "max_attempts", "status_code")} == {
        "route": ("everything", "everything"), "attempt": (1, 2), "max_attempts": (2, 2), "status_code": (503, 401)
    }
    assert gave_up["event_id"] == retried["event_id"] and isinstance(gave_up["elapsed_ms"], int)
    assert "Authorization: Bearer ***" in dry_run and "X-Api-Token: ***" in dry_run
    routes = {route["route"]: route for route in json.loads(dry_run_json)["routes"]}
    crm_request = routes["everything"]["sends"][0]["request"]
    assert crm_request["url"].endswith("/crm/notes?api_key=***") and crm_request["headers"]["Authorization"] == (
        "Bearer ***"
    )
    assert "5 problems" in check and "unknown key 'backof'; did you mean 'backoff'?" in check
    assert gateway.process.returncode == 0
