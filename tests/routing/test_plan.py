"""Ids for events and deliveries: unique, short, and sorted by when they were made."""

from __future__ import annotations

import re

from gateway.routing.plan import new_id

T0 = 1_764_650_000_000


def test_ids_sort_by_the_millisecond_they_were_made_in() -> None:
    made = [new_id("evt", T0 + step * 7) for step in range(2000)]
    assert made == sorted(made)
    assert new_id("evt", T0) < new_id("evt", T0 + 1) < new_id("evt", 2**42 - 1)


def test_ids_made_in_one_millisecond_differ_and_keep_their_order() -> None:
    made = [new_id("dlv", T0) for _ in range(5000)]
    assert len(set(made)) == 5000
    assert made == sorted(made)  # events stored in one millisecond list in the order they came


def test_ids_are_short_and_url_safe() -> None:
    assert re.fullmatch(r"evt_[-0-9A-Z_a-z]{16}", new_id("evt", T0))
