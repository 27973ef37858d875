"""Request chains in routing: config checks, what a step's answer looks like to templates, the plan of a chained
route, and rendering a stored snapshot as the config was at ingest."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigError, RenderError
from gateway.mask import Masker
from gateway.model import StoredEvent
from gateway.routing.chain import ANSWER_LIMIT_BYTES, StepAnswer, step_view
from gateway.routing.compiled import LoadedConfig, load_config
from gateway.routing.plan import PlannedSend, event_context, plan, render_chained, to_deliveries
from tests.conftest import fixture_bytes

CHAIN = """\
sources: {missive: {}}
destinations:
  crm: {url: "https://crm.example/api"}
routes:
  - name: vip
    send:
      - to: crm
        id: contact
        url: https://crm.example/contacts
        body: {email: "{{ message.from_field.address }}"}
      - to: crm
        id: note
        after: contact
        url: "https://crm.example/contacts/{{ steps.contact.json.id }}/notes"
        body: {text: "{{ message.subject }}", status: "{{ steps.contact.status }}"}
      - to: crm
        after: note
        url: https://crm.example/audit
        body: {note: "{{ steps.note.json.id }}", contact: "{{ steps.contact.json.id }}"}
"""
BODY = fixture_bytes("incoming-email-with-labels.json")
PAYLOAD = json.loads(BODY)
STORED = StoredEvent("evt_1", "missive", 1_717_402_005_500, BODY)
EVENT = event_context(STORED)


def answer(document: Any, status: int = 201) -> dict[str, Any]:
    return step_view(StepAnswer(status, {"Content-Type": "application/json"}, json.dumps(document).encode()), Masker())


def loaded(write_config: Callable[[str], Path], text: str = CHAIN) -> LoadedConfig:
    return load_config(write_config(text), environ={})


def sends(config: LoadedConfig, answers: dict[str, Any] | None = None, payload: Any = PAYLOAD) -> list[PlannedSend]:
    [verdict] = plan(config.routes_for("missive"), payload, BODY, EVENT, answers=answers)
    return list(verdict.sends)


def body(send: PlannedSend) -> Any:
    assert send.request is not None, send.error
    return json.loads(send.request.body)


# --- config --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param("after: contact", "after: contcat", "routes[0].send[1].after: no earlier request of route 'vip' "
                     "has id 'contcat'; did you mean 'contact'?", id="unknown-step"),
        pytest.param("after: contact", "after: note", "routes[0].send[1].after: no earlier request of route 'vip' "
                     "has id 'note'; move this request below the one it runs after", id="later-step"),
        pytest.param("id: note", "id: contact", "routes[0].send[1].id: id 'contact' is used twice in route 'vip'",
                     id="duplicate-id"),
        pytest.param("id: note", "id: 2nd-note", "routes[0].send[1].id: id '2nd-note' is not a name templates can "
                     "use", id="bad-id"),
    ],
)
def test_chain_problems_name_the_place_and_fix(
    write_config: Callable[[str], Path], old: str, new: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        loaded(write_config, CHAIN.replace(old, new, 1))
    assert any(expected in str(problem) for problem in caught.value.problems), caught.value.problems


# --- what a step's answer looks like -------------------------------------------------------------------------------


def test_a_step_answer_is_parsed_masked_and_its_header_names_lowered() -> None:
    masker = Masker(["crm-secret-token"])
    answered = StepAnswer(201, {"Location": "/contacts/51", "Set-Cookie": "session=abc"},
                          b'{"id": "51", "echo": "crm-secret-token"}')
    seen = step_view(answered, masker, lambda text: text.replace("51", "**"))

    assert seen == {
        "status": 201, "headers": {"location": "/contacts/**", "set-cookie": "***"},
        "json": {"id": "**", "echo": "***"}, "text": '{"id": "**", "echo": "***"}', "truncated": False,
    }


def test_a_step_answer_is_bounded() -> None:
    huge = b'{"pad": "' + b"x" * ANSWER_LIMIT_BYTES + b'"}'
    seen = step_view(StepAnswer(200, {}, huge), Masker())
    assert (len(seen["text"]), seen["json"], seen["truncated"]) == (ANSWER_LIMIT_BYTES, None, True)
    assert step_view(StepAnswer(200, {}, b"plain words"), Masker())["json"] is None


# --- the plan ------------------------------------------------------------------------------------------------------


def test_at_ingest_chained_requests_wait_for_their_step(write_config: Callable[[str], Path]) -> None:
    contact, note, audit = sends(loaded(write_config))

    assert body(contact) == {"email": "priya.natarajan@example.org"}
    assert (note.request, note.error, note.waiting_on, audit.waiting_on) == (None, None, "contact", "note")
    assert note.snapshot is not None and audit.snapshot is not None
    deliveries = to_deliveries(plan(loaded(write_config).routes_for("missive"), PAYLOAD, BODY, EVENT), 0)
    assert [(d.step, d.status.value) for d in deliveries] == [("contact", "pending"), ("note", "held"),
                                                              (None, "held")]
    assert deliveries[1].after == deliveries[0].id and deliveries[2].after == deliveries[1].id


def test_a_step_that_cannot_render_fails_its_chain(write_config: Callable[[str], Path]) -> None:
    config = loaded(write_config, CHAIN.replace("message.from_field.address", "message.nope"))
    contact, note, audit = sends(config)

    assert contact.error is not None and "nope" in contact.error
    assert (note.error, audit.error) == ("step contact failed", "step note failed")
    assert [d.status.value for d in to_deliveries(plan(config.routes_for("missive"), PAYLOAD, BODY, EVENT), 0)] == [
        "dead", "dead", "dead"]


def test_with_answers_each_step_sees_the_steps_before_it(write_config: Callable[[str], Path]) -> None:
    config = loaded(write_config)
    _, note, audit = sends(config, {"contact": answer({"id": "51"})})
    assert note.request is not None and note.request.url == "https://crm.example/contacts/51/notes"
    assert body(note) == {"text": "Order HL-20931 arrived damaged", "status": 201}
    assert note.request.headers["Idempotency-Key"] == "evt_1:vip:1"
    assert audit.waiting_on == "note"

    _, _, audit = sends(config, {"contact": answer({"id": "51"}), "note": answer({"id": 9001})})
    assert body(audit) == {"note": 9001, "contact": "51"}


def test_a_stored_snapshot_renders_as_the_config_was_at_ingest(write_config: Callable[[str], Path]) -> None:
    at_ingest = loaded(write_config)
    _, note, _ = sends(at_ingest)
    steps = {"contact": answer({"id": "51"})}
    reloaded = loaded(write_config, CHAIN.replace("text: ", "changed: "))
    assert note.snapshot is not None

    request = render_chained(note.snapshot, "vip", PAYLOAD, STORED, steps)

    assert request == sends(at_ingest, steps)[1].request
    assert json.loads(request.body) == {"text": "Order HL-20931 arrived damaged", "status": 201}
    assert "changed" in sends(reloaded, steps)[1].request.body.decode()  # type: ignore[union-attr]


def test_a_chained_template_that_fails_on_the_answer_names_the_place(write_config: Callable[[str], Path]) -> None:
    _, note, _ = sends(loaded(write_config))
    assert note.snapshot is not None
    with pytest.raises(RenderError, match=r"routes\[0\].send\[1\].url: 'dict object' has no attribute 'id'"):
        render_chained(note.snapshot, "vip", PAYLOAD, STORED, {"contact": answer({"results": []})})


def test_a_snapshot_keeps_what_the_destinations_preset_adds(write_config: Callable[[str], Path]) -> None:
    config = loaded(write_config, """\
sources: {missive: {}}
destinations:
  crm: {url: "https://crm.example/api"}
  pager: {type: pagerduty, routing_key: pd-routing-key-1234}
  teams: {type: teams, url: "https://x.environment.api.powerplatform.com/workflows/1?sig=abcd"}
routes:
  - name: vip
    send:
      - {to: crm, id: contact, body: {email: "{{ message.from_field.address }}"}}
      - to: pager
        after: contact
        body: {event_action: trigger, payload: {summary: "contact {{ steps.contact.json.id }}", source: gw,
                                                severity: info}}
      - to: teams
        after: contact
        card: {type: AdaptiveCard, version: "1.4", body: [{type: TextBlock, text: "{{ steps.contact.json.id }}"}]}
""")
    steps = {"contact": answer({"id": "51"})}
    _, pager, teams = sends(config, steps)

    for planned in (pager, teams):
        assert planned.snapshot is not None and planned.request is not None
        assert render_chained(planned.snapshot, "vip", PAYLOAD, STORED, steps) == planned.request
    assert body(pager)["routing_key"] == "pd-routing-key-1234" and body(pager)["dedup_key"] == "evt_1:vip"
    assert body(teams)["attachments"][0]["content"]["body"][0]["text"] == "51"
