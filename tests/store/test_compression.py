"""Compressed blobs: self-describing frames, raw blobs from older stores, dictionaries learnt from the data."""

from __future__ import annotations

import json
import random
import threading
import time

import pytest

from gateway.store.compression import MIN_COMPRESSED_BYTES, TRAIN_SAMPLES, ZSTD_MAGIC, Codec, Dictionary, Kind
from tests.conftest import FIXTURES


class Kept:
    """What a store does with trained dictionaries: keep them, find them again by id."""

    def __init__(self) -> None:
        self.dictionaries: dict[int, Dictionary] = {}
        self.trained = threading.Event()

    def keep(self, dictionary: Dictionary) -> None:
        self.dictionaries[dictionary.id] = dictionary
        self.trained.set()

    def codec(self) -> Codec:
        return Codec(list(self.dictionaries.values()), self.keep, self.dictionaries.get)


def varied_payloads(count: int, seed: int = 1) -> list[bytes]:
    """Missive-shaped payloads that share their structure but not their values."""
    rng = random.Random(seed)
    fixtures = [json.loads(path.read_bytes()) for path in sorted(FIXTURES.glob("*.json"))]
    words = "order invoice refund shipping delayed damaged quote pricing urgent thanks account billing".split()

    def vary(value: object) -> object:
        if isinstance(value, dict):
            return {key: vary(item) for key, item in value.items()}
        if isinstance(value, list):
            return [vary(item) for item in value]
        if isinstance(value, str) and value:
            return " ".join(rng.choice(words) for _ in range(max(1, len(value) // 8)))
        if isinstance(value, int) and not isinstance(value, bool):
            return value + rng.randint(0, 10**6)
        return value

    return [json.dumps(vary(rng.choice(fixtures))).encode() for _ in range(count)]


def test_a_blob_round_trips_and_shrinks() -> None:
    payload = (FIXTURES / "incoming-email-with-labels.json").read_bytes()
    codec = Kept().codec()
    packed = codec.pack(Kind.PAYLOAD, payload)
    assert packed.startswith(ZSTD_MAGIC) and len(packed) < len(payload) / 2
    assert codec.unpack(packed) == payload


@pytest.mark.parametrize("blob", [b"", b'{"a": 1}', b"x" * (MIN_COMPRESSED_BYTES - 1)], ids=["empty", "json", "short"])
def test_short_blobs_stay_raw(blob: bytes) -> None:
    codec = Kept().codec()
    assert codec.pack(Kind.BODY, blob) == blob
    assert codec.unpack(blob) == blob


def test_raw_blobs_of_an_older_store_read_as_they_are() -> None:
    payload = (FIXTURES / "label-change.json").read_bytes()
    assert Kept().codec().unpack(payload) == payload


def test_a_dictionary_is_learnt_from_the_first_samples_and_then_used() -> None:
    kept = Kept()
    codec = kept.codec()
    payloads = varied_payloads(TRAIN_SAMPLES + 200)
    before = [codec.pack(Kind.PAYLOAD, payload) for payload in payloads[:TRAIN_SAMPLES]]
    assert kept.trained.wait(10), "a dictionary was trained once enough samples came"
    (dictionary,) = kept.dictionaries.values()
    assert dictionary.kind is Kind.PAYLOAD
    deadline = time.monotonic() + 5
    while codec.pack(Kind.PAYLOAD, payloads[0]) == before[0] and time.monotonic() < deadline:
        time.sleep(0.01)  # installed just after it was kept
    later = payloads[TRAIN_SAMPLES:]
    after = [codec.pack(Kind.PAYLOAD, payload) for payload in later]
    plain = Kept().codec()
    plain_sizes = sum(len(plain.pack(Kind.PAYLOAD, payload)) for payload in later)
    assert sum(map(len, after)) < plain_sizes * 0.75, "the dictionary pays for itself on unseen payloads"
    assert [codec.unpack(blob) for blob in after] == later
    assert [codec.unpack(blob) for blob in before] == payloads[:TRAIN_SAMPLES], "frames from before still read"


def test_another_process_reads_frames_through_the_kept_dictionaries() -> None:
    kept = Kept()
    writer = kept.codec()
    payloads = varied_payloads(TRAIN_SAMPLES + 10)
    for payload in payloads[:TRAIN_SAMPLES]:
        writer.pack(Kind.PAYLOAD, payload)
    assert kept.trained.wait(10)
    time.sleep(0.05)
    blob = writer.pack(Kind.PAYLOAD, payloads[-1])
    reader = Codec([], kept.keep, kept.dictionaries.get)  # started before the dictionary existed
    assert reader.unpack(blob) == payloads[-1]


def test_a_frame_whose_dictionary_is_gone_is_an_error_naming_it() -> None:
    kept = Kept()
    writer = kept.codec()
    payloads = varied_payloads(TRAIN_SAMPLES + 10)
    for payload in payloads[:TRAIN_SAMPLES]:
        writer.pack(Kind.PAYLOAD, payload)
    assert kept.trained.wait(10)
    time.sleep(0.05)
    blob = writer.pack(Kind.PAYLOAD, payloads[-1])
    (dictionary_id,) = kept.dictionaries
    with pytest.raises(ValueError, match=f"zstd dictionary {dictionary_id}"):
        Codec([], kept.keep, lambda _: None).unpack(blob)


def test_kinds_learn_apart() -> None:
    kept = Kept()
    codec = kept.codec()
    for payload in varied_payloads(TRAIN_SAMPLES - 1):
        codec.pack(Kind.PAYLOAD, payload)
        codec.pack(Kind.BODY, payload)
    assert not kept.trained.wait(0.2), "neither kind has enough samples yet"
