"""Loading configs: interpolation, validation and the problems reported for broken ones."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.config.units import RateWindow
from gateway.errors import ConfigError
from gateway.routing.compiled import load_config

VALID = """\
sources:
  missive:
    secrets: ["${MISSIVE_SECRET:-dev-secret}"]
destinations:
  slack:
    type: slack
    url: https://hooks.slack.com/services/T000/B000/XXXX
    rate_limit: 1/s
  crm:
    url: ${CRM_URL:-http://crm.invalid}/notes
    headers: {Authorization: "Bearer ${CRM_TOKEN:-tok-default}"}
    timeout: 500ms
    retry: {attempts: 3, backoff: 2s, max_backoff: 1m}
routes:
  - name: vip
    when:
      all:
        - {path: $.rule.type, in: [incoming_email]}
        - not: {path: $.message.from_field.address, matches: '@example\\.com$'}
    send:
      - to: slack
        body: {text: "{{ message.subject }}"}
      - to: crm
        template: "{{ message.preview }}"
"""


def problems_of(write_config: Callable[[str], Path], text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(text), environ=env or {})
    return [str(problem) for problem in caught.value.problems]


def test_valid_config_loads_with_defaults_and_units(write_config: Callable[[str], Path]) -> None:
    loaded = load_config(write_config(VALID), environ={})
    config = loaded.config
    assert config.server.port == 8080
    assert config.server.max_body == 1024 * 1024
    assert config.sources["missive"].dedupe_window == 600.0
    assert config.destinations["crm"].timeout == 0.5
    assert config.destinations["crm"].retry.backoff == 2.0
    assert config.destinations["crm"].retry.max_backoff == 60.0
    assert config.destinations["slack"].rate_limit == (RateWindow(1, 1000),)
    assert config.destinations["crm"].url == "http://crm.invalid/notes"
    assert loaded.source_path("missive") == "/hooks/missive"
    assert [route.name for route in loaded.routes_for("missive")] == ["vip"]
    assert [send.destination for send in loaded.routes[0].sends] == ["slack", "crm"]
    assert loaded.routes[0].sends[1].max_attempts == 3


def test_environment_values_replace_variables(write_config: Callable[[str], Path]) -> None:
    environ = {"CRM_URL": "https://crm.example.com", "MISSIVE_SECRET": "s3cr3t!"}
    loaded = load_config(write_config(VALID), environ=environ)
    assert loaded.config.destinations["crm"].url == "https://crm.example.com/notes"
    assert loaded.config.sources["missive"].secrets[0].get_secret_value() == "s3cr3t!"
    assert "s3cr3t!" not in repr(loaded.config)
    assert loaded.masker.text("sig s3cr3t! and tok-default") == "sig *** and ***"


def test_missing_variable_without_default_is_named(write_config: Callable[[str], Path]) -> None:
    problems = problems_of(write_config, VALID.replace("${CRM_URL:-http://crm.invalid}", "${CRM_URL}"))
    assert len(problems) == 1
    assert "line 10: destinations.crm.url: environment variable CRM_URL is not set" in problems[0]
    assert "${CRM_URL:-value}" in problems[0]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param("- to: slack", "- to: slak", "line 21: routes[0].send[0].to: unknown destination 'slak'; "
                     "did you mean 'slack'?", id="unknown-destination"),
        pytest.param("    rate_limit: 1/s", "    rate_limit: 1/s\n    timout: 3s",
                     "destinations.slack.timout: unknown key 'timout'; did you mean 'timeout'?", id="unknown-key"),
        pytest.param("timeout: 500ms", "timeout: soon",
                     "line 12: destinations.crm.timeout: 'soon' is not a duration", id="bad-duration"),
        pytest.param("type: slack", "type: slackk",
                     "destinations.slack.type: 'slackk' is not one of: http, slack, discord", id="bad-type"),
        pytest.param("path: $.rule.type", 'path: "$.rule["', "routes[0].when.all[0].path", id="bad-jsonpath"),
        pytest.param("matches: '@example\\.com$'", "matches: '(['",
                     "routes[0].when.all[1].not.matches", id="bad-regex"),
        pytest.param('"{{ message.subject }}"', '"{{ message.subject }"', "routes[0].send[0].body.text",
                     id="jinja-syntax"),
        pytest.param("in: [incoming_email]", "in: [incoming_email], equals: x",
                     "needs exactly one operator (found: equals, in)", id="two-operators"),
        pytest.param("retry: {attempts: 3,", "retry: {attempts: 0,", "destinations.crm.retry.attempts", id="range"),
        pytest.param("    when:\n      all:", "    when:\n      ignore_case: true\n      all:",
                     "line 16: routes[0].when: 'ignore_case' goes with equals, in, contains, glob, matches, beside the "
                     "'path' it applies to", id="ignore-case-on-a-group"),
        pytest.param("      - to: crm\n", "      - to: crm\n        tempalte: x\n", "did you mean 'template'?",
                     id="unknown-send-key"),
    ],
)
def test_each_problem_names_path_line_and_fix(
    write_config: Callable[[str], Path], old: str, new: str, expected: str
) -> None:
    assert old in VALID
    problems = problems_of(write_config, VALID.replace(old, new, 1))
    assert any(expected in problem for problem in problems), problems


AUTH_LINE = "    auth: {type: oauth2_client_credentials, token_url: https://login.example/token, client_id: gw, " \
            "client_secret: s3}\n"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(AUTH_LINE, "    auth: {type: basic, username: api}\n",
                     "line 12: destinations.crm.auth: auth type basic needs password", id="basic-needs-password"),
        pytest.param(AUTH_LINE, "    auth: {type: bearer, token: t, client_auth: basic}\n",
                     "destinations.crm.auth: 'client_auth' belongs to auth type oauth2_client_credentials, not bearer",
                     id="field-of-another-type"),
        pytest.param("client_id: gw", "clientid: gw",
                     "destinations.crm.auth.clientid: unknown key 'clientid'; did you mean 'client_id'?",
                     id="unknown-auth-key"),
        pytest.param("https://login.example/token", "login.example/token",
                     "destinations.crm.auth: token_url 'login.example/token' must be an absolute http(s) URL",
                     id="token-url-not-a-url"),
        pytest.param("    timeout: 500ms\n", "    token: abcd\n",
                     "destinations.crm: give 'token' or 'auth', not both", id="token-and-auth"),
        pytest.param("      - to: crm\n", "      - to: crm\n        headers: {authorization: Bearer x}\n",
                     "routes[0].send[1].headers.authorization: the destination's token/auth sets Authorization; "
                     "drop this header", id="send-header-and-auth"),
    ],
)
def test_auth_problems(write_config: Callable[[str], Path], old: str, new: str, expected: str) -> None:
    text = VALID.replace('    headers: {Authorization: "Bearer ${CRM_TOKEN:-tok-default}"}\n', "")
    text = text.replace("    timeout: 500ms\n", "    timeout: 500ms\n" + AUTH_LINE)
    assert old in text
    problems = problems_of(write_config, text.replace(old, new, 1))
    assert any(expected in problem for problem in problems), problems


def test_auth_and_an_authorization_header_is_a_problem(write_config: Callable[[str], Path]) -> None:
    problems = problems_of(write_config, VALID.replace("    timeout: 500ms\n", "    token: abcd\n"))
    assert problems == [
        "line 11: destinations.crm.headers.Authorization: the destination's token/auth sets Authorization; "
        "drop this header, or drop the destination's token/auth"
    ]


def test_every_problem_is_reported_at_once(write_config: Callable[[str], Path]) -> None:
    broken = (
        VALID.replace("- to: slack", "- to: slak").replace("- to: crm", "- to: crn")
        + "  - name: vip\n    source: misive\n    send: [{to: crm}]\n"
    )
    problems = problems_of(write_config, broken)
    assert any("unknown destination 'slak'" in problem for problem in problems)
    assert any("unknown destination 'crn'" in problem for problem in problems)
    assert any("route name 'vip' is used twice" in problem for problem in problems)
    assert any("unknown source 'misive'; did you mean 'missive'?" in problem for problem in problems)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("sources: {a: {}}\nsources: {b: {}}\n", "key 'sources' appears twice", id="duplicate-key"),
        pytest.param("sources: [\n", "not valid YAML", id="yaml-syntax"),
        pytest.param("- just a list\n", "must be a mapping", id="not-a-mapping"),
        pytest.param("destinations: {}\n", "'sources' is required here", id="no-sources"),
        pytest.param("sources: {a: {}, b: {}}\nroutes: [{name: r, send: [{to: x}]}]\n",
                     "'source' is required when there are several sources", id="ambiguous-source"),
        pytest.param("sources: {a: {path: /healthz}}\n", "already used by the gateway itself", id="reserved-path"),
        pytest.param("sources: {a: {}}\ndestinations: {d: {type: http}}\n", "destinations.d: 'url' is required",
                     id="url-required"),
        pytest.param("sources: {a: {}}\nstorage: {backend: redis}\n", "backend 'redis' needs 'url'", id="redis-url"),
    ],
)
def test_structural_problems(write_config: Callable[[str], Path], text: str, expected: str) -> None:
    problems = problems_of(write_config, text)
    assert any(expected in problem for problem in problems), problems


def test_missing_file_is_one_clear_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yaml")
    assert "cannot read the file" in caught.value.render()
    assert str(tmp_path / "nope.yaml") in caught.value.render()


def test_example_config_is_valid() -> None:
    loaded = load_config(Path(__file__).resolve().parents[2] / "config.example.yaml", environ={})
    assert {route.name for route in loaded.routes} == {"vip-mail-to-slack", "incoming-mail-to-crm"}


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        pytest.param("admin: {host: 127.0.0.1}\n", "admin: admin.host needs admin.port", id="host-without-port"),
        pytest.param("server: {port: 9000}\nadmin: {port: 9000}\n", "admin.port: port 9000 is server.port too",
                     id="same-port"),
        pytest.param("admin: {session_idle: soon}\n", "admin.session_idle: ", id="idle-not-a-duration"),
    ],
)  # fmt: skip
def test_admin_listener_and_session_settings_are_checked(
    write_config: Callable[[str], Path], extra: str, problem: str
) -> None:
    problems = problems_of(write_config, VALID + extra)
    assert [line for line in problems if problem in line], problems


@pytest.mark.parametrize("path", ["/console", "/console/hooks", "/admin/hooks"])
def test_a_source_cannot_take_the_consoles_or_the_admin_apis_path(
    write_config: Callable[[str], Path], path: str
) -> None:
    text = VALID.replace("  missive:\n", f"  missive:\n    path: {path}\n")
    assert f"sources.missive.path: path '{path}' is already used by the gateway itself" in " ".join(
        problems_of(write_config, text)
    )


def test_schema_problems_do_not_hide_cross_checks(write_config: Callable[[str], Path]) -> None:
    broken = (
        VALID.replace("    rate_limit: 1/s", "    rate_limit: 1/s\n    timout: 3s")  # an unknown key
        .replace("- to: crm\n", "- to: crn\n")  # an unknown destination, found by the cross-checks
        + "  - send: [{to: slack}]\n"  # a route without a name: cut out whole...
        + "  - name: late\n    send: [{to: slakk, method: PUTT}]\n"  # ...and the routes after it keep their index
    )
    problems = problems_of(write_config, broken)
    assert problems == [
        "line 9: destinations.slack.timout: unknown key 'timout'; did you mean 'timeout'?",
        "line 26: routes[1].name: 'name' is required here; add it",
        "line 28: routes[2].send[0].method: 'PUTT' is not an HTTP method; did you mean 'PUT'?",
        "line 24: routes[0].send[1].to: unknown destination 'crn'; did you mean 'crm'?",
        "line 28: routes[2].send[0].to: unknown destination 'slakk'; did you mean 'slack'?",
    ]


def test_an_unset_variable_does_not_hide_other_problems(write_config: Callable[[str], Path]) -> None:
    broken = VALID.replace("${CRM_URL:-http://crm.invalid}", "${CRM_URL}").replace("- to: slack", "- to: slak")
    problems = problems_of(write_config, broken)
    assert len(problems) == 2
    assert "destinations.crm.url: environment variable CRM_URL is not set" in problems[0]
    assert "routes[0].send[0].to: unknown destination 'slak'" in problems[1]


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        pytest.param("all: [{path: $.rule.type, equal: x}]", "routes[0].when.all[0].equal: unknown key 'equal'; "
                     "did you mean 'equals'?", id="in-all"),
        pytest.param("any: [{not: {path: $.a, exist: true}}]", "routes[0].when.any[0].not.exist: unknown key 'exist'; "
                     "did you mean 'exists'?", id="in-any-not"),
    ],
)
def test_did_you_mean_inside_combinators(write_config: Callable[[str], Path], condition: str, expected: str) -> None:
    text = f"sources: {{m: {{}}}}\ndestinations: {{d: {{url: 'http://d.invalid'}}}}\n" \
           f"routes:\n  - name: r\n    when: {{{condition}}}\n    send: [{{to: d}}]\n"
    assert any(problem.endswith(expected) for problem in problems_of(write_config, text))


def test_methods_are_http_methods_in_any_case(write_config: Callable[[str], Path]) -> None:
    loaded = load_config(write_config(VALID.replace("    timeout: 500ms", "    method: put\n    timeout: 500ms")),
                         environ={})
    assert loaded.config.destinations["crm"].method == "PUT"
    problems = problems_of(write_config, VALID.replace("    timeout: 500ms", "    method: BREW\n    timeout: 500ms"))
    assert problems == ["line 12: destinations.crm.method: 'BREW' is not an HTTP method; use one of GET, HEAD, "
                        "POST, PUT, PATCH, DELETE, OPTIONS"]


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_signing_secret_is_refused_naming_its_source(
    write_config: Callable[[str], Path], value: str
) -> None:
    problems = problems_of(write_config, VALID.replace("${MISSIVE_SECRET:-dev-secret}", "${MISSIVE_SECRET}"),
                           env={"MISSIVE_SECRET": value})
    assert len(problems) == 1
    assert problems[0].startswith("line 3: sources.missive.secrets[0]: the secret is empty: anyone could sign")
    assert problems[0].endswith("(the value of ${MISSIVE_SECRET})")


@pytest.mark.parametrize(
    "section",
    [
        pytest.param("admin: {token: ''}\n", id="admin-token"),
        pytest.param("destinations: {d: {url: 'http://d.invalid', token: ' '}}\n", id="destination-token"),
        pytest.param("destinations: {d: {url: 'http://d.invalid', sign: {secret: ''}}}\n", id="signing-key"),
    ],
)
def test_every_secret_setting_refuses_an_empty_value(write_config: Callable[[str], Path], section: str) -> None:
    problems = problems_of(write_config, "sources: {m: {}}\n" + section)
    assert len(problems) == 1 and "the secret is empty" in problems[0]


def test_a_rejected_config_never_shows_a_secret_variable(write_config: Callable[[str], Path]) -> None:
    token = "crm-token-0f9a8b7c"
    broken = VALID.replace("timeout: 500ms", "timeout: ${CRM_TOKEN}").replace('type: slack', 'type: "${SLACK_KEY}"')
    problems = problems_of(write_config, broken, env={"CRM_TOKEN": token, "SLACK_KEY": "slack-key-value"})
    assert problems == [
        "line 6: destinations.slack.type: '***' is not one of: http, slack, discord, teams, missive, google_chat, "
        "mattermost, pagerduty",
        "line 12: destinations.crm.timeout: '***' is not a duration; write it like '500ms', '10s', '5m', '1h' or "
        "'7d' (the value of ${CRM_TOKEN})",
    ]
