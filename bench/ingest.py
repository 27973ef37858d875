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
routes, no state" is its twin without them. "gateway ingest, N stored" is "gateway ingest" on a
store already holding `--stored` events (written through the same accept path first): ingest
must not slow down as the store grows. The "processes" rows run `serve --processes 1`,
`--processes 2` (each process pinned to a core of its own, as it is by default) and
`--processes 2 --no-pin` with the realistic config; the bench pins nothing there: the
processes and wrk share both cores. Idle RSS is the largest gateway process's, before any
load. With `--rounds N` every row runs N times, the rows taking turns, each run on a fresh
copy of its store: the table shows each figure's median, and each ratio is given round by
round with its median (their spread is the noise a single run hides). With `--node-red`
(its `red.js`, from `npm install node-red`), a row for Node-RED running
`bench/nodered_flow.json`: http in, a function computing and comparing the HMAC (over the
re-serialised payload: http in parses the body), a switch on the rule type, and the
response; it stores nothing.

    .venv/bin/python bench/ingest.py [--seconds 10] [--connections 32] [--stored 100000] [--node-red red.js]
                                     [--only process,ingest] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common import (
    PYTHON,
    ROOT,
    WrkResult,
    cpu_s,
    free_port,
    largest_rss_mb,
    pinned,
    running,
    varied_bodies,
    wrk,
    wrk_post_many_script,
)

from gateway.ingest.accept import accept
from gateway.ingest.signature import sign
from gateway.routing.compiled import load_config
from gateway.store.factory import make_store

SECRET = "bench-secret"
NODE_RED_FLOW = ROOT / "bench" / "nodered_flow.json"
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
    idle_rss_mb: float


@dataclass(frozen=True)
class Setup:
    command: list[str]
    db: Path | None
    lua: Path
    core: int | None = 0  # the server's core, and wrk on the other; None: neither pinned
    health: str = "/healthz"
    seed: Path | None = None  # the store file each run starts from; None: an empty store

    def reset_store(self) -> None:
        """Remove what an earlier run stored (the file, its WAL and lock files), then copy the seed in."""
        if self.db is None:
            return
        for path in self.db.parent.glob(self.db.name + "*"):
            path.unlink()
        if self.seed is not None:
            shutil.copyfile(self.seed, self.db)
            with self.db.open("rb+") as copy:  # written back now, not by the kernel during the run
                os.fsync(copy.fileno())


def measure(setup: Setup, url: str, seconds: int, connections: int) -> Row:
    port = url.split(":")[2].split("/")[0]
    wrk_core = None if setup.core is None else 1 - setup.core
    setup.reset_store()
    with running(pinned(setup.core, [*setup.command, port]), f"http://127.0.0.1:{port}{setup.health}") as server:
        idle_rss_mb = largest_rss_mb(server.pid)
        wrk(url, setup.lua, 2, connections, core=wrk_core)  # warm-up
        cpu_before_s = cpu_s(server.pid)
        load = wrk(url, setup.lua, seconds, connections, core=wrk_core)
        cpu_used_s = cpu_s(server.pid) - cpu_before_s
        one_connection = wrk(url, setup.lua, max(2, seconds // 3), 1, core=wrk_core)
    cpu_us = cpu_used_s / (load.requests_per_s * seconds) * 1e6
    return Row(load, one_connection, cpu_us, _bytes_per_event(setup.db), idle_rss_mb)


async def fill(config: Path, bodies: list[bytes], signatures: list[str], count: int) -> None:
    """Store `count` events through the ingest path (routing, rendering, commit), as if received over the last
    `count` seconds, 256 at a time so that they commit in groups."""
    loaded = load_config(config)
    store = make_store(loaded.config.storage, config.parent)
    await store.open()
    try:
        start_ms = int(time.time() * 1000) - count * 1000
        for first in range(0, count, 256):
            await asyncio.gather(*(
                accept(loaded, store, "missive", bodies[n % len(bodies)], signatures[n % len(bodies)],
                       start_ms + n * 1000)
                for n in range(first, min(first + 256, count))
            ))  # fmt: skip
    finally:
        await store.close()


def keep_as_seed(db: Path, seed: Path) -> None:
    """Move the store `db` to `seed`, in one file (its WAL checkpointed into it)."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.rename(seed)
    for path in db.parent.glob(db.name + "*"):
        path.unlink()


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
    parser.add_argument("--stored", type=int, default=100_000, help="events in the store of the 'stored' row")
    parser.add_argument("--node-red", type=Path, help="Node-RED's red.js, for a row of its own")
    parser.add_argument("--only", default="", help="comma-separated words: run just the rows whose name holds one "
                        "(and the bare handler, the baseline), e.g. --only process")
    parser.add_argument("--rounds", type=int, default=1, help="run every row this many times, the rows taking turns")
    args = parser.parse_args()
    wanted = [word for word in args.only.split(",") if word]
    bodies = varied_bodies(DISTINCT_BODIES)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "config.yaml").write_text(CONFIG)
        (work / "grown.yaml").write_text(CONFIG.replace("gateway.db", "grown.db"))
        (work / "processes.yaml").write_text(CONFIG.replace("gateway.db", "processes.db"))
        (work / "minimal.yaml").write_text(MINIMAL_CONFIG)
        (work / "conversations.yaml").write_text(CONVERSATIONS_CONFIG)
        (work / "no-state.yaml").write_text(NO_STATE_CONFIG)
        signatures = [sign(SECRET.encode(), body) for body in bodies]
        lua = wrk_post_many_script(work / "post.lua", bodies, signatures, {"Content-Type": "application/json"})
        varied = conversations_script(work / "conversations.lua", bodies[0])
        gateway = [PYTHON, "-m", "gateway", "serve", "--no-worker"]
        quiet = ["--log-level", "warning", "--port"]
        realistic = [*gateway, "-c", str(work / "processes.yaml"), "--processes"]
        grown = work / "grown.db"
        setups = {
            "bare aiohttp handler": Setup([PYTHON, str(ROOT / "bench" / "bare_server.py")], None, lua),
            **({"Node-RED (stores nothing)": Setup(
                ["node", str(args.node_red), "--userDir", str(work / "node-red"), str(NODE_RED_FLOW), "--port"], None,
                lua, health="/")} if args.node_red else {}),
            "gateway, 1 route": Setup([*gateway, "-c", str(work / "minimal.yaml"), *quiet], work / "minimal.db", lua),
            "gateway ingest": Setup([*gateway, "-c", str(work / "config.yaml"), "--port"], work / "gateway.db", lua),
            f"gateway ingest, {args.stored // 1000}k stored": Setup(
                [*gateway, "-c", str(work / "grown.yaml"), "--port"], grown, lua, seed=work / "grown-seed.db"),
            "same routes, no state": Setup([*gateway, "-c", str(work / "no-state.yaml"), *quiet],
                                           work / "no-state.db", varied),
            "changes + once_per": Setup([*gateway, "-c", str(work / "conversations.yaml"), *quiet],
                                        work / "conversations.db", varied),
            "ingest, 1 process*": Setup([*realistic, "1", "--port"], work / "processes.db", lua, core=None),
            "ingest, 2 processes*": Setup([*realistic, "2", "--port"], work / "processes.db", lua, core=None),
            "ingest, 2 processes, no pin*": Setup([*realistic, "2", "--no-pin", "--port"], work / "processes.db", lua,
                                                  core=None),
        }  # fmt: skip
        chosen = {name: setup for name, setup in setups.items()
                  if name == "bare aiohttp handler" or not wanted or any(word in name for word in wanted)}  # fmt: skip
        if any(setup.db == grown for setup in chosen.values()):
            asyncio.run(fill(work / "grown.yaml", bodies, signatures, args.stored))
            keep_as_seed(grown, work / "grown-seed.db")
        rounds: list[dict[str, Row]] = []
        for _ in range(args.rounds):
            rounds.append({
                name: measure(setup, f"http://127.0.0.1:{free_port()}/hooks/missive", args.seconds, args.connections)
                for name, setup in chosen.items()
            })  # fmt: skip
    report(rounds, args.stored)


def report(rounds: list[dict[str, Row]], stored: int) -> None:
    """The table (each figure the median of the rounds) and each ratio, round by round."""

    def ratios(numerator: str, denominator: str) -> list[float]:
        return [measured[numerator].load.requests_per_s / measured[denominator].load.requests_per_s
                for measured in rounds]  # fmt: skip

    columns: list[tuple[str, int, str, Callable[[Row], float]]] = [  # heading, width, format, figure
        ("req/s", 8, ".0f", lambda row: row.load.requests_per_s),
        ("p50 ms", 8, ".2f", lambda row: row.load.p50_ms),
        ("p99 ms", 8, ".2f", lambda row: row.load.p99_ms),
        ("non-2xx", 8, ".0f", lambda row: row.load.non_2xx),
        ("1 conn p50", 11, ".2f", lambda row: row.one_connection.p50_ms),
        ("CPU us/req", 11, ".0f", lambda row: row.cpu_us_per_request),
        ("bytes/event", 12, ".0f", lambda row: row.stored_bytes_per_event),
        ("idle MB", 8, ".0f", lambda row: row.idle_rss_mb),
    ]
    print(f"{'server':<28}{'ratio':>7}" + "".join(f"{heading:>{width}}" for heading, width, _, _ in columns))
    for name in rounds[0]:
        figures = [statistics.median(figure(measured[name]) for measured in rounds) for *_, figure in columns]
        ratio = statistics.median(ratios(name, "bare aiohttp handler"))
        print(f"{name:<28}{ratio:>7.2f}" + "".join(
            f"{value:>{width}{form}}" for value, (_, width, form, _) in zip(figures, columns, strict=True)))
    print("* not pinned by the bench: the processes and wrk share both cores (`--processes 2` pins each of its "
          "processes to a core of its own, unless --no-pin)")
    if len(rounds) > 1:
        print(f"each figure and ratio: the median of {len(rounds)} rounds")
    for label, numerator, denominator in [
        (f"{stored:,} events stored / empty store", f"gateway ingest, {stored // 1000}k stored", "gateway ingest"),
        ("2 processes / 1 process", "ingest, 2 processes*", "ingest, 1 process*"),
        ("2 processes, not pinned / 1 process", "ingest, 2 processes, no pin*", "ingest, 1 process*"),
    ]:
        if numerator in rounds[0] and denominator in rounds[0]:
            each = ratios(numerator, denominator)
            rounds_text = f" (round by round: {', '.join(f'{ratio:.2f}' for ratio in each)})" if len(each) > 1 else ""
            print(f"{label}: {statistics.median(each):.2f}x{rounds_text}")

if __name__ == "__main__":
    main()
