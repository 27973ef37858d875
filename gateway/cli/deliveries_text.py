"""The deliveries service's documents as text tables, for `gateway deliveries` and `gateway replay`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gateway.delivery.dead_letters import ReplayOutcome
from gateway.errors import plural

ERROR_CHARS = 60


def format_deliveries(listed: dict[str, Any]) -> str:
    documents = listed["deliveries"]
    rows = [
        [
            doc["id"], doc["status"], f"{doc['attempts']}/{doc['max_attempts']}", doc["route"], doc["destination"],
            timestamp(doc["created_at_ms"]), short(doc["last_error"] or _waits(doc)),
        ]
        for doc in documents
    ]
    lines = table(["ID", "STATUS", "ATTEMPTS", "ROUTE", "DESTINATION", "CREATED", "LAST ERROR"], rows)
    more = "; the limit was reached, narrow the filters or raise --limit" if listed["count"] >= listed["limit"] else ""
    count = plural(len(documents), "delivery", "deliveries")
    return "\n".join([*lines, count + more])


def format_delivery(doc: dict[str, Any]) -> str:
    lines = [
        f"delivery {doc['id']} ({doc['status']}, {doc['attempts']}/{doc['max_attempts']} attempts)",
        f"  event: {doc['event_id']}   route: {doc['route']}   destination: {doc['destination']}",
        f"  created: {timestamp(doc['created_at_ms'])}   updated: {timestamp(doc['updated_at_ms'])}",
    ]
    if doc["step"] or doc["after"]:
        step = f"step {doc['step']}" if doc["step"] else "a chained request"
        lines.append(f"  {step}" + (f", runs after {doc['after']}" if doc["after"] else ""))
    if doc["last_error"]:
        lines.append(f"  last error: {doc['last_error']}")
    request = doc["request"]
    if request is None:
        lines.append(f"  request: none ({_waits(doc) or 'rendering failed'})")
    else:
        lines.append(f"  request: {request['method']} {request['url']}")
        lines.extend(f"    {name}: {value}" for name, value in request["headers"].items())
        lines.extend(f"    {line}" for line in request["body"].splitlines())
    rows = [
        [str(a["number"]), timestamp(a["started_at_ms"]), f"{a['elapsed_ms']:.0f}", str(a["status_code"] or "-"),
         short(a["error"] or a["response_excerpt"] or "")]
        for a in doc.get("attempt_log", [])
    ]  # fmt: skip
    lines += ["attempts:", *(f"  {line}" for line in table(["#", "STARTED", "MS", "STATUS", "ERROR"], rows))]
    return "\n".join(lines)


def format_replay(doc: dict[str, Any]) -> str:
    rows = [
        [item["outcome"], item["id"], f"{item['route']} → {item['destination']}", item["reason"] or ""]
        for item in doc["deliveries"]
    ]
    if not rows:
        return "nothing to replay: no delivery matches"
    summary = ", ".join(f"{doc[outcome.value]} {outcome.value}" for outcome in ReplayOutcome)
    lines = [*table(["OUTCOME", "ID", "ROUTE → DESTINATION", "REASON"], rows), summary]
    if doc["more"]:
        lines.append("the limit was reached: run the replay again for the rest")
    if doc[ReplayOutcome.QUEUED.value]:
        lines.append("a running `gateway serve` or `gateway worker` picks them up within 0.5 s")
    return "\n".join(lines)


def _waits(doc: dict[str, Any]) -> str:
    return f"waits for {doc['after']}" if doc["status"] == "held" else ""


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return []
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in [header, *rows]]  # fmt: skip


def timestamp(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def short(text: str, chars: int = ERROR_CHARS) -> str:
    """`text` on one line, cut to `chars` with an ellipsis."""
    line = " ".join(text.split())
    return line if len(line) <= chars else line[: chars - 1] + "…"
