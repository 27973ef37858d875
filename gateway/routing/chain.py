"""Request chains: a send with `after: <id>` is rendered once the request it runs after is delivered.

Such a send keeps a snapshot of its source (`RequestSource` as JSON, with its place in the route), stored
with its delivery, so it renders as the config was at ingest whatever reloads happen meanwhile. Its
templates see `steps.<id>` for each step before it in its chain: the answer's `status`, `headers` (names
lower-cased), `text`, `json` (the parsed body when it is JSON, else null) and `truncated`, bounded to
`ANSWER_LIMIT_BYTES` and masked like everything else the gateway keeps.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import ConfigProblem, RenderError
from gateway.mask import Masker
from gateway.routing.sandbox import RenderLimits
from gateway.routing.templates import RequestSource, RequestTemplate, compile_source

ANSWER_LIMIT_BYTES = 64 * 1024
_COMPILED_SNAPSHOTS = 256


@dataclass(frozen=True)
class StepAnswer:
    """What a step's destination answered (or, in a dry run, a sample of it)."""

    status: int
    headers: Mapping[str, str]
    content: bytes
    truncated: bool = False


def step_view(answer: StepAnswer, masker: Masker, hide: Callable[[str], str] = str) -> dict[str, Any]:
    """`steps.<id>` as templates see it and the store keeps it: bounded, masked, JSON-ready.

    `hide` masks what the masker cannot know (OAuth2 tokens issued at run time).
    """
    content = answer.content[:ANSWER_LIMIT_BYTES]
    text = hide(masker.text(content.decode("utf-8", "replace")))
    headers = {name.lower(): hide(value) for name, value in masker.headers(answer.headers).items()}
    try:
        document: Any = json.loads(text)
    except ValueError:
        document = None
    truncated = answer.truncated or len(answer.content) > ANSWER_LIMIT_BYTES
    return {"status": answer.status, "headers": headers, "json": document, "text": text, "truncated": truncated}


def snapshot(source: RequestSource, index: int, limits: RenderLimits) -> bytes:
    """What a chained delivery keeps to be rendered later: its request's source, its place in the route and the
    render limits in force."""
    data = {"index": index, "limits": [limits.timeout_s, limits.max_bytes], "request": source.to_data()}
    return json.dumps(data, separators=(",", ":")).encode()


def snapshot_index(blob: bytes) -> int:
    index: int = json.loads(blob)["index"]
    return index


@functools.lru_cache(maxsize=_COMPILED_SNAPSHOTS)
def compiled_snapshot(blob: bytes) -> tuple[int, RequestTemplate]:
    """The send's place in its route and its compiled request (compiled once per distinct snapshot)."""
    data = json.loads(blob)
    problems: list[ConfigProblem] = []
    timeout_s, max_bytes = data["limits"]
    template = compile_source(RequestSource.from_data(data["request"]), problems, RenderLimits(timeout_s, max_bytes))
    if template is None:
        raise RenderError(f"the stored request cannot be compiled: {problems[0]}")
    return data["index"], template
