"""`gateway test`: what a payload would do under a config, with secrets masked."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from gateway.config.presets import shown_authorization
from gateway.config.schema import DestinationConfig
from gateway.errors import GatewayError
from gateway.routing.chain import StepAnswer, step_view
from gateway.routing.compiled import LoadedConfig
from gateway.routing.payload import is_validation_request, parse_payload
from gateway.routing.plan import RouteVerdict, plan


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


def dry_run(
    config: LoadedConfig,
    body: bytes,
    source: str | None = None,
    event: Mapping[str, Any] | None = None,
    answers: Mapping[str, StepAnswer] | None = None,
) -> dict[str, Any]:
    """Route `body` as ingest would, without storing or sending; the result is JSON-ready and masked.

    `event` is what templates see as `event` (`id`, `source`, `received_at`): a stored event's, to
    trace it again; by default a made-up one received now. Chained requests show as waiting for
    their step, or rendered from the step's answer in `answers`.
    """
    name = pick_source(config, source)
    steps = {send.step for route in config.routes_for(name) for send in route.sends if send.step is not None}
    unknown = sorted(set(answers or {}) - steps)
    if unknown:
        known = ", ".join(sorted(steps)) or "none"
        raise GatewayError(f"no request of source '{name}' has id '{unknown[0]}' (ids: {known})")
    if is_validation_request(body):
        return {"source": name, "validation_request": True, "routes": []}
    payload = parse_payload(body)
    if not isinstance(payload, dict) or "rule" not in payload:
        return {"source": name, "validation_request": True, "routes": []}
    meta = event or {"id": "evt_dry_run", "source": name, "received_at": time.time()}
    views = {step: step_view(answer, config.masker) for step, answer in (answers or {}).items()}
    verdicts = plan(config.routes_for(name), payload, body, meta, explain=True, answers=views)
    return {
        "source": name,
        "validation_request": False,
        "rule_type": (payload.get("rule") or {}).get("type"),
        "routes": [_verdict(config, verdict) for verdict in verdicts],
    }


def _with_credentials(headers: dict[str, str], destination: DestinationConfig) -> dict[str, str]:
    """The headers as sent: with the Authorization that `token`/`auth` adds at send time, masked."""
    auth = destination.credentials()
    if auth is None:
        return headers
    kept = {name: value for name, value in headers.items() if name.lower() != "authorization"}
    return {**kept, "Authorization": shown_authorization(auth)}


def _verdict(config: LoadedConfig, verdict: RouteVerdict) -> dict[str, Any]:
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
    return {"route": verdict.route, "matched": verdict.matched, "failed": verdict.failed, "sends": sends}
