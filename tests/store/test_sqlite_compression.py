"""The SQLite store keeps payloads and requests compressed, learns dictionaries, and still reads older rows."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sqlite3
from pathlib import Path

import zstandard

from gateway.model import DeliveryFilter, NewDelivery, NewEvent, RenderedRequest
from gateway.store.base import dedupe_key
from gateway.store.compression import TRAIN_SAMPLES, ZSTD_MAGIC
from gateway.store.sqlite import SqliteStore
from gateway.store.sqlite_schema import SCHEMA_VERSION
from tests.store.test_compression import varied_payloads

T0 = 1_700_000_000_000


def request_for(payload: bytes) -> RenderedRequest:
    headers = {"Content-Type": "application/json", "X-Gateway-Event-Id": "evt_x", "Idempotency-Key": "evt_x:r:0"}
    return RenderedRequest("POST", "https://crm.example.com/notes", headers, payload[:300] + b"...")


def event_of(index: int, payload: bytes) -> tuple[NewEvent, list[NewDelivery]]:
    event = NewEvent(f"evt_{index:08d}", "missive", T0 + index, payload, f"key{index}")
    delivery = NewDelivery(f"dlv_{index:08d}", "route", "crm", 5, request_for(payload))
    return event, [delivery]


def raw_columns(path: Path, sql: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


async def test_payloads_and_requests_are_stored_compressed_and_read_back_whole(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    store = SqliteStore(path)
    await store.open()
    (payload,) = varied_payloads(1)
    event, deliveries = event_of(1, payload)
    await store.ingest(event, deliveries, 0)
    stored_event = await store.get_event(event.id)
    (stored_delivery,) = await store.list_deliveries(DeliveryFilter())
    await store.close()
    assert stored_event is not None and stored_event.body == payload
    assert stored_delivery.request == deliveries[0].request
    ((body, size),) = raw_columns(path, "SELECT body, length(body) FROM events")
    assert isinstance(body, bytes) and body.startswith(ZSTD_MAGIC) and isinstance(size, int) and size < len(payload) / 2
    ((delivery_body,),) = raw_columns(path, "SELECT body FROM deliveries")
    assert isinstance(delivery_body, bytes) and delivery_body.startswith(ZSTD_MAGIC)


async def test_rows_written_before_compression_still_read(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    store = SqliteStore(path)
    await store.open()
    (payload,) = varied_payloads(1)
    event, deliveries = event_of(1, payload)
    await store.ingest(event, deliveries, 0)
    await store.close()
    request = deliveries[0].request
    assert request is not None
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:  # as a version 6 gateway wrote them
        conn.execute("UPDATE events SET body = ?", (payload,))
        conn.execute("UPDATE deliveries SET headers = ?, body = ?", (json.dumps(request.headers), request.body))
    store = SqliteStore(path)
    await store.open()
    stored_event = await store.get_event(event.id)
    (stored_delivery,) = await store.list_deliveries(DeliveryFilter())
    await store.close()
    assert stored_event is not None and stored_event.body == payload
    assert stored_delivery.request == request


async def test_a_learnt_dictionary_is_kept_and_read_by_another_store_on_the_file(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    payloads = varied_payloads(TRAIN_SAMPLES + 50)
    writer = SqliteStore(path)
    await writer.open()
    for index, payload in enumerate(payloads[:TRAIN_SAMPLES]):
        await writer.ingest(*event_of(index, payload), 0)
    for _ in range(200):  # the dictionary is trained in a thread of its own, then committed
        if raw_columns(path, "SELECT count(*) FROM dictionaries WHERE kind = 'payload'") == [(1,)]:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("no payload dictionary was kept")
    reader = SqliteStore(path)  # opened before the frames that use the dictionary are written
    await reader.open()
    await asyncio.sleep(0.1)
    later = list(enumerate(payloads[TRAIN_SAMPLES:], start=TRAIN_SAMPLES))
    for index, payload in later:
        await writer.ingest(*event_of(index, payload), 0)
    ((dictionary_id,),) = raw_columns(path, "SELECT id FROM dictionaries WHERE kind = 'payload'")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        uses = conn.execute("SELECT body FROM events WHERE id = ?", (f"evt_{later[-1][0]:08d}",)).fetchone()[0]


    assert zstandard.get_frame_parameters(uses).dict_id == dictionary_id
    for index, payload in later[-5:]:
        stored = await reader.get_event(f"evt_{index:08d}")
        assert stored is not None and stored.body == payload
    await reader.close()
    await writer.close()
    reopened = SqliteStore(path)
    await reopened.open()
    stored = await reopened.get_event(f"evt_{later[0][0]:08d}")
    await reopened.close()
    assert stored is not None and stored.body == later[0][1]


async def test_a_version_6_file_is_migrated_and_still_finds_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    store = SqliteStore(path)
    await store.open()
    (payload,) = varied_payloads(1)
    event, deliveries = event_of(1, payload)
    await store.ingest(event, deliveries, 0)
    await store.close()
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:  # as a version 6 gateway left it
        conn.execute("UPDATE events SET body = ?, dedupe_key = ?", (payload, hashlib.sha256(payload).hexdigest()))
        conn.execute("DROP TABLE dictionaries")
        conn.execute("UPDATE schema_version SET version = 6")
    store = SqliteStore(path)
    await store.open()
    again = NewEvent("evt_again", "missive", T0 + 1000, payload, dedupe_key(payload))
    result = await store.ingest(again, [], 60_000)
    await store.close()
    assert result.duplicate and result.event_id == event.id
    assert raw_columns(path, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
