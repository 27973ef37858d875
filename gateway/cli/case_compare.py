"""How a rule test compares the request it expects with the one the dry run renders (`gateway.cli.cases`)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from pydantic import Field

from gateway.config.schema import Model
from gateway.config.yaml_source import join_path
from gateway.mask import Masker
from gateway.routing.jsonpath import SHOWN_CHARS, clip, compile_path

_CONTEXT_CHARS = 20  # shown before the first difference of two long texts


class ExpectedRequest(Model):
    """What one rendered request must look like; only the parts written are checked."""

    method: str | None = Field(None, description="HTTP method, e.g. POST.")
    url: str | None = Field(None, description="The whole URL, as the dry run shows it (credentials as ***).")
    headers: dict[str, str] = Field(default_factory=dict, description="These headers (names in any case).")
    body: Any = Field(None, description="The JSON body, partially: mappings need only the keys written; "
                      "a text body is compared whole.")
    body_paths: dict[str, Any] = Field(
        default_factory=dict, description="JSONPath into the JSON body -> the value it finds."
    )


def compare_request(masker: Masker, expected: ExpectedRequest, request: dict[str, Any]) -> Iterator[str]:
    """What differs between the request `expected` and the dry run's `request`, one line each."""
    if expected.method is not None and expected.method.upper() != request["method"]:
        yield f"method: expected {expected.method.upper()}, got {request['method']}"
    if expected.url is not None and masker.url(expected.url) != request["url"]:
        yield f"url: {_differ(masker.url(expected.url), request['url'])}"
    actual_headers = {name.lower(): value for name, value in request["headers"].items()}
    for name, value in masker.headers(expected.headers).items():
        got = actual_headers.get(name.lower())
        if got != value:
            yield f"header {name}: " + (f"expected {_show(value)}, got nothing" if got is None else _differ(value, got))
    if "body" not in expected.model_fields_set and not expected.body_paths:
        return
    try:
        document = json.loads(request["body"])
    except ValueError:
        if "body" in expected.model_fields_set and isinstance(expected.body, str):
            if masker.text(expected.body) != request["body"]:
                yield f"body: {_differ(masker.text(expected.body), request['body'])}"
            return
        yield f"body: expected JSON, got text {_show(request['body'])}"
        return
    if "body" in expected.model_fields_set:
        yield from _mismatches(masker.value(expected.body), document, "body")
    for expr, value in expected.body_paths.items():
        found = compile_path(expr)(document)
        if not found:
            yield f"body {expr}: expected {_show(masker.value(value))}, found nothing"
        else:
            yield from _mismatches(masker.value(value), found[0] if len(found) == 1 else found, f"body {expr}")


def _mismatches(expected: Any, actual: Any, at: str) -> Iterator[str]:
    """Where `actual` differs from `expected`: mappings need only the expected keys, lists match item by item."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key, value in expected.items():
            if key in actual:
                yield from _mismatches(value, actual[key], join_path(at, str(key)))
            else:
                yield f"{join_path(at, str(key))}: expected {_show(value)}, missing"
    elif isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        for index, (value, item) in enumerate(zip(expected, actual, strict=True)):
            yield from _mismatches(value, item, join_path(at, index))
    elif not _same(expected, actual):
        yield f"{at}: {_differ(expected, actual)}"


def _same(expected: Any, actual: Any) -> bool:
    """JSON equality: 1 equals 1.0, but true is not 1 and "1" is not 1."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    numbers = (int, float)
    if isinstance(expected, numbers) and isinstance(actual, numbers):
        return bool(expected == actual)
    return type(expected) is type(actual) and bool(expected == actual)


def _show(value: Any) -> str:
    return clip(json.dumps(value, ensure_ascii=False))


def _differ(expected: Any, actual: Any) -> str:
    """`expected X, got Y`; long texts are shown from a little before where they first differ."""
    if isinstance(expected, str) and isinstance(actual, str):
        start = len(os.path.commonprefix([expected, actual]))
        skip = max(0, start - _CONTEXT_CHARS)
        if skip and max(len(expected), len(actual)) > SHOWN_CHARS:
            where = f" (they differ from character {start + 1})"
            return f"expected ...{_show(expected[skip:])}, got ...{_show(actual[skip:])}{where}"
    return f"expected {_show(expected)}, got {_show(actual)}"
