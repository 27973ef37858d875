"""The command line: check, schema and the dry run, as a user runs them."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.cli.main import main
from tests.conftest import FIXTURES
from tests.processes import free_port

CONFIG = """\
sources:
  missive: {secrets: ["${MISSIVE_SECRET:-hook-secret-value}"]}
  other: {}
destinations:
  slack: {type: slack, url: "https://hooks.slack.com/services/T0001/B0001/abcdefSECRETPATH"}
  crm:
    url: https://api.crm.example/notes?api_token=querysecret123
    headers: {Authorization: "Bearer ${CRM_TOKEN:-bearer-secret-value}", X-Team: support}
routes:
  - name: vip
    source: missive
    when:
      all:
        - {path: $.rule.type, equals: incoming_email}
        - {path: "$.conversation.shared_labels[*].name", equals: VIP}
    send:
      - to: slack
        body: {text: "{{ message.subject }}"}
      - to: crm
        body: {at: "{{ message.delivered_at }}", broken: "{{ nope.field }}"}
  - name: comments
    source: missive
    when: {path: $.rule.type, equals: new_comment}
    continue: false
    send: [{to: crm, template: "{{ comment.body }}"}]
  - name: never-reached
    source: missive
    send: [{to: crm}]
"""
SECRETS = ["hook-secret-value", "abcdefSECRETPATH", "querysecret123", "bearer-secret-value"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_check_accepts_a_valid_config(write_config: Callable[[str], Path], capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(CONFIG)
    code, out, err = run(capsys, "check", "-c", str(path))
    assert code == 0
    assert "ok (2 sources, 2 destinations, 3 routes)" in out
    # the warning `serve` logs at start-up (tests/ingest/test_accept.py), for the source without secrets
    assert err == (
        f"{path}: warning: SOURCE other HAS NO SECRETS: anyone who can reach /hooks/other can inject events. "
        "Set a secret on the Missive rule and list it under sources.other.secrets.\n"
    )
    code, out, _ = run(capsys, "check", "-c", str(write_config("sources: {m: {secrets: [s3cret]}}\n")))
    assert out.endswith("ok (1 source, 0 destinations, 0 routes)\n")


def test_an_empty_signing_secret_stops_check_and_serve(write_config: Callable[[str], Path]) -> None:
    path = write_config(CONFIG.replace("${MISSIVE_SECRET:-hook-secret-value}", "${MISSIVE_SECRET}"))
    expected = f"{path}: line 2: sources.missive.secrets[0]: the secret is empty"
    for command in (["check"], ["serve", "--port", str(free_port())]):
        done = subprocess.run(
            [sys.executable, "-m", "gateway", *command, "-c", str(path)], capture_output=True, text=True, timeout=60,
            env={**os.environ, "MISSIVE_SECRET": ""},
        )
        assert done.returncode == 1, done
        assert done.stderr.splitlines()[1].startswith(expected), done.stderr


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"{chr(98 + n)}: &{chr(98 + n)} [{', '.join([f'*{chr(97 + n)}'] * 10)}]\n" for n in range(9)
        ), id="billion-laughs"),
        pytest.param("a: &a [*a]\n", id="recursive-alias"),
        pytest.param("sources: {m: {}}\n? [a]\n: b\n", id="unhashable-key"),
        pytest.param("sources: {m: {path: !!python/object/apply:os.system ['true']}}\n", id="python-tag"),
        pytest.param("sources:\n\tm: {}\n", id="tab"),
    ],
)
def test_check_answers_hostile_yaml_with_one_line(
    write_config: Callable[[str], Path], capsys: pytest.CaptureFixture[str], text: str
) -> None:
    code, _, err = run(capsys, "check", "-c", str(write_config(text)))
    assert code == 1
    assert len(err.splitlines()) == 2 and err.splitlines()[0].endswith("1 problem in the config:"), err


def test_check_never_shows_a_secret_variable_of_a_rejected_config(
    write_config: Callable[[str], Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_TOKEN", "crm-token-0f9a8b7c")
    code, _, err = run(capsys, "check", "-c", str(write_config(CONFIG.replace("X-Team: support}", "X-Team: support}\n"
                                                                              "    timeout: ${CRM_TOKEN}"))))
    assert code == 1
    assert "destinations.crm.timeout: '***' is not a duration" in err and "crm-token" not in err


def test_check_lists_each_problem_on_its_own_line(
    write_config: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    broken = CONFIG.replace("- to: slack", "- to: slak")
    comments_route = "source: missive\n    when: {path: $.rule.type, equals: new_comment}"
    broken = broken.replace(comments_route, comments_route.replace("missive", "misive"))
    path = write_config(broken)
    code, _, err = run(capsys, "check", "-c", str(path))
    assert code == 1
    lines = err.strip().splitlines()
    assert lines[0].endswith("2 problems in the config:")
    assert f"{path}: line 17: routes[0].send[0].to: unknown destination 'slak'; did you mean 'slack'?" in lines
    assert any("routes[1].source: unknown source 'misive'; did you mean 'missive'?" in line for line in lines)
    assert "Traceback" not in err


def test_check_as_a_process_never_shows_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("sources: {m: {dedupe_window: forever}}\nroutes: [{name: r, send: [{to: nowhere}]}]\n")
    done = subprocess.run([sys.executable, "-m", "gateway", "check", "-c", str(path)], capture_output=True, text=True)
    assert done.returncode == 1
    assert "sources.m.dedupe_window: 'forever' is not a duration" in done.stderr
    assert "Traceback" not in done.stderr


def test_schema_is_json_schema_with_the_contract_names(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "schema")
    schema = json.loads(out)
    assert code == 0
    assert set(schema["properties"]) == {"server", "storage", "admin", "sources", "destinations", "routes"}
    condition = schema["$defs"]["Condition"]["properties"]
    assert {"in", "not", "all", "any", "matches", "glob", "exists"} <= set(condition)
    assert "continue" in schema["$defs"]["RouteConfig"]["properties"]


def test_dry_run_explains_routes_and_masks_secrets(
    write_config: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(CONFIG))
    payload = str(FIXTURES / "incoming-email-with-labels.json")
    code, out, _ = run(capsys, "test", "-c", config, payload, "--source", "missive")
    assert code == 0
    assert "✓ vip: matched" in out
    assert "→ slack: POST https://hooks.slack.com/services/***" in out
    assert "CANNOT RENDER" in out and "nope" in out
    assert "✗ comments: $.rule.type equals 'new_comment' failed: saw 'incoming_email'" in out
    assert "Authorization: Bearer ***" in out
    for secret in SECRETS:
        assert secret not in out


def test_dry_run_json_reports_the_same(write_config: Callable[[str], Path], capsys: pytest.CaptureFixture[str]) -> None:
    config = str(write_config(CONFIG))
    code, out, _ = run(capsys, "test", "-c", config, str(FIXTURES / "new-comment.json"), "--source", "missive",
                       "--json")
    report = json.loads(out)
    assert code == 0
    verdicts = {route["route"]: route for route in report["routes"]}
    assert verdicts["vip"]["matched"] is False
    assert verdicts["comments"]["matched"] is True
    assert verdicts["never-reached"]["failed"] == "not evaluated: route 'comments' has continue: false"
    request = verdicts["comments"]["sends"][0]["request"]
    assert request["url"].startswith("https://api.crm.example/notes?api_token=")
    assert all(secret not in out for secret in SECRETS)


AUTH_CONFIG = """\
sources: {missive: {}}
destinations:
  basic:
    url: https://basic.example/notes
    auth: {type: basic, username: api, password: "${API_PASSWORD:-basic-pass-value}"}
  oauth:
    url: https://oauth.example/contacts
    auth: {type: oauth2_client_credentials, token_url: https://login.example/token, client_id: gw-client,
           client_secret: oauth-secret-value, client_auth: basic}
routes:
  - name: all
    send:
      - {to: basic, body: {a: 1}}
      - {to: oauth, body: {quoted: "{{ 'oauth-secret-value' }}"}}
"""


def test_dry_run_shows_where_auth_goes_and_never_its_secrets(
    write_config: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "test", "-c", str(write_config(AUTH_CONFIG)), str(FIXTURES / "new-comment.json"))
    assert code == 0
    assert "→ basic: POST https://basic.example/notes\n        Content-Type: application/json\n" \
           "        X-Gateway-Event-Id: evt_dry_run\n" in out
    assert "Authorization: Basic ***" in out and "Authorization: Bearer ***" in out
    assert '"quoted": "***"' in out
    basic = base64.b64encode(b"api:basic-pass-value").decode()
    assert all(secret not in out for secret in ("basic-pass-value", "oauth-secret-value", basic))


def test_dry_run_needs_a_source_when_there_are_several(
    write_config: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "test", "-c", str(write_config(CONFIG)), str(FIXTURES / "new-comment.json"))
    assert code == 1
    assert "choose one with --source (missive, other)" in err


def test_serve_on_a_busy_port_fails_in_one_line_before_opening_the_store(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("storage: {path: data/gateway.db}\nsources: {missive: {}}\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "serve", "-c", str(config), "--host", "127.0.0.1", "--port", str(port)],
            capture_output=True, text=True, timeout=60,
        )
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot listen on 127.0.0.1:{port}: Address already in use")
    assert not (tmp_path / "data").exists()  # the store was never opened


def test_a_pathological_regex_cannot_stall_the_process(tmp_path: Path) -> None:
    """`^(a+)+$` on 36 a's and a '!' takes a backtracking engine minutes; conditions run in RE2 (linear time)."""
    config = tmp_path / "config.yaml"
    config.write_text(
        "sources: {missive: {}}\ndestinations: {crm: {url: 'http://127.0.0.1:9/'}}\n"
        "routes: [{name: r, when: {path: $.message.subject, matches: '^(a+)+$'}, send: [{to: crm}]}]\n"
    )
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps({"rule": {"type": "incoming_email"}, "message": {"subject": "a" * 36 + "!"}}))
    done = subprocess.run(  # a stall shows as TimeoutExpired, long before the minutes it would take
        [sys.executable, "-m", "gateway", "test", "-c", str(config), str(payload), "--json"],
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["routes"][0]["matched"] is False


def test_dry_run_renders_a_chained_request_against_a_sample_answer(
    write_config: Callable[[str], Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = str(write_config("""\
sources: {missive: {}}
destinations:
  crm: {url: "https://crm.example/contacts", token: crm-token-value}
routes:
  - name: contact-and-note
    send:
      - {to: crm, id: contact, body: {email: "{{ message.from_field.address }}"}}
      - {to: crm, after: contact, url: "https://crm.example/contacts/{{ steps.contact.json.id }}/notes"}
"""))
    payload = str(FIXTURES / "incoming-email-with-labels.json")
    _, waiting, _ = run(capsys, "test", "-c", config, payload)
    answer = tmp_path / "contact.json"
    answer.write_text('{"id": "51", "echo": "crm-token-value"}')
    code, rendered, _ = run(capsys, "test", "-c", config, payload, "--step-response", f"contact={answer}")
    _, _, err = run(capsys, "test", "-c", config, payload, "--step-response", f"contatc={answer}")

    assert "→ crm: waits for step contact, and is rendered from its answer (--step-response contact=FILE " \
           "shows it)" in waiting
    assert code == 0 and "→ crm: POST https://crm.example/contacts/51/notes" in rendered
    assert "crm-token-value" not in rendered
    assert err.strip() == "error: no request of source 'missive' has id 'contatc' (ids: contact)"


def test_a_closed_pipe_ends_the_dry_run_quietly(write_config: Callable[[str], Path]) -> None:
    """`gateway test ... | head`: more output than a pipe holds, and the reader leaves after one line."""
    routes = "".join(f"  - name: route-{n}\n    send: [{{to: d, body: {{n: {n}}}}}]\n" for n in range(400))
    config = write_config(f"sources: {{m: {{}}}}\ndestinations: {{d: {{url: 'http://127.0.0.1:9/x'}}}}\nroutes:\n"
                          f"{routes}")
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "test", "-c", str(config), str(FIXTURES / "new-comment.json")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()
    process.stdout.close()  # as `head -1` does
    code = process.wait(timeout=60)
    errors = process.stderr.read().decode()
    process.stderr.close()
    assert first == b"source: m\n"
    assert code == 141 and errors == ""


def test_dry_run_shows_the_original_payload_by_its_size_and_ends_with_a_summary(
    write_config: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config("""\
        sources: {missive: {}}
        destinations: {archive: {url: "http://127.0.0.1:9/archive"}, crm: {url: "http://127.0.0.1:9/crm"}}
        routes:
          - name: archive
            send: [{to: archive}]
          - name: notes
            send: [{to: crm, body: {at: "{{ nope.field }}"}}]
          - name: comments
            when: {path: $.rule.type, equals: new_comment}
            send: [{to: crm}]
        """)
    payload = FIXTURES / "incoming-email-with-labels.json"
    code, out, _ = run(capsys, "test", "-c", str(config), str(payload))
    size = len(payload.read_bytes())
    assert code == 0
    assert f"        original payload ({size} bytes, as received)" in out.splitlines()
    assert '"conversation"' not in out  # the payload itself is not dumped
    assert out.splitlines()[-1] == "2 of 3 routes matched: 1 request would be sent, 1 cannot render (a dead letter " \
        "at ingest)"
    code, out, _ = run(capsys, "test", "-c", str(config), str(payload), "--json")
    archive = json.loads(out)["routes"][0]["sends"][0]["request"]
    assert archive["original_payload"] is True and archive["body_bytes"] == size


def test_a_webhook_url_from_a_secret_variable_shows_its_host(
    write_config: Callable[[str], Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T0ABC/B0DEF/xoxSecretPath42")
    config = write_config("""\
        sources: {missive: {}}
        destinations: {slack: {type: slack, url: "${SLACK_WEBHOOK_URL}"}}
        routes: [{name: all, send: [{to: slack, body: {text: hi}}]}]
        """)
    code, out, _ = run(capsys, "test", "-c", str(config), str(FIXTURES / "new-comment.json"))
    assert code == 0
    assert "→ slack: POST https://hooks.slack.com/services/***" in out and "xoxSecretPath42" not in out
