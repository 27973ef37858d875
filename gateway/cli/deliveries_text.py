"""The deliveries service's documents as text tables, for `gateway deliveries` and `gateway replay`."""

from __future__ import annotations

from typing import Any

from gateway.clock import utc_text
from gateway.delivery.dead_letters import ReplayOutcome
from gateway.delivery.next_state import waiting_for_quota
from gateway.errors import plural

ERROR_CHARS = 60


def format_deliveries(listed: dict[str, Any]) -> str:
    documents = listed["deliveries"]
    rows = [
        [
            doc["id"], doc["status"], f"{doc['attempts']}/{doc['max_attempts']}", doc["route"], doc["destination"],
            timestamp(doc["created_at_ms"]), short(_waiting(doc) or doc["last_error"] or _waits(doc)),
        ]
        for doc in documents
    ]
    lines = table(["ID", "STATUS", "ATTEMPTS", "ROUTE", "DESTINATION", "CREATED", "LAST ERROR"], rows)
    more = "; the limit was reached, narrow the filters or raise --limit" if listed["count"] >= listed["limit"] else ""
    count = plural(len(documents), "delivery", "deliveries")
    waiting = [f"destination {pause['destination']}: {pause['text']}" for pause in listed["waiting_for_quota"]]
    return "\n".join([*lines, count + more, *waiting])


def format_delivery(doc: dict[str, Any]) -> str:
    lines = [
        f"delivery {doc['id']} ({doc['status']}, {doc['attempts']}/{doc['max_attempts']} attempts)",
        f"  event: {doc['event_id']}   route: {doc['route']}   destination: {doc['destination']}",
        f"  created: {timestamp(doc['created_at_ms'])}   updated: {timestamp(doc['updated_at_ms'])}",
    ]
    if doc["step"] or doc["after"]:
        step = f"step {doc['step']}" if doc["step"] else "a chained request"
        lines.append(f"  {step}" + (f", runs after {doc['after']}" if doc["after"] else ""))
    if _waiting(doc):
        lines.append(f"  {_waiting(doc)} (the destination's quota is spent; waiting costs no attempt)")
    if doc["last_error"]:
        lines.append(f"  last error: {doc['last_error']}")
    request = doc["request"]
    if request is None:
        lines.append(f"  request: none ({_waits(doc) or 'rendering failed'})")
    else:
        lines.append(f"  request: {request['method']} {request['url']}")
        lines.extend(f"    {name}: {value}" for name, value in request["headers"].items())
        lines.extend(f"    {line}" for line in request["body"].splitlines())
    return "\n".join([*lines, "attempts:", *attempt_lines(doc.get("attempt_log", []))])


def attempt_lines(attempt_log: list[dict[str, Any]]) -> list[str]:
    """Each attempt with its error and the answer's start in full; a replay starts counting at 1 again, so an
    attempt whose number does not go up is marked as coming after a replay."""
    lines = []
    replays, previous = 0, 0
    for attempt in attempt_log:
        if attempt["number"] <= previous:
            replays += 1
        previous = attempt["number"]
        after = "" if not replays else " after replay" + (f" {replays}" if replays > 1 else "")
        answered = f"answered {attempt['status_code']}" if attempt["status_code"] is not None else "no answer"
        lines.append(f"  #{attempt['number']}{after}  {timestamp(attempt['started_at_ms'])}  "
                     f"{attempt['elapsed_ms']:.0f} ms  {answered}")
        for label, text in (("error", attempt["error"]), ("answer", attempt["response_excerpt"])):
            if text:
                first, *rest = text.splitlines() or [""]
                lines.append(f"      {label}: {first}")
                lines.extend(f"        {line}" for line in rest)
    return lines or ["  none yet"]


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
def _waiting(doc: dict[str, Any]) -> str | None:
    until_ms = doc["waiting_for_quota_until_ms"]
    return waiting_for_quota(until_ms) if until_ms is not None else None


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return []
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in [header, *rows]]  # fmt: skip


def timestamp(at_ms: int) -> str:
    return utc_text(at_ms)


def short(text: str, chars: int = ERROR_CHARS) -> str:
    """`text` on one line, cut to `chars` with an ellipsis."""
    line = " ".join(text.split())
    return line if len(line) <= chars else line[: chars - 1] + "…"
