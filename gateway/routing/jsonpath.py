"""JSONPath expressions compiled once into functions that return the values they find.

Common paths (`$.a.b`, `['a']`, `[0]`, `[*]`, `.*`) are walked directly over dicts and
lists, 10-20x faster than jsonpath-ng's `find()`; anything else (filters, slices, `..`)
is left to jsonpath-ng.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Any

from jsonpath_ng import Child, Fields, Index, JSONPath, Root, Wildcard
from jsonpath_ng.ext.parser import ExtendedJsonPathLexer
from jsonpath_ng.ext.parser import parse as parse_jsonpath

Getter = Callable[[Any], list[Any]]
Step = Callable[[list[Any]], list[Any]]

SHOWN_CHARS = 80
_MISSING = object()
_PARSE_ERROR = re.compile(r"Parse error at (\d+):(\d+) near token (.*) \(.+\)$")
_LEX_ERROR = re.compile(r"Error on line (\d+), col (\d+).*Unexpected character: (.)", re.DOTALL)


def compile_path(expr: str) -> Getter:
    """A function returning the values `expr` finds in a document.

    Raises ValueError with a one-line message when `expr` is not a JSONPath starting at `$`.
    """
    text = expr.strip()
    if not text:
        raise ValueError("the JSONPath is empty")
    if not text.startswith("$"):
        raise ValueError(f"JSONPath {expr!r} does not start with '$'")
    parsed = _parse(expr)
    if _has_regex_filter(expr):
        raise ValueError(
            f"JSONPath {expr!r} filters with a regular expression (=~), which would run in Python's backtracking "
            "engine: select the values with the path and test them with 'matches' (RE2, linear time)"
        )
    return _fast_getter(parsed) or _jsonpath_getter(parsed)


def _has_regex_filter(expr: str) -> bool:
    return any(token.type == "FILTER_OP" and token.value == "=~" for token in ExtendedJsonPathLexer().tokenize(expr))


def _parse(expr: str) -> JSONPath:
    with warnings.catch_warnings():
        # Syntax jsonpath-ng deprecates is refused now rather than broken by an upgrade.
        warnings.simplefilter("error")
        try:
            return parse_jsonpath(expr)
        except Warning as warning:
            raise ValueError(f"JSONPath {expr!r} uses deprecated syntax: {one_line(str(warning))}") from None
        except Exception as exc:  # jsonpath-ng and its lexer raise several unrelated types
            raise ValueError(f"invalid JSONPath {expr!r}: {_parse_failure(exc, expr)}") from None


def _parse_failure(exc: Exception, expr: str) -> str:
    text = str(exc)
    if found := _PARSE_ERROR.match(text):
        return f"unexpected {found.group(3)!r} {_position(expr, int(found.group(1)), int(found.group(2)))}"
    if found := _LEX_ERROR.match(text):
        return f"unexpected character {found.group(3)!r} {_position(expr, int(found.group(1)), int(found.group(2)))}"
    if text.startswith("Parse error near the end"):
        return "it ends too early (an unclosed bracket, or a trailing '.'?)"
    if text.startswith("Unexpected EOF in string"):
        return "a quote is not closed"
    return clip(one_line(text) or type(exc).__name__)


def _position(expr: str, line: int, column: int) -> str:
    if line != 1:
        return f"on line {line}"
    return f"after {expr[:column]!r}" if column else "at the start"


def _fast_getter(parsed: JSONPath) -> Getter | None:
    """A direct walk for `$` followed by fields, indices and wildcards; None for anything else."""
    segments: list[JSONPath] = []
    node = parsed
    while type(node) is Child:
        segments.insert(0, node.right)
        node = node.left
    steps = [_step(segment) for segment in segments]
    if type(node) is not Root or None in steps:
        return None
    names: list[str] = []
    for segment in segments:
        if type(segment) is not Fields or len(segment.fields) != 1:
            break
        names.append(segment.fields[0])
    prefix = _field_chain(tuple(names))
    rest = tuple(step for step in steps[len(names) :] if step is not None)
    return _step_chain(prefix, rest) if rest else prefix


def _step(segment: JSONPath) -> Step | None:
    if type(segment) is Fields:
        return _fields_step(tuple(segment.fields))
    if type(segment) is Index:
        return _index_step(tuple(segment.indices))
    if type(segment) is Wildcard:
        return _wildcard_step
    return None


def _field_chain(names: tuple[str, ...]) -> Getter:
    def get(doc: Any) -> list[Any]:
        for name in names:
            if not isinstance(doc, dict):
                return []
            doc = doc.get(name, _MISSING)
            if doc is _MISSING:
                return []
        return [doc]

    return get


def _step_chain(prefix: Getter, steps: tuple[Step, ...]) -> Getter:
    def get(doc: Any) -> list[Any]:
        values = prefix(doc)
        for step in steps:
            if not values:
                break
            values = step(values)
        return values

    return get


def _fields_step(names: tuple[str, ...]) -> Step:
    def step(values: list[Any]) -> list[Any]:
        return [value[name] for value in values if isinstance(value, dict) for name in names if name in value]

    return step


def _index_step(indices: tuple[int, ...]) -> Step:
    def step(values: list[Any]) -> list[Any]:
        return [
            value[index]
            for value in values
            if isinstance(value, (list, tuple))
            for index in indices
            if -len(value) <= index < len(value)
        ]

    return step


def _wildcard_step(values: list[Any]) -> list[Any]:
    found: list[Any] = []
    for value in values:
        if isinstance(value, (list, tuple)):
            found.extend(value)
        elif isinstance(value, dict):
            found.extend(value.values())
    return found


def _jsonpath_getter(parsed: JSONPath) -> Getter:
    def get(doc: Any) -> list[Any]:
        try:
            return [match.value for match in parsed.find(doc)]
        except Exception:  # e.g. a sort or string function meeting a value of another type
            return []

    return get


# --- values ------------------------------------------------------------------------------


def clip(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def one_line(text: str) -> str:
    return " ".join(text.split())
