"""What one group commit costs the SQLite store, alone and beside CPU-bound processes.

Writes batches of `--batch` events (an event row and three delivery rows each, through the store's
own INSERT statements, with blobs of the sizes the realistic ingest row stores compressed, and 500
distinct dedupe keys, conversations and senders in turn) into a fresh store file until `--events`
are stored, timing the inserts and the COMMIT of each batch (`synchronous=FULL`, WAL, checkpoints
every 1,000 pages as in the gateway). With `--busy N`, N processes spin on the CPU meanwhile: on a
2-core machine, what the writer of a gateway process meets when its event loop, another process and
the load generator all want the cores.

    .venv/bin/python bench/sqlite_commit.py [--batch 14] [--events 40000] [--busy 0,2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.store import sqlite_queue
from gateway.store.sqlite_schema import open_writer_connection

DISTINCT = 500
AT_MS = 1_780_000_000_000


def rows(n: int, keys: list[str], conversations: list[str]) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    """Event `n` and its three deliveries, as `sqlite_queue.ingest` writes them (blobs of the compressed sizes)."""
    k, at_ms = n % DISTINCT, AT_MS + n
    event = (f"evt_{n:016d}", "missive", keys[k], at_ms, os.urandom(270), conversations[k], "Refund for order",
             f"customer{k}@example.org", "incoming_email", None)  # fmt: skip
    deliveries = [(f"dlv_{n:016d}{j}", event[0], "crm-note", "crm", "pending", 0, 8, at_ms, at_ms, at_ms, "POST",
                   "http://127.0.0.1:9/crm", os.urandom(60), os.urandom(150), 0, None, None, None, None, None, None, 0)
                  for j in range(3)]  # fmt: skip
    return event, deliveries


def spin() -> None:
    while True:
        pass


def measure(batch: int, events: int) -> tuple[list[float], list[float]]:
    """The inserts' and the COMMIT's time of each batch, in ms (the first 50 batches left out: a warm-up)."""
    rng = random.Random(7)
    keys = [f"{rng.getrandbits(64):016x}" for _ in range(DISTINCT)]
    conversations = [f"{rng.getrandbits(128):032x}" for _ in range(DISTINCT)]
    inserts: list[float] = []
    commits: list[float] = []
    with tempfile.TemporaryDirectory() as directory:
        conn, lock = open_writer_connection(Path(directory) / "commit.db")
        try:
            for first in range(0, events, batch):
                made = [rows(n, keys, conversations) for n in range(first, first + batch)]
                started = time.perf_counter()
                conn.execute("BEGIN IMMEDIATE")
                for event, deliveries in made:
                    conn.execute(sqlite_queue._INSERT_EVENT, event)
                    conn.executemany(sqlite_queue._INSERT_DELIVERY, deliveries)
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
