"""`gateway test`: what a payload would do under a config, with secrets masked."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.config.presets import shown_authorization
from gateway.config.schema import DestinationConfig
from gateway.errors import GatewayError
from gateway.model import ConversationState, OnceKey, StateKeys, StateSnapshot, StateWrite
from gateway.routing.chain import StepAnswer, step_view
from gateway.routing.compiled import LoadedConfig
from gateway.routing.conversation import changes_of, conversation_facts, next_state, state_keys
from gateway.routing.payload import is_validation_request, parse_payload
from gateway.routing.plan import PlanState, RouteVerdict, once_keys, plan, utc_text, windows_opened


def pick_source(config: LoadedConfig, source: str | None) -> str:
    names = sorted(config.config.sources)
    if source is None:
        if len(names) == 1:
            return names[0]
        raise GatewayError(f"the config has several sources; choose one with --source ({', '.join(names)})")
    if source not in config.config.sources:
        raise GatewayError(f"unknown source '{source}'; the config has: {', '.join(names)}")
    return source


def sample_answer(content: bytes) -> StepAnswer:
    """A sample answer for a dry run: status 200, JSON when the body parses as JSON."""
    try:
        json.loads(content)
    except ValueError:
        return StepAnswer(200, {"Content-Type": "text/plain; charset=utf-8"}, content)
    return StepAnswer(200, {"Content-Type": "application/json"}, content)


@dataclass(frozen=True)
class DryRun:
    """A dry run's report, and the state it would write (None: its source keeps none, or nothing was routed)."""

    report: dict[str, Any]
    write: StateWrite | None = None


def dry_run(
    config: LoadedConfig,
    body: bytes,
    source: str | None = None,
    event: Mapping[str, Any] | None = None,
    answers: Mapping[str, StepAnswer] | None = None,
    seen: StateSnapshot | None = None,
    changes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Route `body` as ingest would, without storing or sending; the result is JSON-ready and masked.

    `event` is what templates see as `event` (`id`, `source`, `received_at`): a stored event's, to
    trace it again; by default a made-up one received now. Chained requests show as waiting for
    their step, or rendered from the step's answer in `answers`. On a source that keeps state,
    `seen` is the state it is routed on (see `needed_state`; None: nothing known), or `changes` are
    the ones a stored event's routes saw.
    """
    return route_dry(config, body, source, event, answers, seen, changes).report


def needed_state(config: LoadedConfig, body: bytes, source: str | None = None) -> StateKeys | None:
    """The state a dry run of `body` reads, for the caller to fetch; None when its source keeps none."""
    name = pick_source(config, source)
    payload = _routable(body)
    if payload is None or not config.state_of(name):
        return None
    return _state_keys(config, name, payload, body, _made_up_event(name))


def route_dry(
    config: LoadedConfig,
    body: bytes,
    source: str | None = None,
    event: Mapping[str, Any] | None = None,
    answers: Mapping[str, StepAnswer] | None = None,
    seen: StateSnapshot | None = None,
    changes: dict[str, Any] | None = None,
) -> DryRun:
    name = pick_source(config, source)
    steps = {send.step for route in config.routes_for(name) for send in route.sends if send.step is not None}
    unknown = sorted(set(answers or {}) - steps)
    if unknown:
        known_ids = ", ".join(sorted(steps)) or "none"
        raise GatewayError(f"no request of source '{name}' has id '{unknown[0]}' (ids: {known_ids})")
    views = {step: step_view(answer, config.masker) for step, answer in (answers or {}).items()}
    payload = _routable(body)
    if payload is None:
        return DryRun({"source": name, "validation_request": True, "routes": []})
    meta = event or _made_up_event(name)
    report: dict[str, Any] = {
        "source": name, "validation_request": False, "rule_type": (payload.get("rule") or {}).get("type"),
    }  # fmt: skip
    routes = config.routes_for(name)
    if not config.state_of(name):
        verdicts = plan(routes, payload, body, meta, explain=True, answers=views)
        return DryRun({**report, "routes": [_verdict(config, verdict) for verdict in verdicts]})
    now_ms = round(float(meta["received_at"]) * 1000)
    keys, key_errors = once_keys(routes, payload, body, meta)
    state_keys = _state_keys(config, name, payload, body, meta, keys)
    known = seen or StateSnapshot()
    facts = conversation_facts(payload)
    if config.state_of(name).conversations and changes is None:
        changes = changes_of(known.conversation, facts)
    state = PlanState(changes, keys, known.once_until_ms)
    verdicts = plan(routes, payload, body, meta, explain=True, answers=views, state=state)
    after = next_state(known.conversation, facts, now_ms) if state_keys.conversation else None
    write = StateWrite(state_keys, known, after, windows_opened(routes, verdicts, keys, now_ms))
    shown = [_verdict(config, verdict, keys, key_errors, write.once_until_ms) for verdict in verdicts]
    conversation = {
        "id": facts.id, "known": known.conversation is not None and seen is not None, "read": seen is not None,
        "before": _state_document(known.conversation), "changes": changes, "after": _state_document(after),
    }  # fmt: skip
    return DryRun({**report, "conversation": config.masker.value(conversation), "routes": shown}, write)


class StateBook:
    """State kept in memory, as a store would keep it: what rule tests route a case's earlier payloads into."""

    def __init__(self) -> None:
        self._conversations: dict[tuple[str, str], tuple[ConversationState, int]] = {}
        self._windows: dict[OnceKey, int] = {}

    def read(self, keys: StateKeys, now_ms: int) -> StateSnapshot:
        known = self._conversations.get(keys.conversation) if keys.conversation else None
        running = {once: self._windows[once] for once in keys.once if self._windows.get(once, 0) > now_ms}
        return StateSnapshot(known[0] if known else None, known[1] if known else 0, running)

    def write(self, write: StateWrite) -> None:
        if write.keys.conversation is not None and write.conversation is not None:
            self._conversations[write.keys.conversation] = (write.conversation, write.seen.version + 1)
        self._windows.update(write.once_until_ms)


def route_in_turn(
    config: LoadedConfig, bodies: list[bytes], source: str | None = None,
    answers: Mapping[str, StepAnswer] | None = None,
) -> DryRun:  # fmt: skip
    """Dry-run `bodies` in turn, each on the state the ones before it left; the last one's run."""
    book = StateBook()
    run = DryRun({})
    for body in bodies:
        keys = needed_state(config, body, source)
        seen = book.read(keys, round(time.time() * 1000)) if keys else None
        run = route_dry(config, body, source, answers=answers, seen=seen)
        if run.write is not None:
            book.write(run.write)
    return run


def _routable(body: bytes) -> dict[str, Any] | None:
    """The payload, or None for a validation request (nothing is routed)."""
    if is_validation_request(body):
        return None
    payload = parse_payload(body)
    return payload if isinstance(payload, dict) and "rule" in payload else None


def _made_up_event(source: str) -> dict[str, Any]:
    return {"id": "evt_dry_run", "source": source, "received_at": time.time()}


def _state_keys(
    config: LoadedConfig, source: str, payload: Any, body: bytes, meta: Mapping[str, Any],
    keys: Mapping[str, str] | None = None,
) -> StateKeys:  # fmt: skip
    if keys is None:
        keys, _ = once_keys(config.routes_for(source), payload, body, meta)
    return state_keys(source, conversation_facts(payload), config.state_of(source).conversations, keys)


def _state_document(state: ConversationState | None) -> dict[str, Any] | None:
    if state is None:
        return None
    return {"labels": list(state.labels), "assignees": [vars(person) for person in state.assignees]}


def _with_credentials(headers: dict[str, str], destination: DestinationConfig) -> dict[str, str]:
    """The headers as sent: with the Authorization that `token`/`auth` adds at send time, masked."""
    auth = destination.credentials()
    if auth is None:
        return headers
    kept = {name: value for name, value in headers.items() if name.lower() != "authorization"}
    return {**kept, "Authorization": shown_authorization(auth)}


def _verdict(
    config: LoadedConfig, verdict: RouteVerdict, keys: Mapping[str, str] | None = None,
    key_errors: Mapping[str, str] | None = None, opened: Mapping[OnceKey, int] | None = None,
) -> dict[str, Any]:  # fmt: skip
    masker = config.masker
    sends = []
    for send in verdict.sends:
        entry: dict[str, Any] = {"to": send.destination}
        if send.waiting_on is not None:
            entry["waiting_on"] = send.waiting_on
        elif send.request is None:
            entry["error"] = masker.text(send.error or "")
        else:
            request = masker.request(send.request)
            entry["request"] = {
                "method": request.method,
                "url": request.url,
                "headers": _with_credentials(request.headers, config.config.destinations[send.destination]),
                "body": request.body.decode("utf-8", "replace"),
                "body_bytes": len(send.request.body),
                "original_payload": send.forwards_original,
            }
        sends.append(entry)
    shown: dict[str, Any] = {"route": verdict.route, "matched": verdict.matched, "failed": verdict.failed,
                             "sends": sends}  # fmt: skip
    key = (keys or {}).get(verdict.route)
    if key is not None:
        until_ms = verdict.suppressed_until_ms or (opened or {}).get((verdict.route, key))
        shown["once_per"] = {"key": key, "until": utc_text(until_ms) if until_ms else None,
                             "suppressed": verdict.suppressed_until_ms is not None}  # fmt: skip
    elif verdict.route in (key_errors or {}):
        shown["once_per"] = {"key_error": masker.text((key_errors or {})[verdict.route])}
    return shown
