"""Where ingest routes and renders: on the event loop while that is quick, in a thread once it proves slow.

A route's conditions and templates almost always take tens of microseconds, less than handing them to a
thread and back would cost. But a template may spin up to `server.render_timeout` (a loop over a long
payload list), and the event loop must keep answering health checks and other webhooks meanwhile. So a
plan is first tried on the loop inside a short time slice; if it is not done by then, it is run again,
whole, in a pool of threads, where it may take its full budget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from gateway.routing.sandbox import SliceSpent, time_slice

T = TypeVar("T")

LOOP_SLICE_S = 0.02
# Several threads, so that one slow render does not hold up the others.
_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="gateway-render")


async def quick_or_in_a_thread(work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`work(*args, **kwargs)`, which must have no side effects: it may be started twice."""
    try:
        with time_slice(LOOP_SLICE_S):
            return work(*args, **kwargs)
    except SliceSpent:
        return await asyncio.get_running_loop().run_in_executor(_POOL, partial(work, *args, **kwargs))
