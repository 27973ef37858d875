"""The dry-run report (`gateway.routing.dry_run`) as text for a person to read."""

from __future__ import annotations

import json
from typing import Any


def format_text(report: dict[str, Any]) -> str:
    """The dry-run report for a person to read."""
    lines = [f"source: {report['source']}"]
    if report["validation_request"]:
        lines.append("this is a validation request (no 'rule'): answered 200, nothing routed")
        return "\n".join(lines)
    lines.append(f"rule.type: {report['rule_type']}")
    if not report["routes"]:
        lines.append("no route listens to this source")
    for route in report["routes"]:
        if not route["matched"]:
            lines.append(f"✗ {route['route']}: {route['failed']}")
            continue
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
            lines.extend(f"        {line}" for line in _pretty(request["body"]).splitlines())
    return "\n".join(lines)


def _pretty(body: str) -> str:
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        return body
