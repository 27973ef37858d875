"""Request chains end to end: ingest a real event, deliver against a fake CRM, on SQLite and on Redis."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.clock import FakeClock
from gateway.delivery.dead_letters import ReplayOutcome, replay
from gateway.delivery.send import make_session
from gateway.delivery.worker import Worker
from gateway.ingest.accept import accept
from gateway.model import Delivery, DeliveryFilter, DeliveryStatus
from gateway.routing.compiled import LoadedConfig, load_config
from gateway.store.base import Store
from tests.conftest import fixture_bytes
from tests.delivery.conftest import START_MS
from tests.fakes import FakeApi, Reply, json_reply
from tests.store.conftest import BACKENDS, store_factory

CRM_TOKEN = "crm-token-secret-1234"
CONFIG = """\
sources: {{missive: {{}}}}
destinations:
  crm: {{url: "{crm}/contacts", token: "{token}", retry: {{attempts: 2, backoff: 1s}}}}
routes:
  - name: vip
    send:
      - to: crm
        id: contact
        body: {{email: "{{{{ message.from_field.address }}}}"}}
      - to: crm
        id: note
        after: contact
        url: "{crm}/contacts/{{{{ steps.contact.json.id }}}}/notes"
        headers: {{X-Contact-Location: "{{{{ steps.contact.headers.location }}}}"}}
        body: {{text: "{{{{ message.subject }}}}", contact: "{{{{ steps.contact.json.id }}}}"}}
      - to: crm
        after: note
        url: "{crm}/audit"
        body: {{note: "{{{{ steps.note.json.id }}}}", contact: "{{{{ steps.contact.json.id }}}}",
                echoed: "{{{{ steps.contact.json.echo | default('') }}}}"}}
"""
CONTACT = json_reply(201, {"id": "51", "echo": f"token {CRM_TOKEN}"}, {"Location": "/contacts/51"})
NOTE = json_reply(201, {"id": 9001})
NOTES, AUDIT = "/contacts/51/notes", "/audit"


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    opened = store_factory(request.param, tmp_path, request)()
    await opened.open()
    yield opened
    await opened.close()


@dataclass
class Chain:
    """The chained config against a fake CRM: ingest the email fixture, deliver, look at what happened."""

    config: LoadedConfig
    store: Store
    crm: FakeApi
    clock: FakeClock

    async def receive(self) -> str:
        body = fixture_bytes("incoming-email-with-labels.json")
        accepted = await accept(self.config, self.store, "missive", body, None, self.clock.now_ms())
        assert accepted.result is not None
        return accepted.result.event_id

    async def deliver(self) -> list[Delivery]:
        async with make_session() as session:
            worker = Worker(self.store, self.config.config.destinations, session, clock=self.clock,
                            rng=random.Random(1), masker=self.config.masker)
            await worker.drain()
        return in_chain_order(await self.store.list_deliveries(DeliveryFilter()))


@pytest.fixture
def chain(store: Store, write_config: Callable[[str], Path]) -> Callable[[FakeApi], Chain]:
    def make(crm: FakeApi) -> Chain:
        text = CONFIG.format(crm=crm.url("").rstrip("/"), token=CRM_TOKEN)
        return Chain(load_config(write_config(text), environ={}), store, crm, FakeClock(START_MS))

    return make


def in_chain_order(deliveries: list[Delivery]) -> list[Delivery]:
    """Each step before the ones that run after it (ids are random within a millisecond)."""
    by_id = {delivery.id: delivery for delivery in deliveries}

    def depth(delivery: Delivery) -> int:
        return 0 if delivery.after is None else 1 + depth(by_id[delivery.after])

    return sorted(deliveries, key=depth)


def sent(crm: FakeApi, path: str) -> list[Any]:
    return [json.loads(request.body) for request in crm.to(path)]


def statuses(deliveries: list[Delivery]) -> list[tuple[str | None, DeliveryStatus]]:
    return [(delivery.step, delivery.status) for delivery in deliveries]


async def test_each_step_is_rendered_from_the_answer_before_it(chain: Callable[[FakeApi], Chain]) -> None:
    async with FakeApi({"/contacts": [CONTACT], NOTES: [NOTE], AUDIT: [Reply(204)]}) as crm:
        gw = chain(crm)
        event_id = await gw.receive()
        held = await gw.store.list_deliveries(DeliveryFilter(status=DeliveryStatus.HELD))
        deliveries = await gw.deliver()

    assert len(held) == 2
    assert statuses(deliveries) == [("contact", DeliveryStatus.DELIVERED), ("note", DeliveryStatus.DELIVERED),
                                    (None, DeliveryStatus.DELIVERED)]
    assert sent(crm, NOTES) == [{"text": "Order HL-20931 arrived damaged", "contact": "51"}]
    [note] = crm.to(NOTES)
    assert note.headers["X-Contact-Location"] == "/contacts/51"
    assert note.headers["Authorization"] == f"Bearer {CRM_TOKEN}"
    assert note.headers["Idempotency-Key"] == f"{event_id}:vip:1"
    assert sent(crm, AUDIT) == [{"note": 9001, "contact": "51", "echoed": "token ***"}]  # the answer kept is masked
    audit = deliveries[2]
    assert audit.steps is not None and CRM_TOKEN.encode() not in audit.steps
    assert json.loads(audit.steps)["contact"]["json"] == {"id": "51", "echo": "token ***"}


async def test_a_dead_step_makes_the_rest_of_its_chain_dead(chain: Callable[[FakeApi], Chain]) -> None:
    refused = json_reply(400, {"message": "Property values were not valid"})
    async with FakeApi({"/contacts": [refused]}) as crm:
        gw = chain(crm)
        await gw.receive()
        deliveries = await gw.deliver()

    assert statuses(deliveries) == [("contact", DeliveryStatus.DEAD), ("note", DeliveryStatus.DEAD),
                                    (None, DeliveryStatus.DEAD)]
    assert [d.last_error for d in deliveries[1:]] == ["step contact failed", "step note failed"]
    assert [d.attempts for d in deliveries] == [1, 0, 0]
    assert crm.to(NOTES) == crm.to(AUDIT) == []


async def test_replaying_a_step_runs_the_requests_after_it_again(chain: Callable[[FakeApi], Chain]) -> None:
    down = Reply(503, "maintenance")
    async with FakeApi({"/contacts": [down, down, CONTACT], NOTES: [NOTE], AUDIT: [Reply(204)]}) as crm:
        gw = chain(crm)
        await gw.receive()
        contact, note, audit = await gw.deliver()
        assert statuses([contact, note, audit]) == [("contact", DeliveryStatus.DEAD), ("note", DeliveryStatus.DEAD),
                                                    (None, DeliveryStatus.DEAD)]

        dead = DeliveryFilter(status=DeliveryStatus.DEAD)
        reasons = {item.delivery.id: (item.outcome, item.reason)
                   for item in (await replay(gw.config, gw.store, dead, gw.clock.now_ms())).items}
        assert reasons[contact.id] == (ReplayOutcome.QUEUED, None)
        assert reasons[note.id] == (ReplayOutcome.SKIPPED, f"it runs after delivery {contact.id}: replay that one, "
                                    "and this one follows once it is delivered")
        assert statuses(await gw.deliver()) == [("contact", DeliveryStatus.DELIVERED),
                                                ("note", DeliveryStatus.DELIVERED), (None, DeliveryStatus.DELIVERED)]
        assert (len(crm.to(NOTES)), len(crm.to(AUDIT))) == (1, 1)

        await replay(gw.config, gw.store, DeliveryFilter(ids=(contact.id,)), gw.clock.now_ms())
        again = await gw.deliver()

    assert [d.status for d in again] == [DeliveryStatus.DELIVERED] * 3
    assert (len(crm.to("/contacts")), len(crm.to(NOTES)), len(crm.to(AUDIT))) == (4, 2, 2)
    assert [d.attempts for d in again] == [1, 1, 1]


async def test_a_template_that_fails_on_the_answer_is_fixed_by_a_rerender(
    chain: Callable[[FakeApi], Chain], write_config: Callable[[str], Path]
) -> None:
    no_id = json_reply(200, {"results": [{"id": "51"}]}, {"Location": "/contacts/51"})  # not the expected shape
    async with FakeApi({"/contacts": [no_id], NOTES: [NOTE], AUDIT: [Reply(204)]}) as crm:
        gw = chain(crm)
        await gw.receive()
        contact, note, audit = await gw.deliver()
        assert (note.status, audit.status) == (DeliveryStatus.DEAD, DeliveryStatus.HELD)
        assert note.last_error is not None and "'dict object' has no attribute 'id'" in note.last_error
        assert crm.to(NOTES) == []

        text = CONFIG.format(crm=crm.url("").rstrip("/"), token=CRM_TOKEN)
        fixed = load_config(write_config(text.replace("contact.json.id", "contact.json.results[0].id")), environ={})
        [item] = (await replay(fixed, gw.store, DeliveryFilter(ids=(note.id,)), gw.clock.now_ms(), rerender=True)).items
        assert item.outcome is ReplayOutcome.QUEUED, item.reason
        _, note, audit = await gw.deliver()
        assert sent(crm, NOTES) == [{"text": "Order HL-20931 arrived damaged", "contact": "51"}]
        # The request after the note renders from the snapshot taken at ingest, not from the fixed config.
        assert (note.status, audit.status) == (DeliveryStatus.DELIVERED, DeliveryStatus.DEAD)
        assert audit.last_error is not None and "has no attribute 'id'" in audit.last_error

        [item] = (await replay(fixed, gw.store, DeliveryFilter(ids=(audit.id,)), gw.clock.now_ms(), rerender=True)
                  ).items
        assert item.outcome is ReplayOutcome.QUEUED, item.reason
        assert statuses(await gw.deliver())[2] == (None, DeliveryStatus.DELIVERED)

    assert sent(crm, AUDIT) == [{"note": 9001, "contact": "51", "echoed": ""}]
