"""The dry-run report (`gateway.routing.dry_run`) as text for a person to read."""

from __future__ import annotations

import json
from typing import Any

from gateway.errors import plural


def format_text(report: dict[str, Any]) -> str:
    """The dry-run report for a person to read."""
    lines = [f"source: {report['source']}"]
    if report["validation_request"]:
        lines.append("this is a validation request (no 'rule'): answered 200, nothing routed")
        return "\n".join(lines)
    lines.append(f"rule.type: {report['rule_type']}")
    conversation = report.get("conversation")
    if conversation is not None:
        lines += _conversation(conversation)
    if not report["routes"]:
        lines.append("no route listens to this source")
    for route in report["routes"]:
        once = route.get("once_per") or {}
        if not route["matched"]:
            key = f" (key {once['key']!r})" if once.get("suppressed") else ""
            lines.append(f"✗ {route['route']}: {route['failed']}{key}")
            continue
        if "key_error" in once:
            lines.append(f"✓ {route['route']}: matched; not limited by once_per, its key cannot render: "
                         f"{once['key_error']}")  # fmt: skip
        elif once:
            lines.append(f"✓ {route['route']}: matched; once_per holds key {once['key']!r} until {once['until']}")
        else:
            lines.append(f"✓ {route['route']}: matched")
        for send in route["sends"]:
            if "waiting_on" in send:
                step = send["waiting_on"]
                lines.append(f"    → {send['to']}: waits for step {step}, and is rendered from its answer "
                             f"(--step-response {step}=FILE shows it)")
                continue
            if "error" in send:
                lines.append(f"    → {send['to']}: CANNOT RENDER: {send['error']}")
                continue
            request = send["request"]
            lines.append(f"    → {send['to']}: {request['method']} {request['url']}")
            lines.extend(f"        {name}: {value}" for name, value in request["headers"].items())
            if request["original_payload"]:
                lines.append(f"        original payload ({plural(request['body_bytes'], 'byte')}, as received)")
            else:
                lines.extend(f"        {line}" for line in _pretty(request["body"]).splitlines())
    lines.append(_summary(report["routes"]))
    return "\n".join(lines)


def _summary(routes: list[dict[str, Any]]) -> str:
    """`2 of 3 routes matched: 3 requests would be sent, 1 cannot render (a dead letter at ingest)`."""
    matched = [route for route in routes if route["matched"]]
    sends = [send for route in matched for send in route["sends"]]
    broken = sum("error" in send for send in sends)
    waiting = sum("waiting_on" in send for send in sends)
    line = f"{len(matched)} of {plural(len(routes), 'route')} matched: "
    line += f"{plural(len(sends) - broken, 'request')} would be sent"
    line += f" ({waiting} once an earlier step answers)" if waiting else ""
    return line + (f", {broken} cannot render (a dead letter at ingest)" if broken else "")


def _conversation(conversation: dict[str, Any]) -> list[str]:
    if conversation["id"] is None:
        return ["conversation: none in this payload (no changes, nothing remembered)"]
    before = conversation["before"]
    if not conversation["read"]:
        seen = "state not read (--no-state): taken as new to the gateway"
    elif before is None:
        seen = "new to the gateway"
    else:
        seen = f"known: {_state(before)}"
    lines = [f"conversation {conversation['id']}: {seen}"]
    changes = conversation["changes"]
    if changes is not None:
        people = [f"{word} {_people(changes[f'assignees_{word}'])}" for word in ("added", "removed")]
        lines.append(
            f"changes: labels added {_names(changes['labels_added'])}, removed {_names(changes['labels_removed'])}; "
            f"assignees {', '.join(people)}; first_seen {str(changes['first_seen']).lower()}"
        )
    if conversation["after"] is not None:
        lines.append(f"this event would leave it: {_state(conversation['after'])}")
    return lines


def _state(state: dict[str, Any]) -> str:
    return f"labels {_names(state['labels'])}; assignees {_people(state['assignees'])}"


def _names(names: list[str]) -> str:
    return ", ".join(names) or "none"


def _people(people: list[dict[str, Any]]) -> str:
    return _names([person["name"] or person["email"] or person["id"] for person in people])


def _pretty(body: str) -> str:
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        return body
