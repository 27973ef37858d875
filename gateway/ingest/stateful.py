"""Routing on state: for a source whose routes read `changes` or have once_per.

Read the conversation's state and the once_per windows, route on them (`gateway.ingest.rendering`), and store the
event with the new state only if nothing changed meanwhile; if something did (another event of the same
conversation, on this replica or another), read and route again. So of two events of one conversation
arriving together, one is routed on the state the other left, and a duplicate changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from gateway.errors import StoreUnavailable
from gateway.ingest.rendering import quick_or_in_a_thread
from gateway.model import IngestResult, NewDelivery, NewEvent, StateWrite
from gateway.routing.compiled import LoadedConfig
from gateway.routing.conversation import changes_of, conversation_facts, next_state, state_keys
from gateway.routing.plan import PlanState, RouteVerdict, once_keys, plan, to_deliveries, windows_opened
from gateway.store.base import Store

MAX_ROUNDS = 20


@dataclass(frozen=True)
class Routed:
    result: IngestResult
    verdicts: list[RouteVerdict]
    deliveries: list[NewDelivery]


async def route_and_store(
    config: LoadedConfig, store: Store, event: NewEvent, payload: Any, meta: dict[str, Any],
    dedupe_window_ms: int,
) -> Routed:  # fmt: skip
    routes = config.routes_for(event.source)
    facts = conversation_facts(payload)
    keys, _ = await quick_or_in_a_thread(once_keys, routes, payload, event.body, meta)
    remembered = config.state_of(event.source).conversations
    needed = state_keys(event.source, facts, remembered, keys)
    now_ms = event.received_at_ms
    for _ in range(MAX_ROUNDS):
        seen = await store.read_state(needed, now_ms)
        changes = changes_of(seen.conversation, facts) if remembered else None
        state = PlanState(changes, keys, seen.once_until_ms)
        verdicts = await quick_or_in_a_thread(plan, routes, payload, event.body, meta, state=state)
        deliveries = to_deliveries(verdicts, now_ms)
        conversation = next_state(seen.conversation, facts, now_ms) if needed.conversation else None
        write = StateWrite(needed, seen, conversation, windows_opened(routes, verdicts, keys, now_ms))
        kept = replace(event, changes=json.dumps(changes) if changes is not None else None)
        result = await store.ingest(kept, deliveries, dedupe_window_ms, write)
        if not result.conflict:
            return Routed(result, verdicts, deliveries)
    raise StoreUnavailable(
        f"the state of conversation {facts.id} changed {MAX_ROUNDS} times while event {event.id} was routed"
    )
