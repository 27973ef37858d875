"""Routing and rendering at ingest: on the event loop while quick, in a thread once slow, never a dead letter for it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.ingest.rendering import LOOP_SLICE_S, quick_or_in_a_thread
from gateway.routing.compiled import load_config
from gateway.routing.plan import RouteVerdict, plan

# A render that takes a few tenths of a second: far past the loop's slice, well within its own budget.
SLOW_BODY = "{% for i in range(100000) %}{% for j in range(4) %}{% endfor %}{% endfor %}done"
CONFIG = f"""\
server: {{render_timeout: 30s}}
sources: {{missive: {{}}}}
destinations: {{crm: {{url: "http://127.0.0.1:9/crm"}}}}
routes:
  - name: slow
    send: [{{to: crm, template: "{SLOW_BODY}"}}]
"""
EVENT = {"id": "evt_1", "source": "missive", "received_at": 1.0}


def in_thread_of(work: Callable[..., Any], threads: list[str]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return work(*args, **kwargs)

    return run


async def test_quick_work_runs_on_the_loop() -> None:
    threads: list[str] = []
    assert await quick_or_in_a_thread(in_thread_of(lambda: 42, threads)) == 42
    assert threads == [threading.current_thread().name]


async def test_slow_rendering_moves_to_a_thread_and_still_renders(write_config: Callable[[str], Path]) -> None:
    routes = load_config(write_config(CONFIG), environ={}).routes_for("missive")
    threads: list[str] = []
    verdicts: list[RouteVerdict] = await quick_or_in_a_thread(
        in_thread_of(plan, threads), routes, {"rule": {"type": "x"}}, b"{}", EVENT
    )
    ((send,),) = [verdict.sends for verdict in verdicts]
    assert send.error is None and send.request is not None and send.request.body == b"done"
    assert threads[0] == threading.current_thread().name, "tried on the loop first"
    assert threads[1].startswith("gateway-render"), f"finished in a thread, after {LOOP_SLICE_S} s: {threads}"
