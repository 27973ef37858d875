"""The CRM examples end to end, against fakes that answer as HubSpot, Pipedrive and Salesforce do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway.clock import FakeClock
from gateway.model import Delivery, DeliveryStatus
from gateway.store.sqlite import SqliteStore
from tests.examples.rig import START_MS, load_example, payload
from tests.fakes import Received, Reply
from tests.services.crm import HUBSPOT_NOTE_TO_CONTACT, HubSpotApi, PipedriveApi, SalesforceOrg

EMAIL = "incoming-email-with-labels.json"
PRIYA = "priya.natarajan@example.org"


def statuses(deliveries: list[Delivery]) -> list[tuple[str, DeliveryStatus]]:
    return [(delivery.destination, delivery.status) for delivery in deliveries]


def json_of(received: Received) -> Any:
    return json.loads(received.body)


def without_name_or_preview(document: dict[str, Any]) -> None:
    """The same sender writing again, from a client that sends no display name, with only an attachment."""
    document["message"]["from_field"]["name"] = None
    document["message"]["preview"] = None
    document["message"]["subject"] = "Photos of the damage"


# --- HubSpot -------------------------------------------------------------------------------------------------------


async def test_hubspot_upserts_the_contact_then_notes_on_it_and_never_clears_a_name(
    sqlite_store: SqliteStore, tmp_path: Path
) -> None:
    clock = FakeClock(START_MS)
    async with HubSpotApi(now_ms=clock.now_ms) as hubspot:
        example = load_example("hubspot", sqlite_store, tmp_path, clock, HUBSPOT_API=hubspot.url("").rstrip("/"),
                               HUBSPOT_TOKEN=hubspot.token)
        async with example:
            assert await example.receive(payload(EMAIL)) == 2
            first = await example.deliver()
            assert await example.receive(payload(EMAIL, without_name_or_preview)) == 2
            second = await example.deliver()

    assert statuses(first + second[2:]) == [("hubspot-contacts", DeliveryStatus.DELIVERED),
                                            ("hubspot-notes", DeliveryStatus.DELIVERED)] * 2
    contact = hubspot.contact(PRIYA)
    assert contact["properties"] == {"email": PRIYA, "firstname": "Priya", "lastname": "Natarajan"}
    assert hubspot.cleared == []  # the nameless second email sent no "" that would have wiped the name
    assert [note["contacts"] for note in hubspot.notes] == [[contact["id"]], [contact["id"]]]
    assert hubspot.notes[0]["properties"]["hs_timestamp"] == 1_717_401_195_000
    upserts = [json_of(r) for r in hubspot.received if r.path_qs.endswith("/batch/upsert")]
    assert upserts[1]["inputs"][0]["properties"] == {"email": PRIYA}
    notes = [json_of(r) for r in hubspot.received if r.path_qs == "/crm/v3/objects/notes"]
    assert notes[1]["associations"][0]["types"][0]["associationTypeId"] == HUBSPOT_NOTE_TO_CONTACT
    # The token is added when sent: the stored requests do not hold it.
    assert all(d.request is not None and "Authorization" not in d.request.headers for d in second)


async def test_hubspot_refusing_the_token_makes_the_note_dead_too(sqlite_store: SqliteStore, tmp_path: Path) -> None:
    clock = FakeClock(START_MS)
    async with HubSpotApi(now_ms=clock.now_ms) as hubspot:
        example = load_example("hubspot", sqlite_store, tmp_path, clock, HUBSPOT_API=hubspot.url("").rstrip("/"),
                               HUBSPOT_TOKEN="a-revoked-private-app-token")
        async with example:
            await example.receive(payload(EMAIL))
            contacts, note = await example.deliver()

    assert (contacts.status, contacts.attempts) == (DeliveryStatus.DEAD, 1)
    assert contacts.last_error is not None and contacts.last_error.startswith("HTTP 401: ")
    assert (note.status, note.last_error, note.attempts) == (DeliveryStatus.DEAD, "step contact failed", 0)
    assert [r.path_qs for r in hubspot.received] == ["/crm/v3/objects/contacts/batch/upsert"]


# --- Pipedrive -----------------------------------------------------------------------------------------------------


async def test_pipedrive_adds_the_person_then_a_note_on_it(sqlite_store: SqliteStore, tmp_path: Path) -> None:
    over_limit = Reply(429, '{"success": false, "error": "Request over limit", "errorCode": 429}',
                       {"Content-Type": "application/json", "x-ratelimit-reset": "2"})
    clock = FakeClock(START_MS)
    async with PipedriveApi(now_ms=clock.now_ms) as pipedrive:
        pipedrive.answer_next(over_limit)
        example = load_example("pipedrive", sqlite_store, tmp_path, clock, PIPEDRIVE_API=pipedrive.url("").rstrip("/"),
                               PIPEDRIVE_API_TOKEN=pipedrive.token)
        async with example:
            await example.receive(payload(EMAIL))
            person, note = await example.deliver()

    assert statuses([person, note]) == [("pipedrive-persons", DeliveryStatus.DELIVERED),
                                        ("pipedrive-notes", DeliveryStatus.DELIVERED)]
    assert [a.status_code for a in await sqlite_store.list_attempts(person.id)] == [429, 200]
    [added] = pipedrive.persons.values()
    assert added["emails"] == [{"value": PRIYA, "primary": True, "label": "work"}]
    [noted] = pipedrive.notes
    assert noted["person_id"] == added["id"]
    assert noted["content"].startswith("<b>Order HL-20931 arrived damaged</b><br>")
    assert all(r.headers["x-api-token"] == pipedrive.token and "token" not in r.path_qs for r in pipedrive.received)


# --- Salesforce ----------------------------------------------------------------------------------------------------


async def test_salesforce_upserts_by_external_id_and_renews_an_ended_session(
    sqlite_store: SqliteStore, tmp_path: Path
) -> None:
    clock = FakeClock(START_MS)
    async with SalesforceOrg(clock) as org:
        example = load_example("salesforce", sqlite_store, tmp_path, clock, SALESFORCE_URL=org.url("").rstrip("/"),
                               SALESFORCE_CLIENT_ID=org.client_id, SALESFORCE_CLIENT_SECRET=org.client_secret)
        async with example:
            await example.receive(payload(EMAIL))
            created = await example.deliver()
            await example.receive(payload(EMAIL, without_name_or_preview))
            updated = await example.deliver()
            org.revoke_all()  # the org ended the session: the next request meets 401 INVALID_SESSION_ID
            await example.receive(payload(EMAIL, lambda document: document["message"].update(subject="Any news?")))
            renewed = await example.deliver()

    assert [d.status for d in created + updated[1:] + renewed[2:]] == [DeliveryStatus.DELIVERED] * 3
    assert [[a.status_code for a in await sqlite_store.list_attempts(d.id)] for d in renewed] == [[201], [200], [200]]
    assert len(org.token_requests) == 2  # one at first, one after the session ended; attempts stayed at 1
    contact = org.contacts[PRIYA]
    assert (contact["FirstName"], contact["LastName"], contact["Missive_Last_Subject__c"]) == (
        "Priya", "Natarajan", "Any news?")
    upserts = [r for r in org.api_requests if r.method == "PATCH"]
    assert upserts[0].path_qs == f"/services/data/v62.0/sobjects/Contact/Missive_Email__c/{PRIYA}"
    assert "FirstName" not in json_of(upserts[1])  # the nameless email does not clear the first name
    assert all(d.request is not None and "Authorization" not in d.request.headers for d in renewed)
