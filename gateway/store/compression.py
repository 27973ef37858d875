"""What the stores keep of payloads and requests, compressed: zstd frames, with dictionaries learnt from the data.

A blob is self-describing. A zstd frame (it starts with zstd's magic number) is decompressed, with the
dictionary its header names when it names one; anything else is the raw bytes an older gateway wrote,
returned as it is. So a store may hold both, and nothing has to be rewritten when compression starts.

Small JSON documents compress poorly alone (a 2.5 KB payload to about 1 KB) but well against what
their kind has in common (key names, URLs, the team's and organisation's details: to about 0.5 KB).
So each kind of blob (payloads, request bodies, headers...) gets a dictionary trained on its first
`TRAIN_SAMPLES` blobs, in a thread of its own so that the writer never waits for it; the store keeps
every dictionary it has used (`Dictionaries`), since the frames that name one outlive it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import zstandard

log = logging.getLogger("gateway.store")

_Buffer = bytes | bytearray | memoryview
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
LEVEL = 3
TRAIN_SAMPLES = 200
DICTIONARY_BYTES = 16 * 1024
# Blobs shorter than this are kept raw: a frame would cost more than it saves.
MIN_COMPRESSED_BYTES = 64


class Kind(Enum):
    """What a blob holds; each kind learns its own dictionary."""

    PAYLOAD = "payload"
    BODY = "body"
    HEADERS = "headers"
    CHAIN = "chain"  # what a chained request needs to be rendered, and the step answers it was rendered from


@dataclass(frozen=True)
class Dictionary:
    id: int
    kind: Kind
    data: bytes


@dataclass
class _Learning:
    """The samples of a kind not yet trained on, while training is not under way."""

    samples: list[bytes] = field(default_factory=list)
    training: bool = False


class Codec:
    """Packs blobs for one store and unpacks what any gateway packed into it; safe to share between threads.

    `on_trained` receives each dictionary trained here, to be kept by the store; `lookup` finds a
    dictionary named by a frame that this process has not seen (another process trained it).
    """

    def __init__(
        self,
        known: list[Dictionary],
        on_trained: Callable[[Dictionary], None],
        lookup: Callable[[int], Dictionary | None],
    ) -> None:
        self._by_id = {dictionary.id: dictionary for dictionary in known}
        self._current: dict[Kind, Dictionary] = {}
        for dictionary in known:  # the last one of each kind (they come oldest first) is the one to use
            self._current[dictionary.kind] = dictionary
        self._on_trained = on_trained
        self._lookup = lookup
        self._learning = {kind: _Learning() for kind in Kind if kind not in self._current}
        self._lock = threading.Lock()
        self._local = threading.local()

    def pack(self, kind: Kind, data: bytes) -> bytes:
        """`data` as a zstd frame, or as it is when it is too short to gain from one."""
        if len(data) < MIN_COMPRESSED_BYTES:
            return data
        dictionary = self._current.get(kind)
        if dictionary is None:
            self._learn(kind, data)
        return self._compressor(dictionary).compress(data)

    def unpack(self, blob: bytes) -> bytes:
        if not blob.startswith(ZSTD_MAGIC):
            return blob
        dict_id = zstandard.get_frame_parameters(blob).dict_id
        return self._decompressor(dict_id).decompress(blob)

    def _learn(self, kind: Kind, data: bytes) -> None:
        with self._lock:
            learning = self._learning.get(kind)
            if learning is None or learning.training:
                return
            learning.samples.append(data)
            if len(learning.samples) < TRAIN_SAMPLES:
                return
            samples, learning.samples, learning.training = learning.samples, [], True
        threading.Thread(target=self._train, args=(kind, samples), name="gateway-zstd-train", daemon=True).start()

    def _train(self, kind: Kind, samples: list[bytes]) -> None:
        try:
            trained = zstandard.train_dictionary(DICTIONARY_BYTES, list[_Buffer](samples), level=LEVEL)
        except zstandard.ZstdError as exc:  # too little in common to learn from: go on without one
            log.info("no %s dictionary: %s", kind.value, exc)
            return
        dictionary = Dictionary(trained.dict_id(), kind, trained.as_bytes())
        try:
            self._on_trained(dictionary)
        except Exception:
            log.warning("could not keep the %s dictionary; compressing without one", kind.value, exc_info=True)
            with self._lock:
                self._learning[kind].training = False
            return
        with self._lock:
            self._by_id[dictionary.id] = dictionary
            self._current[kind] = dictionary
            del self._learning[kind]
        log.info("learnt a %s dictionary from %d samples", kind.value, len(samples))

    def _compressor(self, dictionary: Dictionary | None) -> zstandard.ZstdCompressor:
        cache: dict[int, zstandard.ZstdCompressor] = self._thread_cache("compressors")
        key = dictionary.id if dictionary else 0
        compressor = cache.get(key)
        if compressor is None:
            data = zstandard.ZstdCompressionDict(dictionary.data) if dictionary else None
            compressor = cache[key] = zstandard.ZstdCompressor(level=LEVEL, dict_data=data, write_content_size=True)
        return compressor

    def _decompressor(self, dict_id: int) -> zstandard.ZstdDecompressor:
        cache: dict[int, zstandard.ZstdDecompressor] = self._thread_cache("decompressors")
        decompressor = cache.get(dict_id)
        if decompressor is None:
            data = None
            if dict_id:
                dictionary = self._by_id.get(dict_id) or self._lookup(dict_id)
                if dictionary is None:
                    raise ValueError(f"a stored blob names zstd dictionary {dict_id}, which the store does not have")
                self._by_id[dict_id] = dictionary
                data = zstandard.ZstdCompressionDict(dictionary.data)
            decompressor = cache[dict_id] = zstandard.ZstdDecompressor(dict_data=data)
        return decompressor

    def _thread_cache(self, name: str) -> dict[int, Any]:
        cache = getattr(self._local, name, None)
        if cache is None:
            cache = {}
            setattr(self._local, name, cache)
        return cache
