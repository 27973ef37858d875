"""Conversations: what an event says of its conversation, and what changed since the gateway last saw it.

Routes and templates see the changes as `changes`, beside the payload's own names:

    labels_added, labels_removed          shared label names (`conversation.shared_labels[*].name`)
    assignees_added, assignees_removed    {id, name, email} of each assignee (`conversation.assignees[*]`)
    first_seen                            the conversation was not known: every label and assignee is added

A payload without `shared_labels` (or `assignees`) says nothing of them: they are neither added nor
removed, and the state keeps what it had. An event without a conversation id changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateSyntaxError, meta

from gateway.config.schema import Condition, RouteConfig
from gateway.model import Assignee, ConversationState, StateKeys
from gateway.routing.template_env import ENV

CHANGES = "changes"
_MENTIONS_CHANGES = re.compile(r"\bchanges\b")


@dataclass(frozen=True)
class ConversationFacts:
    """What one payload says of its conversation; None: it does not say."""

    id: str | None
    labels: tuple[str, ...] | None
    assignees: tuple[Assignee, ...] | None


def conversation_facts(payload: Any) -> ConversationFacts:
    conversation = payload.get("conversation") if isinstance(payload, dict) else None
    if not isinstance(conversation, dict):
        return ConversationFacts(None, None, None)
    conversation_id = conversation.get("id")
    labels = conversation.get("shared_labels")
    people = conversation.get("assignees")
    return ConversationFacts(
        conversation_id if isinstance(conversation_id, str) and conversation_id else None,
        tuple(dict.fromkeys(_label_names(labels))) if isinstance(labels, list) else None,
        tuple({person.id: person for person in _assignees(people)}.values()) if isinstance(people, list) else None,
    )


def _label_names(labels: list[Any]) -> Iterator[str]:
    for label in labels:
        name = label.get("name") if isinstance(label, dict) else None
        if isinstance(name, str):
            yield name


def _assignees(people: list[Any]) -> Iterator[Assignee]:
    for person in people:
        if isinstance(person, dict) and isinstance(person.get("id"), str):
            name, email = person.get("name"), person.get("email")
            yield Assignee(person["id"], name if isinstance(name, str) else None,
                           email if isinstance(email, str) else None)  # fmt: skip


def state_keys(source: str, facts: ConversationFacts, remembered: bool, once_keys: Mapping[str, str]) -> StateKeys:
    """The state an event's routing reads: its conversation when its source's conversations are `remembered` and it
    has one, and its routes' once_per keys (route -> key)."""
    conversation = (source, facts.id) if remembered and facts.id is not None else None
    return StateKeys(conversation, tuple(once_keys.items()))


def changes_of(before: ConversationState | None, facts: ConversationFacts) -> dict[str, Any]:
    """The `changes` object of an event whose conversation was `before` (None: never seen)."""
    if facts.id is None:
        return {"labels_added": [], "labels_removed": [], "assignees_added": [], "assignees_removed": [],
                "first_seen": False}  # fmt: skip
    had_labels = before.labels if before is not None else ()
    had_people = before.assignees if before is not None else ()
    labels = facts.labels if facts.labels is not None else had_labels
    people = facts.assignees if facts.assignees is not None else had_people
    people_ids, had_ids = {person.id for person in people}, {person.id for person in had_people}
    return {
        "labels_added": [label for label in labels if label not in had_labels],
        "labels_removed": [label for label in had_labels if label not in labels],
        "assignees_added": [vars(person) for person in people if person.id not in had_ids],
        "assignees_removed": [vars(person) for person in had_people if person.id not in people_ids],
        "first_seen": before is None,
    }


def next_state(before: ConversationState | None, facts: ConversationFacts, now_ms: int) -> ConversationState:
    """The conversation once this event is stored: what it says, and what it does not say kept from `before`."""
    labels = facts.labels if facts.labels is not None else (before.labels if before is not None else ())
    people = facts.assignees if facts.assignees is not None else (before.assignees if before is not None else ())
    return ConversationState(labels, people, now_ms)


def uses_changes(route: RouteConfig, text_bodies: Iterable[str]) -> bool:
    """Whether the route's condition or templates read `changes` (then its source's conversations are kept);
    `text_bodies` are its compiled sends' text templates, `template_file` ones included (never read here)."""
    if route.when is not None and any(_MENTIONS_CHANGES.search(path) for path in _paths(route.when)):
        return True
    written = (text for send in route.send for text in _strings(send.model_dump(exclude={"template_file"})))
    return any(CHANGES in names_used(source) for source in (*written, *text_bodies))


def names_used(source: str) -> set[str]:
    """The names a template reads from its context (none when it is not a template, or cannot be parsed)."""
    if "{{" not in source and "{%" not in source:
        return set()
    try:
        return set(meta.find_undeclared_variables(ENV.parse(source)))
    except TemplateSyntaxError:
        return set()  # reported when the template is compiled


def _paths(condition: Condition) -> Iterator[str]:
    if condition.path is not None:
        yield condition.path
    for child in [*(condition.all or ()), *(condition.any or ()), *([condition.not_] if condition.not_ else [])]:
        yield from _paths(child)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
