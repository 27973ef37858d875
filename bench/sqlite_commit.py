"""What one group commit costs the SQLite store, alone and beside CPU-bound processes.

Writes batches of `--batch` events (the 500 distinct events of `bench/ingest.py` in turn, each with
three rendered requests, made into rows and compressed by the store's own `ingest_rows` before the
clock starts, and written by its `ingest`) into a fresh store file until `--events` are stored,
timing the inserts and the COMMIT of each batch (`synchronous=FULL`, WAL, checkpoints
every 1,000 pages as in the gateway). With `--busy N`, N processes spin on the CPU meanwhile: on a
2-core machine, what the writer of a gateway process meets when its event loop, another process and
the load generator all want the cores.

    .venv/bin/python bench/sqlite_commit.py [--batch 14] [--events 40000] [--busy 0,2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

from common import varied_bodies

from gateway.model import NewDelivery, NewEvent, RenderedRequest, event_facts
from gateway.store import sqlite_queue
from gateway.store.base import dedupe_key
from gateway.store.compression import Codec
from gateway.store.sqlite_schema import open_writer_connection

DISTINCT = 500
AT_MS = 1_780_000_000_000


def batches(batch: int, events: int) -> list[list[sqlite_queue.IngestRows]]:
    """`events` events in batches of `batch`, each event with three requests, as the rows `ingest` writes."""
    codec = Codec([], on_trained=lambda dictionary: None, lookup=lambda dictionary_id: None)
    bodies = varied_bodies(DISTINCT)
    made = []
    for n in range(events):
        body = bodies[n % DISTINCT]
        event = NewEvent(f"evt_{n:016d}", "missive", AT_MS + n, body, dedupe_key(body), event_facts(json.loads(body)))
        request = RenderedRequest("POST", "http://127.0.0.1:9/crm", {"Content-Type": "application/json"}, body[:600])
        deliveries = [NewDelivery(f"dlv_{n:016d}{j}", "crm-note", "crm", 8, request) for j in range(3)]
        made.append(sqlite_queue.ingest_rows(codec, event, deliveries, dedupe_window_ms=0, state=None))
    return [made[first : first + batch] for first in range(0, events, batch)]


def spin() -> None:
    while True:
        pass


def measure(batch: int, events: int) -> tuple[list[float], list[float]]:
    """The inserts' and the COMMIT's time of each batch, in ms (the first 50 batches left out: a warm-up)."""
    inserts: list[float] = []
    commits: list[float] = []
    with tempfile.TemporaryDirectory() as directory:
        conn, lock = open_writer_connection(Path(directory) / "commit.db")
        try:
            for rows in batches(batch, events):
                started = time.perf_counter()
                conn.execute("BEGIN IMMEDIATE")
                for event in rows:
                    sqlite_queue.ingest(conn, event)
                inserted = time.perf_counter()
                conn.execute("COMMIT")
                inserts.append((inserted - started) * 1000)
                commits.append((time.perf_counter() - inserted) * 1000)
        finally:
            conn.close()
            lock.close()
    return inserts[50:], commits[50:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=14, help="events a commit (14: two processes' batches)")
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--busy", default="0,2", help="comma-separated counts of CPU-bound processes beside it")
    args = parser.parse_args()
    print(f"{'busy':>5}{'inserts p50':>13}{'COMMIT p50':>12}{'COMMIT p90':>12}{'mean ms/batch':>15}")
    for busy in (int(count) for count in args.busy.split(",")):
        spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(busy)]
        for spinner in spinners:
            spinner.start()
        try:
            inserts, commits = measure(args.batch, args.events)
        finally:
            for spinner in spinners:
                spinner.terminate()
        mean = statistics.mean(insert + commit for insert, commit in zip(inserts, commits, strict=True))
        print(f"{busy:>5}{statistics.median(inserts):>13.2f}{statistics.median(commits):>12.2f}"
              f"{sorted(commits)[len(commits) * 9 // 10]:>12.2f}{mean:>15.2f}")


if __name__ == "__main__":
    main()
