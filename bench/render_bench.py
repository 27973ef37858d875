"""Routing and rendering one event, in process: µs per call for each compiled request of the
ingest benchmark's config (bench/ingest.py CONFIG: 2 routes, 3 rendered requests) and for the
whole plan + to_deliveries step that ingest runs per event.

Each figure is the best of `--repeats` timings of `--number` calls, so a busy machine
inflates it less; compare figures from one run.

    .venv/bin/python bench/render_bench.py [--number 2000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import timeit
from collections.abc import Callable
from functools import partial
from pathlib import Path

from common import FIXTURES
from ingest import CONFIG

from gateway.routing.compiled import LoadedConfig, load_config
from gateway.routing.plan import new_id, plan, to_deliveries
from gateway.routing.templates import template_context

BODY = (FIXTURES / "incoming-email-with-labels.json").read_bytes()
PAYLOAD = json.loads(BODY)
EVENT = {"id": new_id("evt", 0), "source": "missive", "received_at": 1717402005.5}


def best_us(call: Callable[[], object], number: int, repeats: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=repeats)) / number * 1e6


def cases(loaded: LoadedConfig) -> dict[str, Callable[[], object]]:
    context = template_context(PAYLOAD, EVENT, BODY)
    found: dict[str, Callable[[], object]] = {}
    for route in loaded.routes:
        for index, send in enumerate(route.sends):
            found[f"render {route.name}[{index}] -> {send.destination}"] = partial(send.template.render, context)
    routes = loaded.routes_for("missive")
    found["plan + to_deliveries (one event)"] = lambda: to_deliveries(plan(routes, PAYLOAD, BODY, EVENT), 0)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(CONFIG)
        loaded = load_config(config)
    for name, call in cases(loaded).items():
        print(f"{name:<40}{best_us(call, args.number, args.repeats):>8.1f} µs")


if __name__ == "__main__":
    main()
