"""Conversation state and once_per windows on every backend: written with the event, only on the state it was
routed on, unchanged by a duplicate, pruned with retention."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path

from gateway.model import Assignee, ConversationState, NewEvent, StateKeys, StateSnapshot, StateWrite
from gateway.store.base import Store
from gateway.store.sqlite import SqliteStore
from tests.store.test_contract import T0, WINDOW_MS, new_delivery, new_event

CONVERSATION = ("missive", "conv-1")
ALMA = Assignee("u-alma", "Alma Reyes", "alma@support.example.com")
WINDOW = ("urgent", "conv-1")
HALF_HOUR_MS = 1_800_000


def state(labels: tuple[str, ...], at_ms: int = T0) -> ConversationState:
    return ConversationState(labels, (ALMA,), at_ms)


def write(seen: StateSnapshot, labels: tuple[str, ...] | None, at_ms: int = T0,
          windows: dict[tuple[str, str], int] | None = None) -> StateWrite:  # fmt: skip
    keys = StateKeys(CONVERSATION, (WINDOW,))
    return StateWrite(keys, seen, state(labels, at_ms) if labels is not None else None, windows or {})


def event(event_id: str, at_ms: int = T0, key: str | None = None) -> NewEvent:
    base = new_event(event_id, at_ms, key=key)
    return NewEvent(base.id, base.source, at_ms, base.body, base.dedupe_key, changes='{"first_seen": true}')


KEYS = StateKeys(CONVERSATION, (WINDOW,))


async def test_nothing_is_known_at_first(store: Store) -> None:
    assert await store.read_state(KEYS, T0) == StateSnapshot()
    assert await store.read_state(StateKeys(), T0) == StateSnapshot()


async def test_state_and_windows_are_written_with_the_event(store: Store) -> None:
    seen = await store.read_state(KEYS, T0)
    result = await store.ingest(event("e1"), [new_delivery("d1")], WINDOW_MS,
                                write(seen, ("Billing", "Urgent"), windows={WINDOW: T0 + HALF_HOUR_MS}))  # fmt: skip

    assert (result.event_id, result.deliveries, result.conflict) == ("e1", 1, False)
    after = await store.read_state(KEYS, T0 + 1)
    assert after == StateSnapshot(state(("Billing", "Urgent")), 1, {WINDOW: T0 + HALF_HOUR_MS})
    stored = await store.get_event("e1")
    assert stored is not None and stored.changes == '{"first_seen": true}'


async def test_a_window_runs_until_its_end(store: Store) -> None:
    seen = await store.read_state(KEYS, T0)
    await store.ingest(event("e1"), [], 0, write(seen, None, windows={WINDOW: T0 + HALF_HOUR_MS}))

    assert (await store.read_state(KEYS, T0 + HALF_HOUR_MS - 1)).once_until_ms == {WINDOW: T0 + HALF_HOUR_MS}
    assert (await store.read_state(KEYS, T0 + HALF_HOUR_MS)).once_until_ms == {}
    assert (await store.read_state(KEYS, T0 + HALF_HOUR_MS)).conversation is None


async def test_a_write_on_a_state_that_moved_stores_nothing(store: Store) -> None:
    seen = await store.read_state(KEYS, T0)
    first = await store.ingest(event("e1"), [new_delivery("d1")], 0, write(seen, ("Billing",)))
    second = await store.ingest(event("e2", T0 + 1), [new_delivery("d2")], 0, write(seen, ("Urgent",), T0 + 1))

    assert (first.conflict, second.conflict, second.deliveries) == (False, True, 0)
    assert await store.get_event("e2") is None
    assert await store.get_delivery("d2") is None
    assert await store.read_state(KEYS, T0 + 1) == StateSnapshot(state(("Billing",)), 1, {})
    again = await store.read_state(KEYS, T0 + 1)
    third = await store.ingest(event("e2", T0 + 1), [new_delivery("d2")], 0, write(again, ("Urgent",), T0 + 1))
    assert not third.conflict
    assert await store.read_state(KEYS, T0 + 2) == StateSnapshot(state(("Urgent",), T0 + 1), 2, {})


async def test_a_window_opened_meanwhile_is_a_conflict(store: Store) -> None:
    seen = await store.read_state(KEYS, T0)
    await store.ingest(event("e1"), [], 0, write(seen, None, windows={WINDOW: T0 + HALF_HOUR_MS}))
    late = await store.ingest(event("e2", T0 + 1), [], 0, write(seen, None, T0 + 1))

    assert late.conflict
    assert await store.get_event("e2") is None


async def test_of_many_writes_on_one_state_one_is_stored(store: Store) -> None:
    seen = await store.read_state(KEYS, T0)
    results = await asyncio.gather(*(
        store.ingest(event(f"e{n}", T0 + n), [new_delivery(f"d{n}")], 0, write(seen, (f"L{n}",), T0 + n))
        for n in range(10)
    ))  # fmt: skip

    stored = [result for result in results if not result.conflict]
    assert len(stored) == 1
    winner = int(stored[0].event_id[1:])
    assert await store.read_state(KEYS, T0 + 10) == StateSnapshot(state((f"L{winner}",), T0 + winner), 1, {})


async def test_a_duplicate_changes_nothing(store: Store) -> None:
    seen = await store.read_state(KEYS, T0)
    await store.ingest(event("e1", key="same-body"), [], WINDOW_MS, write(seen, ("Billing",)))
    before = await store.read_state(KEYS, T0 + 1)

    again = await store.ingest(event("e2", T0 + 1, key="same-body"), [new_delivery("d2")], WINDOW_MS,
                               write(before, ("Urgent",), T0 + 1, {WINDOW: T0 + HALF_HOUR_MS}))  # fmt: skip
    stale = await store.ingest(event("e3", T0 + 2, key="same-body"), [], WINDOW_MS, write(seen, ("X",), T0 + 2))

    assert (again.duplicate, again.event_id, stale.duplicate) == (True, "e1", True)
    assert await store.read_state(KEYS, T0 + 3) == before


async def test_prune_forgets_conversations_and_windows_by_age(store: Store) -> None:
    other = StateKeys(("missive", "conv-2"), (("urgent", "conv-2"),))
    seen = await store.read_state(KEYS, T0)
    await store.ingest(event("e1"), [], 0, write(seen, ("Billing",), T0, {WINDOW: T0 + HALF_HOUR_MS}))
    later = T0 + 3 * HALF_HOUR_MS
    recent = StateWrite(other, StateSnapshot(), state(("VIP",), later), {("urgent", "conv-2"): later + HALF_HOUR_MS})
    await store.ingest(event("e2", later), [], 0, recent)

    await store.prune(T0 + 2 * HALF_HOUR_MS)

    assert await store.read_state(KEYS, T0 + 2 * HALF_HOUR_MS) == StateSnapshot()
    assert (await store.read_state(other, later)).conversation == state(("VIP",), later)
    assert (await store.read_state(other, later)).once_until_ms == {("urgent", "conv-2"): later + HALF_HOUR_MS}


async def test_sqlite_prune_deletes_ended_windows(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "gateway.db")
    await store.open()
    try:
        for n, end in enumerate((T0 + 1, T0 + HALF_HOUR_MS)):
            window = StateKeys(once=(("urgent", f"conv-{n}"),))
            await store.ingest(event(f"e{n}"), [], 0, StateWrite(window, StateSnapshot(), None, {window.once[0]: end}))
        await store.prune(T0 + 2)
    finally:
        await store.close()

    with closing(sqlite3.connect(tmp_path / "gateway.db")) as conn:
        assert conn.execute("SELECT route, key FROM once_per").fetchall() == [("urgent", "conv-1")]
