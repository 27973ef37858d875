"""Freeing chained deliveries when the step they run after ends (see `gateway.routing.chain`).

A step delivered: each delivery that runs directly after it (and is not pending) is rendered from its
snapshot, with the step's answer added to the steps it saw, and released pending; a template that fails
on the answer releases it dead with the error. A step dead: every held delivery after it, directly
or not, is released dead with "step <id> failed". The store applies these with the step's outcome.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from gateway.delivery.send import Response
from gateway.errors import PayloadError, RenderError
from gateway.mask import Masker
from gateway.model import AttemptResult, Delivery, DeliveryFilter, DeliveryStatus, Release
from gateway.routing.chain import StepAnswer, step_view
from gateway.routing.payload import parse_payload
from gateway.routing.plan import render_chained
from gateway.store.base import Store

# Deliveries one event may have, all routes together; far more than any config makes.
_FAMILY_LIMIT = 10_000


async def releases(
    store: Store,
    delivery: Delivery,
    result: AttemptResult,
    answer: Response | None,
    masker: Masker,
    hide: Callable[[str], str],
) -> tuple[Release, ...]:
    """What `result` (an attempt of step `delivery`) frees; `hide` masks run-time secrets in the answer kept."""
    if result.status is DeliveryStatus.PENDING:
        return ()
    family = await store.list_deliveries(DeliveryFilter(event_id=delivery.event_id, limit=_FAMILY_LIMIT))
    if result.status is DeliveryStatus.DEAD or answer is None:
        return _failed(delivery, family)
    after = [(d, d.template) for d in family
             if d.after == delivery.id and d.status is not DeliveryStatus.PENDING and d.template is not None]
    if not after:
        return ()
    seen: dict[str, Any] = json.loads(delivery.steps) if delivery.steps else {}
    answered = StepAnswer(answer.status, answer.headers, answer.content, answer.truncated)
    steps = {**seen, str(delivery.step): step_view(answered, masker, hide)}
    kept = json.dumps(steps, ensure_ascii=False).encode()
    event = await store.get_event(delivery.event_id)
    try:
        if event is None:
            raise RenderError(f"its event {delivery.event_id} is no longer stored")
        payload = parse_payload(event.body)
    except (RenderError, PayloadError) as exc:
        return tuple(Release(d.id, None, str(exc), kept) for d, _ in after)
    released = []
    for dependent, template in after:
        try:
            # Off the event loop, as ingest renders: a template may take up to its render budget.
            request = await asyncio.to_thread(render_chained, template, dependent.route, payload, event, steps)
        except RenderError as exc:
            released.append(Release(dependent.id, None, str(exc), kept))
        else:
            released.append(Release(dependent.id, request, None, kept))
    return tuple(released)


def _failed(step: Delivery, family: list[Delivery]) -> tuple[Release, ...]:
    """Every held delivery after `step`, directly or not, dead: each names the step it ran after."""
    released: list[Release] = []
    ended = [step]
    while ended:
        before = ended.pop()
        for dependent in family:
            if dependent.after == before.id and dependent.status is DeliveryStatus.HELD:
                released.append(Release(dependent.id, None, f"step {before.step} failed"))
                ended.append(dependent)
    return tuple(released)
