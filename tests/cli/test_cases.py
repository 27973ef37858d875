"""Rule tests (`gateway test --cases`): loading a cases file, judging each case, the command's output."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.cli.cases import CaseResult, format_results, load_cases, results_document, run_cases
from gateway.cli.main import main
from gateway.errors import ConfigError
from gateway.routing.compiled import LoadedConfig, load_config
from tests.conftest import FIXTURES

CONFIG = """\
sources:
  missive: {secrets: ["${MISSIVE_SECRET:-hook-secret-value}"]}
destinations:
  slack: {type: slack, url: "https://hooks.slack.com/services/T0001/B0001/abcdefSECRETPATH"}
  crm:
    url: https://crm.example/api/notes?api_token=querysecret123
    headers: {Authorization: "Bearer ${CRM_TOKEN:-bearer-secret-value}"}
routes:
  - name: vip
    when:
      all:
        - {path: $.rule.type, equals: incoming_email}
        - {path: "$.conversation.shared_labels[*].name", equals: VIP}
    send:
      - to: slack
        body:
          text: "VIP: {{ message.subject }}"
          blocks: [{type: section, text: "{{ message.from_field.address }}"}]
  - name: every-email
    when: {path: $.rule.type, equals: incoming_email}
    send:
      - to: crm
        body:
          properties: {email: "{{ message.from_field.address }}", hs_timestamp: "{{ message.delivered_at * 1000 }}"}
  - name: comments
    when: {path: $.rule.type, equals: new_comment}
    send:
      - to: crm
        template: "{{ comment.body }} {{ comment.nope }}"
"""
VIP = str(FIXTURES / "incoming-email-with-labels.json")
COMMENT = str(FIXTURES / "new-comment.json")
SECRETS = ("hook-secret-value", "abcdefSECRETPATH", "querysecret123", "bearer-secret-value")


@pytest.fixture
def config(write_config: Callable[[str], Path]) -> LoadedConfig:
    return load_config(write_config(CONFIG), environ={})


@pytest.fixture
def write_cases(tmp_path: Path) -> Callable[[str], Path]:
    def write(text: str) -> Path:
        path = tmp_path / "cases.yaml"
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


def run_one(config: LoadedConfig, path: Path) -> CaseResult:
    [result] = run_cases(config, load_cases(path, config, environ={}))
    return result


# --- passing cases ---------------------------------------------------------------------------------------------------


def test_a_case_that_holds_passes(config: LoadedConfig, write_cases: Callable[[str], Path], tmp_path: Path) -> None:
    (tmp_path / "payloads").mkdir()
    (tmp_path / "payloads" / "vip.json").write_bytes((FIXTURES / "incoming-email-with-labels.json").read_bytes())
    path = write_cases("""\
        cases:
          - name: VIP mail
            payload_file: payloads/vip.json
            source: missive
            routes: [every-email, vip]
            expect:
              vip/slack:
                method: post
                url: https://hooks.slack.com/services/***
                headers: {content-type: application/json}
                body:
                  text: "VIP: Order HL-20931 arrived damaged"
                  blocks: [{text: priya.natarajan@example.org}]
              every-email/crm:
                url: https://crm.example/api/notes?api_token=querysecret123
                headers: {Authorization: "Bearer ${CRM_TOKEN:-bearer-secret-value}", X-Gateway-Event-Id: evt_dry_run}
                body_paths:
                  $.properties.hs_timestamp: 1717401195000
                  $.properties: {email: priya.natarajan@example.org}
          - name: a validation request routes nothing
            payload: {}
            routes: []
          - payload: {rule: {type: outgoing_email}, conversation: {shared_labels: [{name: VIP}]}}
            not_matched: [vip, every-email, comments]
        """)

    results = run_cases(config, load_cases(path, config, environ={}))

    assert results == [
        CaseResult("VIP mail", ()),
        CaseResult("a validation request routes nothing", ()),
        CaseResult("cases[2]", ()),
    ]
    assert format_results(results).splitlines() == [
        "PASS  VIP mail",
        "PASS  a validation request routes nothing",
        "PASS  cases[2]",
        "3 cases: 3 passed, 0 failed",
    ]


def test_a_text_body_is_compared_whole(write_config: Callable[[str], Path], write_cases: Callable[[str], Path]) -> None:
    text_config = CONFIG.replace('template: "{{ comment.body }} {{ comment.nope }}"', 'template: "{{ comment.body }}"')
    config = load_config(write_config(text_config), environ={})
    expected = json.loads((FIXTURES / "new-comment.json").read_text())["comment"]["body"]
    path = write_cases(f"""\
        cases:
          - payload_file: {COMMENT}
            expect:
              comments/crm: {{body: {json.dumps(expected)}, headers: {{Content-Type: text/plain; charset=utf-8}}}}
        """)

    assert run_one(config, path) == CaseResult(COMMENT, ())


# --- failures, one reason line each ----------------------------------------------------------------------------------

FAILING = [
    pytest.param(
        f"payload_file: {VIP}\nroutes: [vip]",
        "routes: expected [vip], got [vip, every-email]",
        id="routes-is-the-exact-set",
    ),
    pytest.param(
        "payload: {rule: {type: incoming_email}, conversation: {shared_labels: [{name: Billing}]}}\nmatched: [vip]",
        "vip did not match: $.conversation.shared_labels[*].name equals 'VIP' failed: saw 'Billing'",
        id="a-miss-says-which-condition-failed",
    ),
    pytest.param(
        f"payload_file: {VIP}\nnot_matched: [every-email]",
        "every-email matched, expected it not to",
        id="not-matched",
    ),
    pytest.param(
        "payload: {}\nmatched: [vip]",
        "vip did not match: the payload has no 'rule' (a validation request), nothing is routed",
        id="validation-request",
    ),
    pytest.param(
        f"payload_file: {VIP}\nexpect: {{vip/slack: {{body: {{text: VIP}}}}}}",
        'vip/slack: body.text: expected "VIP", got "VIP: Order HL-20931 arrived damaged"',
        id="body-value",
    ),
    pytest.param(
        "payload: {rule: {type: incoming_email}, conversation: {shared_labels: [{name: VIP}]}, "
        f"message: {{subject: {'x' * 90}END, from_field: {{address: a@example.org}}, delivered_at: 1}}}}\n"
        f"expect: {{vip/slack: {{body: {{text: 'VIP: {'x' * 90}FIN'}}}}}}",
        f'vip/slack: body.text: expected ..."{"x" * 20}FIN", got ..."{"x" * 20}END" (they differ from character 96)',
        id="long-texts-are-shown-where-they-differ",
    ),
    pytest.param(
        f"payload_file: {VIP}\nexpect: {{vip/slack: {{body: {{channel: support}}}}}}",
        'vip/slack: body.channel: expected "support", missing',
        id="body-key-missing",
    ),
    pytest.param(
        f"payload_file: {VIP}\nexpect: {{vip/slack: {{body: {{blocks: [{{}}, {{}}]}}}}}}",
        'vip/slack: body.blocks: expected [{}, {}], got [{"type": "section", "text": "priya.natarajan@example.org"}]',
        id="lists-match-item-by-item",
    ),
    pytest.param(
        f"payload_file: {VIP}\n"
        "expect: {every-email/crm: {body_paths: {$.properties.hs_timestamp: '1717401195000'}}}",
        'every-email/crm: body $.properties.hs_timestamp: expected "1717401195000", got 1717401195000',
        id="a-number-is-not-a-string",
    ),
    pytest.param(
        f"payload_file: {VIP}\nexpect: {{every-email/crm: {{body_paths: {{$.properties.phone: '+1'}}}}}}",
        'every-email/crm: body $.properties.phone: expected "+1", found nothing',
        id="path-finds-nothing",
    ),
    pytest.param(
        f"payload_file: {VIP}\nexpect: {{every-email/crm: {{method: PUT}}}}",
        "every-email/crm: method: expected PUT, got POST",
        id="method",
    ),
    pytest.param(
        f"payload_file: {VIP}\nexpect: {{every-email/crm: {{url: 'https://crm.example/api/notez?api_token=querysecret123'}}}}",
        'every-email/crm: url: expected "https://crm.example/api/notez?api_token=***", '
        'got "https://crm.example/api/notes?api_token=***"',
        id="url-with-credentials-masked",
    ),
    pytest.param(
        f"payload_file: {VIP}\nexpect: {{vip/slack: {{headers: {{X-Team: support}}}}}}",
        'vip/slack: header X-Team: expected "support", got nothing',
        id="header-missing",
    ),
    pytest.param(
        f"payload_file: {COMMENT}\nroutes: [comments]",
        "comments/crm cannot render: routes[2].send[0].template: 'dict object' has no attribute 'nope'",
        id="a-send-that-cannot-render-fails-the-case",
    ),
    pytest.param(
        f"payload_file: {COMMENT}\nexpect: {{vip/slack: {{method: POST}}}}",
        "vip did not match: $.rule.type equals 'incoming_email' failed: saw 'new_comment'",
        id="expecting-a-request-from-a-route-that-did-not-match",
    ),
]


@pytest.mark.parametrize(("case", "reason"), FAILING)
def test_a_failing_case_gives_its_reason(
    config: LoadedConfig, write_cases: Callable[[str], Path], case: str, reason: str
) -> None:
    path = write_cases("cases:\n  - " + case.replace("\n", "\n    ") + "\n")

    result = run_one(config, path)

    assert not result.passed
    assert reason in result.failures
    line = format_results([result]).splitlines()[0]
    assert line.startswith(f"FAIL  {result.name}: ") and "\n" not in line
    assert not any(secret in line for secret in SECRETS)


def test_payload_that_is_not_json_fails_the_case(
    config: LoadedConfig, write_cases: Callable[[str], Path], tmp_path: Path
) -> None:
    (tmp_path / "broken.json").write_text('{"rule": ')
    result = run_one(config, write_cases("cases: [{payload_file: broken.json, routes: []}]\n"))

    assert result.failures == ("cannot route the payload: body is not valid JSON: unexpected end of data at byte 9",)


# --- broken cases files ----------------------------------------------------------------------------------------------

BROKEN = [
    pytest.param("cases:\n  - payload: {}\n    rutes: []\n",
                 "line 3: cases[0].rutes: unknown key 'rutes'; did you mean 'routes'?", id="unknown-key"),
    pytest.param("cases:\n  - routes: []\n", "line 2: cases[0]: give the payload as exactly one of 'payload' "
                 "(inline) or 'payload_file'", id="no-payload"),
    pytest.param("cases:\n  - payload: {}\n", "line 2: cases[0]: a case needs something to check: routes, "
                 "matched, not_matched or expect", id="nothing-checked"),
    pytest.param("cases:\n  - payload: {}\n    routes: [vip]\n    matched: [vip]\n",
                 "line 2: cases[0]: 'routes' is the exact set: drop 'matched'/'not_matched', or drop 'routes'",
                 id="routes-and-matched"),
    pytest.param("cases:\n  - payload: {}\n    matched: [vpi]\n",
                 "line 3: cases[0].matched[0]: no route 'vpi' for source 'missive'; did you mean 'vip'?",
                 id="unknown-route"),
    pytest.param("cases:\n  - payload: {}\n    expect:\n      vip/crm: {method: POST}\n",
                 "line 4: cases[0].expect.vip/crm: no route sends 'vip/crm' (keys are '<route>/<destination>'); "
                 "did you mean 'vip/slack'?", id="unknown-expect-key"),
    pytest.param("cases:\n  - payload: {}\n    expect:\n      vip/slack: {body_paths: {'properties': 1}}\n",
                 "line 4: cases[0].expect.vip/slack.body_paths: JSONPath 'properties' does not start with '$'",
                 id="bad-jsonpath"),
    pytest.param("cases:\n  - payload_file: missing.json\n    routes: []\n",
                 "line 2: cases[0].payload_file: cannot read", id="missing-payload-file"),
    pytest.param("cases:\n  - payload: {}\n    source: hooks\n    routes: []\n",
                 "line 3: cases[0].source: unknown source 'hooks'; the config has: missive", id="unknown-source"),
    pytest.param("cases:\n  - payload: {token: '${CASE_TOKEN}'}\n    routes: []\n",
                 "line 2: cases[0].payload.token: environment variable CASE_TOKEN is not set", id="unset-variable"),
    pytest.param("cases:\n  - payload: {\n", "line 3: not valid YAML", id="yaml-syntax"),
    pytest.param("- payload: {}\n", "line 1: a cases file is a mapping with a list under 'cases'", id="not-a-mapping"),
    pytest.param("cases: []\n", "line 1: cases: List should have at least 1 item", id="no-cases"),
]


@pytest.mark.parametrize(("text", "problem"), BROKEN)
def test_a_broken_cases_file_names_the_path_and_line(
    config: LoadedConfig, write_cases: Callable[[str], Path], text: str, problem: str
) -> None:
    path = write_cases(text)

    with pytest.raises(ConfigError) as raised:
        load_cases(path, config, environ={})

    assert raised.value.file == str(path)
    rendered = raised.value.render().splitlines()
    assert any(line.startswith(f"{path}: {problem}") for line in rendered), rendered


def test_a_missing_cases_file_is_one_problem(config: LoadedConfig, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_cases(tmp_path / "nope.yaml", config)

    assert raised.value.render() == f"{tmp_path / 'nope.yaml'}: cannot read the cases file: No such file or directory"


# --- the command -----------------------------------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_command_exits_1_when_a_case_fails(
    write_config: Callable[[str], Path], write_cases: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(CONFIG)
    cases = write_cases(f"""\
        cases:
          - {{name: vip mail, payload_file: {VIP}, routes: [vip, every-email]}}
          - {{name: wrong, payload_file: {VIP}, matched: [comments]}}
        """)

    code, out, err = run_cli(capsys, "test", "-c", str(config), "--cases", str(cases))

    assert code == 1
    assert out.splitlines() == [
        "PASS  vip mail",
        "FAIL  wrong: comments did not match: $.rule.type equals 'new_comment' failed: saw 'incoming_email'",
        "2 cases: 1 passed, 1 failed",
    ]
    assert err == ""


def test_the_command_exits_0_when_every_case_passes_and_speaks_json(
    write_config: Callable[[str], Path], write_cases: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(CONFIG)
    cases = write_cases(f"cases: [{{name: vip mail, payload_file: {VIP}, matched: [vip]}}]\n")

    code, out, _ = run_cli(capsys, "test", "-c", str(config), "--cases", str(cases), "--json")

    assert code == 0
    [only] = json.loads(out)["cases"]
    assert json.loads(out) == {"passed": 1, "failed": 0, "cases": [only]}
    assert only == {"name": "vip mail", "passed": True, "failures": []}
    assert results_document([]) == {"passed": 0, "failed": 0, "cases": []}


def test_the_command_reports_a_broken_cases_file_like_a_config(
    write_config: Callable[[str], Path], write_cases: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(CONFIG)
    cases = write_cases("cases:\n  - payload: {}\n    matched: [vpi]\n")

    code, out, err = run_cli(capsys, "test", "-c", str(config), "--cases", str(cases))

    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"{cases}: 1 problem in the cases file:",
        f"{cases}: line 3: cases[0].matched[0]: no route 'vpi' for source 'missive'; did you mean 'vip'?",
    ]


@pytest.mark.parametrize(
    "extra",
    [pytest.param([], id="neither"), pytest.param([VIP, "--cases", "cases.yaml"], id="both")],
)
def test_the_command_wants_a_payload_or_cases(
    write_config: Callable[[str], Path], capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    code, _, err = run_cli(capsys, "test", "-c", str(write_config(CONFIG)), *extra)

    assert code == 1
    assert err.strip() == "error: give either a PAYLOAD file or --cases CASES.yaml"


def test_only_the_routes_a_case_claims_must_render(config: LoadedConfig, write_cases: Callable[[str], Path]) -> None:
    path = write_cases(f"""\
        cases:
          - {{name: about vip only, payload_file: {COMMENT}, not_matched: [every-email]}}
          - {{name: claims comments, payload_file: {COMMENT}, matched: [comments]}}
        """)

    results = run_cases(config, load_cases(path, config, environ={}))

    assert [(r.name, r.passed) for r in results] == [("about vip only", True), ("claims comments", False)]
    assert results[1].failures == (
        "comments/crm cannot render: routes[2].send[0].template: 'dict object' has no attribute 'nope'",
    )


# --- request chains --------------------------------------------------------------------------------------------------

CHAINED = """\
sources: {missive: {}}
destinations:
  crm: {url: "https://crm.example/contacts"}
  notes: {url: "https://crm.example/notes"}
routes:
  - name: contact-and-note
    send:
      - {to: crm, id: contact, body: {email: "{{ message.from_field.address }}"}}
      - to: notes
        after: contact
        url: "https://crm.example/contacts/{{ steps.contact.json.results[0].id }}/notes"
        body: {text: "{{ message.subject }}"}
"""


@pytest.mark.parametrize(
    ("step_responses", "failures"),
    [
        pytest.param("step_responses: {contact: {results: [{id: '51'}]}}", (), id="with-an-answer"),
        pytest.param("", ("contact-and-note/notes waits for step contact: give the case step_responses.contact",),
                     id="waiting-is-not-a-pass"),
        pytest.param("step_responses: {contact: {results: []}}",
                     ("contact-and-note/notes cannot render: routes[0].send[1].url: list object has no element 0",),
                     id="an-answer-the-template-cannot-use"),
    ],
)
def test_cases_render_chained_requests_from_sample_answers(
    write_config: Callable[[str], Path], write_cases: Callable[[str], Path], step_responses: str,
    failures: tuple[str, ...],
) -> None:
    config = load_config(write_config(CHAINED), environ={})
    path = write_cases(f"""\
        cases:
          - payload_file: {VIP}
            {step_responses}
            expect:
              contact-and-note/notes: {{url: "https://crm.example/contacts/51/notes"}}
        """)
    assert run_one(config, path).failures == failures


def test_a_step_response_for_an_unknown_step_is_a_problem_of_the_cases_file(
    write_config: Callable[[str], Path], write_cases: Callable[[str], Path]
) -> None:
    config = load_config(write_config(CHAINED), environ={})
    path = write_cases(f"""\
        cases:
          - payload_file: {VIP}
            step_responses: {{contatc: {{}}}}
            matched: [contact-and-note]
        """)
    with pytest.raises(ConfigError) as caught:
        load_cases(path, config, environ={})
    assert [str(problem) for problem in caught.value.problems] == [
        "line 3: cases[0].step_responses.contatc: no request of source 'missive' has id 'contatc'; "
        "did you mean 'contact'?"
    ]
