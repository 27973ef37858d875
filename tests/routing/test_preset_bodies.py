"""What presets check in a send at load and do to its rendered body: Teams' envelope, PagerDuty's keys."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.config.presets import MISSIVE_POSTS_URL, PAGERDUTY_EVENTS_URL
from gateway.config.schema import DestinationConfig
from gateway.errors import RenderError
from tests.routing.test_templates import AT, build, compile_send, render

TEAMS = {"type": "teams", "url": "https://default0a1b.2c.environment.api.powerplatform.com/powerautomate/automations/"
         "direct/workflows/0f1e/triggers/manual/paths/invoke?api-version=1&sig=abc"}
PAGERDUTY = {"type": "pagerduty", "routing_key": "R0UT1NGKEY0123456789abcdefghijkl"}
CARD = {"type": "AdaptiveCard", "version": "1.4", "body": [{"type": "TextBlock", "text": "{{ message.subject }}"}]}
ENVELOPE = {"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
                                                "content": {"type": "AdaptiveCard", "version": "1.4"}}]}


def problems_of(send: dict[str, Any], destination: dict[str, Any]) -> list[str]:
    _, problems = compile_send(send, destination)
    return [str(problem) for problem in problems]


def test_teams_card_goes_out_in_the_message_envelope() -> None:
    request = render({"card": CARD}, destination=TEAMS)

    assert json.loads(request.body) == {
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {"type": "AdaptiveCard", "version": "1.4",
                        "body": [{"type": "TextBlock", "text": "Order HL-20931 arrived damaged"}]},
        }],
    }  # fmt: skip
    assert request.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    ("send", "expected"),
    [
        pytest.param({}, f"{AT}: a teams send needs card: (the Adaptive Card); Teams drops the raw payload",
                     id="no-body-form"),
        pytest.param({"body": {"text": "{{ message.subject }}"}},
                     f"{AT}.body: Teams drops this body: it is not a message envelope", id="messagecard-style-body"),
        pytest.param({"body": {"type": "message", "attachments": []}},
                     f"{AT}.body: Teams drops this body: it has no attachments list", id="no-attachments"),
        pytest.param({"body": {"type": "message", "attachments": [{"contentType": "application/json",
                                                                   "content": {}}]}},
                     f"{AT}.body: Teams drops this body: attachments[0] is not an Adaptive Card", id="not-a-card"),
        pytest.param({"template": '{"text": {{ message.subject | tojson }}}'},
                     f"{AT}.template: Teams drops this body: it is not a message envelope", id="template"),
        pytest.param({"card": {"body": []}}, f"{AT}.card: an Adaptive Card needs type: AdaptiveCard and a version",
                     id="card-without-type"),
    ],
)
def test_teams_refuses_at_load_what_the_flow_would_drop(send: dict[str, Any], expected: str) -> None:
    [problem] = problems_of(send, TEAMS)
    assert problem.startswith(expected)
    assert "card:" in problem  # the hint says what to write instead


@pytest.mark.parametrize(
    "send",
    [
        pytest.param({"body": ENVELOPE}, id="body-in-the-envelope"),
        pytest.param({"body": {"type": "message", "attachments": "{{ [] }}"}}, id="templated-attachments-later"),
        pytest.param({"template": json.dumps(ENVELOPE)}, id="template-in-the-envelope"),
    ],
)
def test_teams_takes_a_body_in_the_envelope(send: dict[str, Any]) -> None:
    assert problems_of(send, TEAMS) == []


def test_teams_checks_every_rendered_body() -> None:
    template = ('{% if message.subject %}' + json.dumps(ENVELOPE) + '{% else %}{"text": "no subject"}{% endif %}'
                "{# application/vnd.microsoft.card.adaptive attachments #}")
    assert json.loads(render({"template": template}, destination=TEAMS).body) == ENVELOPE

    with pytest.raises(RenderError, match="the body would be dropped by Teams: it is not a message envelope"):
        render({"template": template}, "null-fields.json", destination=TEAMS)


def test_card_is_for_teams_only() -> None:
    [problem] = problems_of({"card": CARD}, {"type": "slack", "url": "https://hooks.slack.com/services/T/B/x"})
    assert problem.startswith(f"{AT}.card: card: is for teams destinations ('crm' is slack); use body:")


def test_pagerduty_adds_the_routing_key_and_the_dedup_key() -> None:
    payload = {"summary": "{{ message.subject }}", "source": "missive", "severity": "critical"}
    request = render({"body": {"event_action": "trigger", "payload": payload}}, destination=PAGERDUTY)

    assert request.url == PAGERDUTY_EVENTS_URL
    assert "Authorization" not in request.headers
    assert json.loads(request.body) == {
        "event_action": "trigger", "payload": {**payload, "summary": "Order HL-20931 arrived damaged"},
        "routing_key": PAGERDUTY["routing_key"], "dedup_key": "evt_1:vip",
    }  # fmt: skip


def test_pagerduty_keeps_the_keys_a_body_gives() -> None:
    body = {"event_action": "resolve", "dedup_key": "conversation-{{ conversation.id }}", "routing_key": "other"}
    sent = json.loads(render({"body": body}, destination=PAGERDUTY).body)

    assert (sent["dedup_key"], sent["routing_key"]) == ("conversation-af5d8bb0-9f2e-4ea4-b658-90e0f94855d0", "other")


@pytest.mark.parametrize(
    ("send", "destination", "expected"),
    [
        pytest.param({}, PAGERDUTY, f"{AT}: a pagerduty send needs a body: an Events v2 event", id="no-body"),
        pytest.param({"body": {"payload": {}}}, PAGERDUTY, f"{AT}.body: PagerDuty needs event_action",
                     id="no-event-action"),
        pytest.param({"body": {"event_action": "trigger"}}, {"type": "pagerduty"},
                     "destinations.crm: a pagerduty destination needs routing_key", id="no-routing-key"),
    ],
)
def test_pagerduty_problems_at_load(send: dict[str, Any], destination: dict[str, Any], expected: str) -> None:
    [problem] = problems_of(send, destination)
    assert problem.startswith(expected)


def test_pagerduty_template_must_render_a_json_object() -> None:
    template = build({"template": "trigger {{ message.subject }}"}, PAGERDUTY)
    with pytest.raises(RenderError, match="a PagerDuty body must be a JSON object"):
        template.render({"message": {"subject": "x"}, "event": {"id": "evt_1"}})


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        pytest.param({"type": "missive"}, (MISSIVE_POSTS_URL, 5), id="missive-defaults"),
        pytest.param({"type": "missive", "url": "https://x.example/v1/posts", "concurrency": 2},
                     ("https://x.example/v1/posts", 2), id="missive-written-wins"),
        pytest.param({"type": "pagerduty"}, (PAGERDUTY_EVENTS_URL, 4), id="pagerduty-url"),
        pytest.param({"type": "http", "url": "https://x.example/"}, ("https://x.example/", 4), id="http-none"),
    ],
)
def test_preset_settings(settings: dict[str, Any], expected: tuple[str, int]) -> None:
    destination = DestinationConfig.model_validate(settings)
    assert (destination.url, destination.concurrency) == expected
