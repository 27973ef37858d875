"""What a payload says of its conversation, what changed, and which routes need to know (the pure parts)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.model import Assignee, ConversationState
from gateway.routing.compiled import SourceState, load_config
from gateway.routing.conversation import ConversationFacts, changes_of, conversation_facts, next_state
from tests.conftest import FIXTURES

ALMA = Assignee("u-alma", "Alma Reyes", "alma@support.example.com")
BORIS = Assignee("u-boris", "Boris Lindqvist", None)
T0 = 1_700_000_000_000


def test_facts_of_a_label_change() -> None:
    facts = conversation_facts(json.loads((FIXTURES / "label-change.json").read_text()))
    assert facts.id == "d1773781-5438-45b5-87bd-a21c604af42a"
    assert facts.labels == ("Billing", "Urgent")
    assert facts.assignees is not None and [person.name for person in facts.assignees] == [
        "Alma Reyes", "Boris Lindqvist"]  # fmt: skip


@pytest.mark.parametrize(
    ("payload", "facts"),
    [
        pytest.param({"conversation": {"id": "c", "shared_labels": [{"name": "A"}, {"name": "A"}, {"x": 1}, "B"]}},
                     ConversationFacts("c", ("A",), None), id="labels-by-name-once"),
        pytest.param({"conversation": {"id": "c", "assignees": [{"id": "u", "name": 3}, {"name": "no id"}]}},
                     ConversationFacts("c", None, (Assignee("u", None, None),)), id="assignees-need-an-id"),
        pytest.param({"conversation": {"id": "", "shared_labels": []}}, ConversationFacts(None, (), None),
                     id="empty-id"),
        pytest.param({"conversation": None}, ConversationFacts(None, None, None), id="no-conversation"),
        pytest.param([1], ConversationFacts(None, None, None), id="not-an-object"),
    ],
)  # fmt: skip
def test_facts_keep_what_the_payload_says(payload: Any, facts: ConversationFacts) -> None:
    assert conversation_facts(payload) == facts


def person(assignee: Assignee) -> dict[str, Any]:
    return {"id": assignee.id, "name": assignee.name, "email": assignee.email}


@pytest.mark.parametrize(
    ("before", "facts", "added", "removed", "people_added", "people_removed", "first_seen"),
    [
        pytest.param(None, ConversationFacts("c", ("Billing", "Urgent"), (ALMA,)), ["Billing", "Urgent"], [],
                     [person(ALMA)], [], True, id="first-seen-adds-everything"),
        pytest.param(ConversationState(("Billing",), (ALMA,), T0), ConversationFacts("c", ("Urgent", "Billing"),
                     (BORIS,)), ["Urgent"], [], [person(BORIS)], [person(ALMA)], False, id="added-and-removed"),
        pytest.param(ConversationState(("Billing",), (ALMA,), T0), ConversationFacts("c", None, None), [], [], [],
                     [], False, id="silent-payload-changes-nothing"),
        pytest.param(ConversationState(("Billing",), (), T0), ConversationFacts("c", (), None), [], ["Billing"], [],
                     [], False, id="all-labels-removed"),
        pytest.param(None, ConversationFacts(None, ("Urgent",), None), [], [], [], [], False, id="no-conversation"),
    ],
)  # fmt: skip
def test_changes(
    before: ConversationState | None, facts: ConversationFacts, added: list[str], removed: list[str],
    people_added: list[dict[str, Any]], people_removed: list[dict[str, Any]], first_seen: bool,
) -> None:  # fmt: skip
    assert changes_of(before, facts) == {
        "labels_added": added, "labels_removed": removed, "assignees_added": people_added,
        "assignees_removed": people_removed, "first_seen": first_seen,
    }  # fmt: skip


def test_next_state_keeps_what_the_payload_does_not_say() -> None:
    before = ConversationState(("Billing",), (ALMA,), T0)
    assert next_state(before, ConversationFacts("c", ("Urgent",), None), T0 + 5) == ConversationState(
        ("Urgent",), (ALMA,), T0 + 5)  # fmt: skip
    assert next_state(None, ConversationFacts("c", None, None), T0) == ConversationState((), (), T0)


BASE = """\
sources: {missive: {}, other: {}}
destinations: {chat: {url: "http://127.0.0.1:9/"}}
routes:
"""


@pytest.mark.parametrize(
    ("route", "state"),
    [
        pytest.param("{name: r, source: missive, send: [{to: chat}]}", SourceState(False, False), id="none"),
        pytest.param('{name: r, source: missive, when: {path: "$.changes.first_seen", equals: true}, '
                     "send: [{to: chat}]}", SourceState(True, False), id="condition"),
        pytest.param('{name: r, source: missive, when: {not: {any: [{path: "$[\'changes\']", exists: true}]}}, '
                     "send: [{to: chat}]}", SourceState(True, False), id="nested-condition"),
        pytest.param('{name: r, source: missive, send: [{to: chat, body: {a: [{b: "{{ changes.labels_added }}"}]}}]}',
                     SourceState(True, False), id="body-leaf"),
        pytest.param('{name: r, source: missive, send: [{to: chat, headers: {X-New: "{% if changes.first_seen %}'
                     'yes{% endif %}"}}]}', SourceState(True, False), id="header"),
        pytest.param('{name: r, source: missive, send: [{to: chat, body: {text: "what changes: {{ rule.type }}"}}]}',
                     SourceState(False, False), id="the-word-in-text-is-not-a-use"),
        pytest.param('{name: r, source: missive, send: [{to: chat, template_file: t.j2}]}', SourceState(True, False),
                     id="template-file"),
        pytest.param("{name: r, source: missive, once_per: {window: 1h}, send: [{to: chat}]}",
                     SourceState(False, True), id="once-per"),
    ],
)  # fmt: skip
def test_which_sources_keep_state(write_config: Callable[[str, str], Path], route: str, state: SourceState) -> None:
    write_config("{{ changes.labels_added | join(', ') }}", "t.j2")
    loaded = load_config(write_config(f"{BASE}  - {route}\n", "config.yaml"))
    assert loaded.state_of("missive") == state
    assert not loaded.state_of("other")


@pytest.mark.parametrize(
    ("once_per", "problem"),
    [
        pytest.param('{key: "{{ changes.first_seen }}", window: 1h}', "line 6: routes[0].once_per.key: the key cannot "
                     "use 'changes': it is rendered before the conversation's state is read", id="key-uses-changes"),
        pytest.param("{window: 0s}", "line 6: routes[0].once_per: window must be longer than 0", id="no-window"),
        pytest.param('{key: "{{ conversation.id }}"}', "line 6: routes[0].once_per.window: 'window' is required here",
                     id="window-required"),
        pytest.param('{key: "{{ conversation.id", window: 1h}', "line 6: routes[0].once_per.key: template error",
                     id="key-syntax"),
    ],
)  # fmt: skip
def test_once_per_problems(write_config: Callable[[str, str], Path], once_per: str, problem: str) -> None:
    text = f"{BASE}  - name: r\n    source: missive\n    once_per: {once_per}\n    send: [{{to: chat}}]\n"
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(text, "config.yaml"))
    assert any(str(found).startswith(problem) for found in caught.value.problems), caught.value.problems
