"""What a destination preset checks in a send and adds to its rendered body.

- teams: Workflows answer 202 and drop, inside the flow, any body that is not an Adaptive
  Card in the message envelope, so the sender never learns. A send gives `card:` (the
  gateway wraps it), or a body already in the envelope: checked at load where the config
  shows it, and after every render.
- pagerduty: Events v2 bodies carry the `routing_key` (the destination's) and a
  `dedup_key` (by default `<event id>:<route>`, so retries and replays open one incident).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from gateway.config.presets import TEAMS_CARD_CONTENT_TYPE
from gateway.config.schema import DestinationConfig, SendConfig
from gateway.errors import ConfigProblem, RenderError
from gateway.routing.template_env import Scope, dumps, is_template

BodyFinisher = Callable[[bytes, Scope], bytes]

_TEAMS_HINT = "give the Adaptive Card as card: and the gateway wraps it"
_ENVELOPE = f'{{"type": "message", "attachments": [{{"contentType": "{TEAMS_CARD_CONTENT_TYPE}", "content": ...}}]}}'


def check_send(
    send: SendConfig, destination: DestinationConfig, template_source: str | None, at: str,
    problems: list[ConfigProblem],
) -> None:  # fmt: skip
    """Append what the destination's preset finds wrong with `send` (at YAML path `at`) to `problems`."""
    if send.card is not None and destination.type != "teams":
        problems.append(ConfigProblem(f"{at}.card", f"card: is for teams destinations ('{send.to}' is "
                                      f"{destination.type})", hint="use body: for this destination"))  # fmt: skip
    elif destination.type == "teams":
        _check_teams(send, template_source, at, problems)
    elif destination.type == "pagerduty":
        _check_pagerduty(send, destination, at, problems)


def finisher_spec(send: SendConfig, destination: DestinationConfig, route: str) -> list[str | None] | None:
    """What the preset does to each rendered body of `send`, in route `route`, as plain data (a chained
    request keeps it with its snapshot); None when nothing."""
    if destination.type == "teams" and send.card is None:
        return ["teams"]
    if destination.type == "pagerduty":
        return ["pagerduty", route, destination.routing_key.get_secret_value() if destination.routing_key else None]
    return None


def body_finisher(spec: list[str | None] | None) -> BodyFinisher | None:
    """The function a `finisher_spec` stands for."""
    if spec is None:
        return None
    if spec[0] == "teams":
        return _teams_envelope_check
    _, route, routing_key = spec

    def pagerduty_keys(body: bytes, scope: Scope) -> bytes:
        return _pagerduty_keys(body, routing_key, f"{scope['event']['id']}:{route}")

    return pagerduty_keys


def envelope_problem(document: Any) -> str | None:
    """Why `document` is not a Teams message holding Adaptive Cards; None when it is.

    Template leaves (in a `body:` as written) are taken on trust: the render is checked again.
    """
    if isinstance(document, str) and is_template(document):
        return None
    if not isinstance(document, dict) or document.get("type") != "message":
        return f"it is not a message envelope {_ENVELOPE}"
    attachments = document.get("attachments")
    if isinstance(attachments, str) and is_template(attachments):
        return None
    if not isinstance(attachments, list) or not attachments:
        return "it has no attachments list holding the Adaptive Card"
    for index, attachment in enumerate(attachments):
        if isinstance(attachment, str) and is_template(attachment):
            continue
        if not isinstance(attachment, dict) or attachment.get("contentType") != TEAMS_CARD_CONTENT_TYPE:
            return f"attachments[{index}] is not an Adaptive Card (contentType {TEAMS_CARD_CONTENT_TYPE})"
        content = attachment.get("content")
        if not (isinstance(content, dict) or (isinstance(content, str) and is_template(content))):
            return f"attachments[{index}] has no card in 'content'"
    return None


def _check_teams(send: SendConfig, template_source: str | None, at: str, problems: list[ConfigProblem]) -> None:
    if send.card is not None:
        kind, version = send.card.get("type"), send.card.get("version")
        if kind != "AdaptiveCard" or not version:
            problems.append(ConfigProblem(f"{at}.card", "an Adaptive Card needs type: AdaptiveCard and a version",
                                          hint='e.g. {type: AdaptiveCard, version: "1.4", body: [...]}'))  # fmt: skip
        return
    if send.body is not None:
        problem = envelope_problem(send.body)
        if problem:
            problems.append(ConfigProblem(f"{at}.body", f"Teams drops this body: {problem}", hint=_TEAMS_HINT))
    elif template_source is not None:
        if TEAMS_CARD_CONTENT_TYPE not in template_source or "attachments" not in template_source:
            path = f"{at}.template" if send.template is not None else f"{at}.template_file"
            problems.append(ConfigProblem(path, f"Teams drops this body: it is not a message envelope {_ENVELOPE}",
                                          hint=_TEAMS_HINT))  # fmt: skip
    else:
        problems.append(ConfigProblem(at, "a teams send needs card: (the Adaptive Card); Teams drops the raw "
                                      "payload", hint='add card: {type: AdaptiveCard, version: "1.4", body: [...]}'))


def _teams_envelope_check(body: bytes, scope: Scope) -> bytes:
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    problem = envelope_problem(document) if document is not None else "it is not JSON"
    if problem:
        raise RenderError(f"the body would be dropped by Teams: {problem}; {_TEAMS_HINT}")
    return body


def _check_pagerduty(
    send: SendConfig, destination: DestinationConfig, at: str, problems: list[ConfigProblem]
) -> None:
    if send.body is None and send.template is None and send.template_file is None:
        problems.append(ConfigProblem(at, "a pagerduty send needs a body: an Events v2 event",
                                      hint="add body: {event_action: trigger, payload: {summary: ..., "
                                      "source: ..., severity: critical}}"))  # fmt: skip
        return
    if not isinstance(send.body, dict):
        return
    if "event_action" not in send.body:
        problems.append(ConfigProblem(f"{at}.body", "PagerDuty needs event_action",
                                      hint="add event_action: trigger (or acknowledge, resolve)"))
    if destination.routing_key is None and "routing_key" not in send.body:
        problems.append(ConfigProblem(f"destinations.{send.to}", "a pagerduty destination needs routing_key",
                                      hint="add routing_key: ${PAGERDUTY_ROUTING_KEY} (the integration key)"))


def _pagerduty_keys(body: bytes, routing_key: str | None, dedup_key: str) -> bytes:
    try:
        event = json.loads(body)
    except ValueError:
        event = None
    if not isinstance(event, dict):
        raise RenderError("a PagerDuty body must be a JSON object (an Events v2 event)")
    if routing_key is not None:
        event.setdefault("routing_key", routing_key)
    if "routing_key" not in event:
        raise RenderError("the PagerDuty event has no routing_key: set routing_key on the destination")
    event.setdefault("dedup_key", dedup_key)
    return dumps(event).encode("utf-8")
