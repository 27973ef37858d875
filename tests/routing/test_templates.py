"""Request rendering: body forms, type preservation, filters, presets, errors and config problems."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config.presets import MISSIVE_POSTS_URL
from gateway.config.schema import DestinationConfig, SendConfig
from gateway.errors import ConfigProblem, RenderError
from gateway.model import RenderedRequest
from gateway.routing.bodies import ORIGINAL_BODY
from gateway.routing.templates import RequestTemplate, compile_request, host_from_template, template_context
from tests.conftest import FIXTURES

AT = "routes[0].send[1]"
EVENT = {"id": "evt_1", "source": "missive", "received_at": 1717402005.5}
EMAIL = "incoming-email-with-labels.json"
LABELS = "label-change.json"
NULLS = "null-fields.json"
HTTP = {"type": "http", "url": "https://crm.example.com/notes"}


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def context_of(name: str) -> dict[str, Any]:
    """What templates see for a fixture, received byte for byte."""
    return template_context(load(name), EVENT, (FIXTURES / name).read_bytes())


def compile_send(
    send: dict[str, Any], destination: dict[str, Any] | None = None, base_dir: Path = FIXTURES
) -> tuple[RequestTemplate | None, list[ConfigProblem]]:
    problems: list[ConfigProblem] = []
    template = compile_request(
        SendConfig.model_validate({"to": "crm", **send}),
        DestinationConfig.model_validate(destination or HTTP),
        base_dir,
        AT,
        problems,
        route="vip",
    )
    return template, problems


def build(
    send: dict[str, Any], destination: dict[str, Any] | None = None, base_dir: Path = FIXTURES
) -> RequestTemplate:
    template, problems = compile_send(send, destination, base_dir)
    assert problems == []
    assert template is not None
    return template


def render(
    send: dict[str, Any], fixture: str = EMAIL, destination: dict[str, Any] | None = None, base_dir: Path = FIXTURES
) -> RenderedRequest:
    return build(send, destination, base_dir).render(context_of(fixture))


def leaf(source: str, fixture: str = EMAIL) -> Any:
    """The JSON value a one-leaf body renders to."""
    return json.loads(render({"body": {"value": source}}, fixture).body)["value"]


def render_error(send: dict[str, Any], fixture: str = EMAIL, destination: dict[str, Any] | None = None) -> str:
    template = build(send, destination)
    with pytest.raises(RenderError) as caught:
        template.render(context_of(fixture))
    return str(caught.value)


@pytest.mark.parametrize(
    ("fixture", "source", "expected"),
    [
        pytest.param(EMAIL, "{{ message.from_field.name }}: {{ message.subject }}",
                     "Priya Natarajan: Order HL-20931 arrived damaged", id="text"),
        pytest.param(EMAIL, "{{ message.delivered_at }}", 1717401195, id="int-stays-int"),
        pytest.param(EMAIL, "{{ message.delivered_at * 1000 }}", 1717401195000, id="arithmetic-stays-int"),
        pytest.param(EMAIL, "{{ message.delivered_at / 2 }}", 858700597.5, id="float"),
        pytest.param(EMAIL, "{{ conversation.shared_labels | map(attribute='name') | list }}", ["Customers", "VIP"],
                     id="list-stays-list"),
        pytest.param(EMAIL, "{{ conversation.shared_labels | map(attribute='name') }}", ["Customers", "VIP"],
                     id="generator-becomes-list"),
        pytest.param(EMAIL, "{{ message.from_field }}",
                     {"name": "Priya Natarajan", "address": "priya.natarajan@example.org"}, id="dict-stays-dict"),
        pytest.param(EMAIL, "{{ conversation.assignees | length > 0 }}", True, id="bool"),
        pytest.param(NULLS, "{{ conversation.subject }}", None, id="null-stays-null"),
        pytest.param(NULLS, "Subject: {{ conversation.subject }}", "Subject: ", id="null-in-text-is-empty"),
        pytest.param(EMAIL, "{{- message.delivered_at -}}", 1717401195, id="whitespace-control"),
        pytest.param(EMAIL, " {{ message.delivered_at }}", " 1717401195", id="text-around-makes-a-string"),
        pytest.param(EMAIL, "{{ message.delivered_at }}{{ '' }}", "1717401195", id="two-expressions-make-a-string"),
        pytest.param(EMAIL, "{% if message.subject %}yes{% endif %}", "yes", id="statement"),
        pytest.param(EMAIL, "{% set n = namespace(k=2) %}{{ n.k }}", "2", id="set-and-globals-in-text"),
        pytest.param(EMAIL, "{{ range(3) | list }}", [0, 1, 2], id="globals-in-expression"),
        pytest.param(EMAIL, "50% off } {# not a template", "50% off } {# not a template", id="constant"),
        pytest.param(LABELS, "{{ message.preview }}", load(LABELS)["latest_message"]["preview"], id="message-alias"),
        pytest.param(LABELS, "{{ latest_message.id }}", "0f4bf777-e103-4fe1-8a1a-b21554c6c4b3",
                     id="latest-message-still-there"),
        pytest.param(LABELS, "{{ payload.rule.type }}", "label_change", id="payload"),
        pytest.param(LABELS, "{{ event.id }}/{{ event.source }}", "evt_1/missive", id="event"),
        pytest.param(LABELS, "{{ event.received_at }}", 1717402005.5, id="event-number"),
    ],
)
def test_body_leaves(fixture: str, source: str, expected: Any) -> None:
    value = leaf(source, fixture)
    assert value == expected
    assert type(value) is type(expected)


def test_body_structure_is_compact_utf8_json_with_constants_as_written() -> None:
    body = {
        "channel": "#support",
        "unfurl": False,
        "count": 3,
        "ratio": 0.5,
        "none": None,
        "blocks": [
            {"type": "section", "text": "Ünïcode ✓ {{ message.from_field.name }}"},
            {"type": "context", "elements": ["{{ conversation.shared_labels | map(attribute='name') | list }}", 7]},
        ],
        "meta": {"empty": {}, "list": []},
    }
    request = render({"body": body})
    expected = {
        **body,
        "blocks": [
            {"type": "section", "text": "Ünïcode ✓ Priya Natarajan"},
            {"type": "context", "elements": [["Customers", "VIP"], 7]},
        ],
    }
    assert request.body == json.dumps(expected, ensure_ascii=False, separators=(",", ":")).encode()
    assert request.headers["Content-Type"] == "application/json"


def test_body_from_yaml_config() -> None:
    send = yaml.safe_load(textwrap.dedent("""
        body:
          properties:
            hs_note_body: "New mail from {{ message.from_field.address }}"
            hs_timestamp: "{{ message.delivered_at * 1000 }}"   # stays a number
            1: numeric keys become strings
    """))
    assert json.loads(render(send).body) == {
        "properties": {
            "hs_note_body": "New mail from priya.natarajan@example.org",
            "hs_timestamp": 1717401195000,
            "1": "numeric keys become strings",
        }
    }


@pytest.mark.parametrize(
    ("send", "destination", "body", "content_type"),
    [
        pytest.param({"body": {"a": "{{ rule.type }}"}}, HTTP, b'{"a":"incoming_email"}', "application/json",
                     id="body-json"),
        pytest.param({"template": '{"text": {{ conversation.shared_label_names | tojson }}}'}, HTTP,
                     b'{"text": "Customers, VIP"}', "application/json", id="template-that-is-json"),
        pytest.param({"template": "Mail from {{ message.from_field.name }}\n"}, HTTP, b"Mail from Priya Natarajan\n",
                     "text/plain; charset=utf-8", id="template-text-keeps-trailing-newline"),
        pytest.param({"template": "<note>{{ rule.type }}</note>"},
                     {**HTTP, "headers": {"Content-Type": "application/xml"}}, b"<note>incoming_email</note>",
                     "application/xml", id="destination-content-type-wins"),
        pytest.param({"template": "{{ rule.type }}", "headers": {"content-type": "text/csv"}}, HTTP,
                     b"incoming_email", "text/csv", id="send-content-type-wins-whatever-its-case"),
        pytest.param({"template": "{{ '' }}"}, HTTP, b"", None, id="empty-template-has-no-content-type"),
        pytest.param({}, {**HTTP, "method": "GET"}, b"", None, id="get-without-body-is-empty"),
        pytest.param({"method": "delete"}, HTTP, b"", None, id="delete-without-body-is-empty"),
    ],
)
def test_body_forms_and_content_type(
    send: dict[str, Any], destination: dict[str, Any], body: bytes, content_type: str | None
) -> None:
    request = render(send, destination=destination)
    assert request.body == body
    content_types = {name: value for name, value in request.headers.items() if name.lower() == "content-type"}
    assert list(content_types.values()) == ([content_type] if content_type else [])


def test_without_a_body_form_post_sends_the_original_bytes() -> None:
    request = render({}, fixture=LABELS)
    assert request.body == (FIXTURES / LABELS).read_bytes()  # not re-serialised: the alias `message` is not added
    assert request.headers["Content-Type"] == "application/json"


def test_template_file_is_read_relative_to_base_dir(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "card.json.j2").write_text(
        '{"title": {{ conversation.latest_message_subject | tojson }},\n "labels": {{ conversation.shared_labels'
        " | map(attribute='name') | list | tojson }}}\n",
        encoding="utf-8",
    )
    request = render({"template_file": "templates/card.json.j2"}, base_dir=tmp_path)
    assert json.loads(request.body) == {"title": "Order HL-20931 arrived damaged", "labels": ["Customers", "VIP"]}
    assert request.body.endswith(b"}\n")
    assert request.headers["Content-Type"] == "application/json"


def test_missing_template_file_is_a_config_problem(tmp_path: Path) -> None:
    template, problems = compile_send({"template_file": "templates/nope.j2"}, base_dir=tmp_path)
    assert template is None
    assert [problem.path for problem in problems] == [f"{AT}.template_file"]
    assert problems[0].message == f"template file {tmp_path / 'templates' / 'nope.j2'} not found"
    assert problems[0].hint == "paths are relative to the config file, inside its folder"


def test_url_method_and_headers_merge_and_render() -> None:
    destination = {
        **HTTP,
        "method": "POST",
        "headers": {"X-Team": "support", "X-Conversation": "{{ conversation.id }}", "Authorization": "Bearer t0ken"},
    }
    send = {
        "url": "https://api.example.com/conversations/{{ conversation.id }}/notes?label={{ rule.type }}",
        "method": "put",
        "headers": {"x-team": "billing {{ rule.type }}"},
    }
    request = render(send, destination=destination)
    assert request.method == "PUT"
    assert request.url == "https://api.example.com/conversations/af5d8bb0-9f2e-4ea4-b658-90e0f94855d0/notes?label=incoming_email"
    assert request.headers == {
        "x-team": "billing incoming_email",
        "X-Conversation": "af5d8bb0-9f2e-4ea4-b658-90e0f94855d0",
        "Authorization": "Bearer t0ken",
        "Content-Type": "application/json",
    }


@pytest.mark.parametrize(
    ("destination", "send", "url", "headers"),
    [
        pytest.param({"type": "discord", "url": "https://discord.com/api/webhooks/1/abc"}, {},
                     "https://discord.com/api/v10/webhooks/1/abc?wait=true", {}, id="discord-pinned-and-waits"),
        pytest.param({"type": "discord", "url": "https://discord.com/api/v6/webhooks/1/abc"}, {},
                     "https://discord.com/api/v10/webhooks/1/abc?wait=true", {}, id="discord-old-version-pinned"),
        pytest.param({"type": "discord", "url": "https://discord.com/api/webhooks/1/abc"},
                     {"url": "https://discord.com/api/webhooks/2/{{ 'def' }}?thread_id=9"},
                     "https://discord.com/api/v10/webhooks/2/def?thread_id=9&wait=true", {},
                     id="discord-send-url-pinned"),
        pytest.param({"type": "discord", "url": "https://discord.com/api/webhooks/1/abc?wait=false"}, {},
                     "https://discord.com/api/v10/webhooks/1/abc?wait=false", {}, id="discord-explicit-wait-kept"),
        # A token is added when the request is sent, never rendered into the request the store keeps.
        pytest.param({"type": "slack", "url": "https://slack.com/api/chat.postMessage", "token": "xoxb-1-2"}, {},
                     "https://slack.com/api/chat.postMessage", {}, id="bearer-token-not-stored"),
        pytest.param({"type": "missive", "token": "missive_pat-1"}, {}, MISSIVE_POSTS_URL, {},
                     id="missive-default-url"),
    ],
)
def test_presets_defaults(destination: dict[str, Any], send: dict[str, Any], url: str, headers: dict[str, str]) -> None:
    request = render({"body": {"text": "hi"}, **send}, destination=destination)
    assert request.url == url
    assert request.headers == {**headers, "Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("fixture", "source", "expected"),
    [
        pytest.param(EMAIL, "{{ '<a & \"é\">' | tojson }}", '"<a & \\"é\\">"', id="tojson-not-html-escaped"),
        pytest.param(EMAIL, "{{ conversation.shared_labels | map(attribute='name') | list | tojson }}",
                     '["Customers", "VIP"]', id="tojson-list"),
        pytest.param(EMAIL, "{{ message.from_field | tojson(indent=1) }}",
                     '{\n "name": "Priya Natarajan",\n "address": "priya.natarajan@example.org"\n}',
                     id="tojson-indent"),
        pytest.param(EMAIL, "{{ message.delivered_at | datetime }}", "2024-06-03T07:53:15Z", id="datetime-iso"),
        pytest.param(EMAIL, "{{ message.delivered_at | datetime('%d %b %H:%M') }}", "03 Jun 07:53",
                     id="datetime-format"),
        pytest.param(EMAIL, "{{ 1717401195.9 | datetime }}", "2024-06-03T07:53:15Z", id="datetime-float"),
        pytest.param(NULLS, "{{ message.updated_at | datetime }}", None, id="datetime-none-stays-null"),
        pytest.param(NULLS, "at {{ message.updated_at | datetime }}", "at ", id="datetime-none-in-text-is-empty"),
        pytest.param(EMAIL, "{{ 'a & <b> c' | slack_escape }}", "a &amp; &lt;b&gt; c", id="slack-escape"),
        pytest.param(EMAIL, "<{{ conversation.web_url }}|{{ '<@U1> & co' | slack_escape }}>",
                     "<https://mail.missiveapp.com/#inbox/conversations/af5d8bb0-9f2e-4ea4-b658-90e0f94855d0|"
                     "&lt;@U1&gt; &amp; co>", id="slack-link"),
        pytest.param(NULLS, "{{ conversation.subject | slack_escape }}", "", id="slack-escape-none"),
    ],
)
def test_filters(fixture: str, source: str, expected: Any) -> None:
    assert leaf(source, fixture) == expected


@pytest.mark.parametrize(
    ("send", "fixture", "expected"),
    [
        pytest.param({"body": {"text": "Hi {{ foo }}"}}, EMAIL, f"{AT}.body.text: 'foo' is undefined",
                     id="undefined-name"),
        pytest.param({"body": {"text": "{{ foo }}"}}, EMAIL, f"{AT}.body.text: 'foo' is undefined",
                     id="undefined-name-expression"),
        pytest.param({"body": {"a": ["{{ [foo] }}"]}}, EMAIL, f"{AT}.body.a[0]: 'foo' is undefined",
                     id="undefined-inside-a-list"),
        pytest.param({"body": {"a": "{{ foo | datetime }}"}}, EMAIL, f"{AT}.body.a: 'foo' is undefined",
                     id="undefined-into-a-filter"),
        pytest.param({"body": {"a": "{{ message.nope }}"}}, EMAIL,
                     f"{AT}.body.a: 'dict object' has no attribute 'nope'", id="missing-attribute"),
        pytest.param({"body": {"a": "{{ message.preview }}"}}, "new-comment.json",
                     f"{AT}.body.a: 'message' is undefined", id="no-message-on-comment-rules"),
        pytest.param({"body": {"a": "{{ message.updated_at * 1000 }}"}}, NULLS,
                     f"{AT}.body.a: TypeError: unsupported operand type(s) for *: 'NoneType' and 'int'",
                     id="type-error"),
        pytest.param({"body": {"a": "{{ message.subject | datetime }}"}}, EMAIL,
                     f"{AT}.body.a: TypeError: datetime expects Unix seconds (a number), got str", id="datetime-str"),
        pytest.param({"template": "{{ ''.__class__.__mro__ }}"}, EMAIL,
                     f"{AT}.template: access to attribute '__class__' of 'str' object is unsafe.", id="sandbox-class"),
        pytest.param({"body": {"a": "{{ ''.__class__ }}"}}, EMAIL,
                     f"{AT}.body.a: access to attribute '__class__' of 'str' object is unsafe.",
                     id="sandbox-class-expression"),
        pytest.param({"body": {"a": "{{ cycler.__init__.__globals__ }}"}}, EMAIL,
                     f"{AT}.body.a: access to attribute '__init__' of 'type' object is unsafe.", id="sandbox-globals"),
        pytest.param({"body": {"a": "{{ conversation.shared_labels.append(1) }}"}}, EMAIL,
                     f"{AT}.body.a: access to attribute 'append' of 'list' object is unsafe.",
                     id="sandbox-immutable"),
        pytest.param({"url": "https://x.example/{{ nope }}"}, EMAIL, f"{AT}.url: 'nope' is undefined",
                     id="url-undefined"),
        pytest.param({"url": "{{ message.subject }}"}, EMAIL,
                     f"{AT}.url: the URL is not an absolute http(s) URL (write it like https://example.com/path)",
                     id="url-not-http"),
        pytest.param({"headers": {"X-Foo": "{{ nope }}"}}, EMAIL, f"{AT}.headers.X-Foo: 'nope' is undefined",
                     id="header-undefined"),
    ],
)
def test_render_errors_name_the_place_and_the_cause(send: dict[str, Any], fixture: str, expected: str) -> None:
    assert render_error(send, fixture) == expected


def test_header_values_cannot_break_lines() -> None:
    template = build({"headers": {"X-Subject": "{{ message.subject }}"}})
    payload = load(EMAIL)
    payload["message"]["subject"] = "Hi\r\nX-Evil: 1"
    with pytest.raises(RenderError, match=r"headers\.X-Subject: the rendered header value holds a line break"):
        template.render(template_context(payload, EVENT, json.dumps(payload).encode()))


SECRET = "s3cr3t-t0ken-value"


@pytest.mark.parametrize(
    "destination",
    [
        pytest.param({"type": "http", "url": f"https://api.example.com/{SECRET}/{{{{ nope }}}}"}, id="url"),
        pytest.param({**HTTP, "headers": {"Authorization": f"Bearer {SECRET} {{{{ nope }}}}"}}, id="header"),
    ],
)
def test_render_errors_never_echo_header_or_url_values(destination: dict[str, Any]) -> None:
    message = render_error({"body": {}}, destination=destination)
    assert message.endswith("'nope' is undefined")
    assert SECRET not in message


@pytest.mark.parametrize(
    "send",
    [
        pytest.param({"url": f"https://x.example/{SECRET}/{{{{ a b }}}}"}, id="url"),
        pytest.param({"headers": {"X-Key": f"{SECRET} {{{{ a b }}}}"}}, id="header"),
    ],
)
def test_config_problems_never_echo_header_or_url_values(send: dict[str, Any]) -> None:
    _, problems = compile_send(send)
    assert len(problems) == 1
    assert "got 'b'" in problems[0].message
    assert SECRET not in str(problems[0])


@pytest.mark.parametrize(
    ("send", "destination", "path", "message"),
    [
        pytest.param({"body": {"attachments": [{"text": "{{ a b }}"}]}}, HTTP, f"{AT}.body.attachments[0].text",
                     "template error: expected token 'end of print statement', got 'b' (line 1 of the template)",
                     id="body-leaf"),
        pytest.param({"body": {"text": "Hi {{ a b }}"}}, HTTP, f"{AT}.body.text",
                     "template error: expected token 'end of print statement', got 'b' (line 1 of the template)",
                     id="body-text-leaf"),
        pytest.param({"body": {"odd key": "{{ a | nope }}"}}, HTTP, f'{AT}.body["odd key"]',
                     "template error: No filter named 'nope'. (line 1 of the template)", id="unknown-filter"),
        pytest.param({"template": "line 1\nline 2\n{% if %}\n"}, HTTP, f"{AT}.template",
                     "template error: Expected an expression, got 'end of statement block' (line 3 of the template)",
                     id="template-line"),
        pytest.param({"url": "https://x.example/{{ a b }}"}, HTTP, f"{AT}.url",
                     "template error: expected token 'end of print statement', got 'b' (line 1 of the template)",
                     id="send-url"),
        pytest.param({"headers": {"X-Foo": "{% for %}"}}, HTTP, f"{AT}.headers.X-Foo",
                     "template error: Expected an expression, got 'end of statement block' (line 1 of the template)",
                     id="send-header"),
        pytest.param({}, {**HTTP, "headers": {"X-Bar": "{{ }}"}}, "destinations.crm.headers.X-Bar",
                     "template error: Expected an expression, got 'end of print statement' (line 1 of the template)",
                     id="destination-header"),
        pytest.param({}, {**HTTP, "url": "https://x.example/{{ a b }}"}, "destinations.crm.url",
                     "template error: expected token 'end of print statement', got 'b' (line 1 of the template)",
                     id="destination-url"),
        pytest.param({}, {"type": "http"}, "destinations.crm.url",
                     "missing: give the destination a url, or this send one", id="no-url"),
        pytest.param({}, {"type": "http", "url": "ftp://files.example.com/in"}, "destinations.crm.url",
                     "the URL is not an absolute http(s) URL (write it like https://example.com/path)",
                     id="constant-url-not-http"),
        pytest.param({"url": "http://[::1/x"}, HTTP, f"{AT}.url",
                     "the URL is not an absolute http(s) URL (write it like https://example.com/path)",
                     id="constant-url-unparsable"),
        pytest.param({"headers": {"X-Foo": "a\nb"}}, HTTP, f"{AT}.headers.X-Foo",
                     "the rendered header value holds a line break", id="constant-header-line-break"),
    ],
)
def test_config_problems_name_the_exact_yaml_path(
    send: dict[str, Any], destination: dict[str, Any], path: str, message: str
) -> None:
    template, problems = compile_send(send, destination)
    assert template is None
    assert [(problem.path, problem.message) for problem in problems] == [(path, message)]


def test_every_problem_is_collected() -> None:
    send = {
        "url": "https://x.example/{{ a b }}",
        "headers": {"X-Foo": "{{ c d }}"},
        "body": {"ok": "{{ fine }}", "items": [1, {"text": "{% if %}"}], "when": "{{ e f }}"},
    }
    template, problems = compile_send(send)
    assert template is None
    assert [problem.path for problem in problems] == [
        f"{AT}.url", f"{AT}.headers.X-Foo", f"{AT}.body.items[1].text", f"{AT}.body.when"
    ]


def test_template_file_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "card.j2").write_text('{\n  "a": {{ x y }}\n}\n', encoding="utf-8")
    _, problems = compile_send({"template_file": "card.j2"}, base_dir=tmp_path)
    assert [(problem.path, problem.message) for problem in problems] == [(
        f"{AT}.template_file",
        f"template error: expected token 'end of print statement', got 'y' (line 2 of {tmp_path / 'card.j2'})",
    )]


def test_yaml_constant_that_is_not_json_is_a_problem() -> None:
    send = yaml.safe_load("body: {when: 2024-06-03}")
    _, problems = compile_send(send)
    assert [problem.path for problem in problems] == [f"{AT}.body.when"]
    assert problems[0].message.startswith("cannot be sent as JSON")
    assert problems[0].hint == "quote the value"


def test_templates_are_reusable_across_payloads() -> None:
    template = build({"body": {"from": "{{ message.from_field.address }}", "at": "{{ message.delivered_at }}"}})
    bodies = [json.loads(template.render(context_of(name)).body) for name in (EMAIL, LABELS, NULLS)]
    assert bodies == [
        {"from": "priya.natarajan@example.org", "at": 1717401195},
        {"from": "tomasz.w@example.org", "at": 1717402000},
        {"from": "no-reply@notifications.example.net", "at": 1717408000},
    ]


def test_rendered_headers_are_a_fresh_dict_each_time() -> None:
    template = build({"body": {}})
    context = context_of(EMAIL)
    first = template.render(context)
    first.headers["X-Added"] = "by the router"
    assert "X-Added" not in template.render(context).headers


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param({"rule": {"type": "x"}, "message": {"id": 1}},
                     {"rule": {"type": "x"}, "message": {"id": 1}}, id="message-rule"),
        pytest.param({"latest_message": {"id": 2}}, {"latest_message": {"id": 2}, "message": {"id": 2}},
                     id="latest-message-aliased"),
        pytest.param({"event": "theirs", "payload": 1}, {}, id="ours-win"),
        pytest.param([1, 2], {}, id="list-payload"),
        pytest.param("text", {}, id="string-payload"),
    ],
)
def test_template_context(payload: Any, expected: dict[str, Any]) -> None:
    names = template_context(payload, EVENT, b"{}")
    assert names == {**expected, "event": EVENT, "payload": payload, ORIGINAL_BODY: b"{}"}


@pytest.mark.parametrize(
    ("url", "from_template"),
    [
        pytest.param("https://api.example.com/contacts/{{ message.id }}", False, id="template-in-the-path"),
        pytest.param("https://api.example.com?q={{ x }}", False, id="template-in-the-query"),
        pytest.param("https://api.example.com:8443/", False, id="no-template"),
        pytest.param("https://{{ payload.host }}/notes", True, id="template-is-the-host"),
        pytest.param("https://api.example.com{{ x }}", True, id="template-may-go-on-with-the-host"),
        pytest.param("https://api.example.com:{{ port }}/", True, id="template-is-the-port"),
        pytest.param("{{ payload.callback_url }}", True, id="template-is-the-whole-url"),
        pytest.param("http{{ 's' if secure }}://api.example.com/", True, id="template-in-the-scheme"),
        pytest.param("https://user:{% if x %}a{% endif %}@h/", True, id="statement-in-the-authority"),
    ],
)
def test_which_urls_take_their_host_from_a_template(url: str, from_template: bool) -> None:
    assert host_from_template(url) is from_template


def test_a_rendered_request_says_whether_its_host_came_from_a_template() -> None:
    assert render({"url": "https://{{ rule.type | replace('_', '-') }}.example.com/"}).untrusted_host is True
    assert render({"url": "https://crm.example.com/{{ rule.type }}"}).untrusted_host is False


@pytest.mark.parametrize(
    ("value", "segment"),
    [
        pytest.param("../../admin", "..%2F..%2Fadmin", id="slashes-are-encoded"),
        pytest.param("a b@c.com?x=1#y", "a%20b%40c.com%3Fx%3D1%23y", id="reserved-characters"),
        pytest.param("Ré_sumé-1.~", "R%C3%A9_sum%C3%A9-1.~", id="unreserved-stay"),
        pytest.param(42, "42", id="a-number"),
    ],
)
def test_path_segment_keeps_a_value_inside_one_segment(value: Any, segment: str) -> None:
    template = build({"url": "https://crm.example.com/contacts/{{ payload.v | path_segment }}/notes"})
    payload = {"rule": {"type": "x"}, "v": value}
    request = template.render(template_context(payload, EVENT, json.dumps(payload).encode()))
    assert request.url == f"https://crm.example.com/contacts/{segment}/notes"


@pytest.mark.parametrize("value", [".", ".."])
def test_path_segment_refuses_dot_segments(value: str) -> None:
    """Encoded or not, a URL normaliser reads them as "this" and "parent": the request would climb a level."""
    template = build({"url": "https://crm.example.com/contacts/{{ payload.v | path_segment }}/notes"})
    payload = {"rule": {"type": "x"}, "v": value}
    with pytest.raises(RenderError, match=f"'{re.escape(value)}' cannot be a path segment"):
        template.render(template_context(payload, EVENT, json.dumps(payload).encode()))
