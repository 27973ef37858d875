"""Signed ingest throughput: the full gateway path against a bare aiohttp handler, same run.

Each server runs pinned to core 0 and wrk to core 1 (when taskset exists), 32 connections,
POSTing signed ~3 KB Missive payloads (500 distinct events of one team, in turn). "gateway
ingest" verifies the signature, parses, dedupes, matches two routes, renders three requests,
logs the event and commits it and its deliveries durably before each 200 (its worker is off:
this measures ingest alone). Each row also gives its CPU time per request (all threads), its
p50 on one connection, and the store file's size per event once the server has stopped.
"gateway, 1 route" does the least a durable gateway does: one field rule, one small
request, logging at warning. "changes + once_per" routes on conversation state (read before
routing, written back with the event if unchanged), unsigned, over 1,000 conversations; "same
routes, no state" is its twin without them.

    .venv/bin/python bench/ingest.py [--seconds 10] [--connections 32]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

from common import PYTHON, ROOT, WrkResult, cpu_s, free_port, pinned, running, varied_bodies, wrk, wrk_post_many_script

from gateway.ingest.signature import sign

SECRET = "bench-secret"
DISTINCT_BODIES = 500  # one team's incoming mail, each event its own (see common.varied_bodies)
CONFIG = """\
storage: {path: gateway.db}
sources:
  missive:
    secrets: ["bench-secret"]
    dedupe_window: 0s        # wrk cycles through 500 bodies; every request must be routed and stored
destinations:
  slack: {type: slack, url: "http://127.0.0.1:9/slack", rate_limit: 1/s}
  crm: {url: "http://127.0.0.1:9/crm", headers: {Authorization: "Bearer bench-token"}}
routes:
  - name: vip
    when:
      all:
        - {path: $.rule.type, in: [incoming_email, label_change]}
        - {path: "$.conversation.shared_labels[*].name", equals: VIP}
        - not: {path: $.message.from_field.address, matches: '@support\\.example\\.com$'}
    send:
      - to: slack
        body: {text: "VIP mail from {{ message.from_field.name }}: {{ conversation.latest_message_subject }}"}
  - name: crm-note
    when: {path: $.rule.type, equals: incoming_email}
    send:
      - to: crm
        body:
          email: "{{ message.from_field.address }}"
          preview: "{{ message.preview }}"
          at: "{{ message.delivered_at | datetime }}"
          labels: "{{ conversation.shared_labels | map(attribute='name') | list }}"
      - to: slack
        body: {text: "{{ conversation.web_url }}"}
"""


# The least a durable gateway does: signature, parse, one field rule, one small rendered request, commit.
MINIMAL_CONFIG = """\
storage: {path: minimal.db}
sources:
  missive: {secrets: ["bench-secret"], dedupe_window: 0s}
destinations:
  crm: {url: "http://127.0.0.1:9/crm"}
routes:
  - name: incoming
    when: {path: $.rule.type, equals: incoming_email}
    send: [{to: crm, body: {id: "{{ conversation.id }}"}}]
"""


# Conversation state: routes that read `changes` and a once_per route, so every event reads its conversation's
# state and writes it back (a conditional write). Unsigned (wrk cannot sign a body it varies) and over 1,000
# conversations, each request naming the next one; "same routes, no state" is the twin without `changes` and
# once_per, for the ratio.
CONVERSATIONS_CONFIG = """\
storage: {path: conversations.db}
sources:
  missive: {dedupe_window: 0s}
destinations:
  slack: {type: slack, url: "http://127.0.0.1:9/slack"}
routes:
  - name: urgent-added
    when: {path: "$.changes.labels_added[*]", equals: Urgent}
    send: [{to: slack, body: {text: "Urgent: {{ conversation.subject }} ({{ changes.labels_added | join(', ') }})"}}]
  - name: once-per-conversation
    once_per: {key: "{{ conversation.id }}", window: 30m}
    send: [{to: slack, body: {text: "{{ conversation.id }}"}}]
"""
NO_STATE_CONFIG = (
    CONVERSATIONS_CONFIG.replace("conversations.db", "no-state.db")
    .replace('"$.changes.labels_added[*]"', '"$.conversation.shared_labels[*].name"')
    .replace("({{ changes.labels_added | join(', ') }})", "")
    .replace('    once_per: {key: "{{ conversation.id }}", window: 30m}\n', "")
)
CONVERSATIONS = 1000


def conversations_script(path: Path, body: bytes) -> Path:
    """A wrk Lua script that POSTs `body` unsigned, its conversation id replaced by the next of CONVERSATIONS."""
    payload = json.loads(body)
    payload["conversation"]["id"] = "CONVERSATION"
    template = json.dumps(payload).replace("\\", "\\\\").replace('"', '\\"')
    path.write_text(
        f'local template, n = "{template}", 0\n'
        "request = function()\n"
        "  n = n + 1\n"
        f'  local body = template:gsub("CONVERSATION", "conv-" .. (n % {CONVERSATIONS}))\n'
        '  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)\n'
        "end\n"
    )
    return path


@dataclass(frozen=True)
class Row:
    load: WrkResult
    one_connection: WrkResult
    cpu_us_per_request: float
    stored_bytes_per_event: float


def measure(command: list[str], url: str, lua: Path, seconds: int, connections: int, db: Path | None) -> Row:
    port = url.split(":")[2].split("/")[0]
    with running(pinned(0, [*command, port]), f"http://127.0.0.1:{port}/healthz") as server:
        wrk(url, lua, 2, connections, core=1)  # warm-up
        cpu_before_s = cpu_s(server.pid)
        load = wrk(url, lua, seconds, connections, core=1)
        cpu_used_s = cpu_s(server.pid) - cpu_before_s
        one_connection = wrk(url, lua, max(2, seconds // 3), 1, core=1)
    return Row(load, one_connection, cpu_used_s / (load.requests_per_s * seconds) * 1e6, _bytes_per_event(db))


def _bytes_per_event(db: Path | None) -> float:
    """The store file's size per stored event, after the server has stopped (and checkpointed its WAL)."""
    if db is None or not db.exists():
        return float("nan")
    with contextlib.closing(sqlite3.connect(db)) as conn:
        (events,) = conn.execute("SELECT count(*) FROM events").fetchone()
    size = sum(path.stat().st_size for path in db.parent.glob(db.name + "*"))
    return size / events if events else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    bodies = varied_bodies(DISTINCT_BODIES)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "config.yaml").write_text(CONFIG)
        (work / "minimal.yaml").write_text(MINIMAL_CONFIG)
        (work / "conversations.yaml").write_text(CONVERSATIONS_CONFIG)
        (work / "no-state.yaml").write_text(NO_STATE_CONFIG)
        signatures = [sign(SECRET.encode(), body) for body in bodies]
        lua = wrk_post_many_script(work / "post.lua", bodies, signatures, {"Content-Type": "application/json"})
        varied = conversations_script(work / "conversations.lua", bodies[0])
        gateway = [PYTHON, "-m", "gateway", "serve", "--no-worker"]
        quiet = ["--log-level", "warning", "--port"]
        setups: dict[str, tuple[list[str], Path | None, Path]] = {
            "bare aiohttp handler": ([PYTHON, str(ROOT / "bench" / "bare_server.py")], None, lua),
            "gateway, 1 route": ([*gateway, "-c", str(work / "minimal.yaml"), *quiet], work / "minimal.db", lua),
            "gateway ingest": ([*gateway, "-c", str(work / "config.yaml"), "--port"], work / "gateway.db", lua),
            "same routes, no state": ([*gateway, "-c", str(work / "no-state.yaml"), *quiet], work / "no-state.db",
                                      varied),
            "changes + once_per": ([*gateway, "-c", str(work / "conversations.yaml"), *quiet],
                                   work / "conversations.db", varied),
        }  # fmt: skip
        rows = {
            name: measure(command, f"http://127.0.0.1:{free_port()}/hooks/missive", script, args.seconds,
                          args.connections, db)
            for name, (command, db, script) in setups.items()
        }
    base = rows["bare aiohttp handler"].load.requests_per_s
    print(f"{'server':<24}{'req/s':>9}{'ratio':>7}{'p50 ms':>8}{'p99 ms':>8}{'non-2xx':>8}"
          f"{'1 conn p50':>11}{'CPU us/req':>11}{'bytes/event':>12}")
    for name, row in rows.items():
        print(f"{name:<24}{row.load.requests_per_s:>9.0f}{row.load.requests_per_s / base:>7.2f}"
              f"{row.load.p50_ms:>8.2f}{row.load.p99_ms:>8.2f}{row.load.non_2xx:>8}"
              f"{row.one_connection.p50_ms:>11.2f}{row.cpu_us_per_request:>11.0f}{row.stored_bytes_per_event:>12.0f}")


if __name__ == "__main__":
    main()
