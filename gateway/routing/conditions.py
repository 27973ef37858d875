"""Route conditions: compiled once at config load, evaluated on every webhook.

A path that finds several values holds when any of them does; a path that finds nothing
fails every operator but `exists: false`. Values of different types never compare, and
`true` is not `1`. Paths are compiled by `gateway.routing.jsonpath`.
"""

from __future__ import annotations

import fnmatch
import operator
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from gateway.config.schema import Condition
from gateway.errors import ConfigProblem
from gateway.routing.jsonpath import Getter, clip, compile_path
from gateway.routing.regex import compile_search

Test = Callable[[Any], bool]

_SHOWN_VALUES = 5


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_equal(left: Any, right: Any) -> bool:
    """Equality of JSON values: numbers compare numerically, booleans only with booleans."""
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    if _is_number(left) and _is_number(right):
        return bool(left == right)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(_json_equal, left, right))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_json_equal(value, right[key]) for key, value in left.items())
    return type(left) is type(right) and bool(left == right)


def _show(value: Any) -> str:
    if value is None or isinstance(value, bool):
        text = {None: "null", True: "true", False: "false"}[value]
    elif isinstance(value, str) and value.isprintable() and not ("'" in value and '"' in value):
        quote = '"' if "'" in value else "'"
        text = f"{quote}{value}{quote}"
    else:
        text = repr(value)
    return clip(text)


# --- operators ---------------------------------------------------------------------------


# Each operator builds its test from the operand and `fold`: with ignore_case, text is compared casefolded
# (Unicode's caseless matching: 'Straße' equals 'STRASSE'); otherwise `fold` leaves it as it is.
Fold = Callable[[str], str]


def _same(text: str) -> str:
    return text


def _folded(value: Any, fold: Fold) -> Any:
    return fold(value) if isinstance(value, str) else value


def _equals(operand: Any, fold: Fold) -> Test:
    if isinstance(operand, str):
        wanted = fold(operand)
        return lambda value: isinstance(value, str) and fold(value) == wanted
    return lambda value: _json_equal(value, operand)


def _in(operand: Any, fold: Fold) -> Test:
    if not isinstance(operand, list):
        raise ValueError(f"'in' needs a list of values, got {_show(operand)}")
    if all(isinstance(item, str) for item in operand):
        strings = frozenset(map(fold, operand))
        return lambda value: isinstance(value, str) and fold(value) in strings
    items = [_folded(item, fold) for item in operand]
    return lambda value: any(_json_equal(_folded(value, fold), item) for item in items)


def _contains(operand: Any, fold: Fold) -> Test:
    wanted = _folded(operand, fold)

    def test(value: Any) -> bool:
        if isinstance(value, str):
            return isinstance(wanted, str) and wanted in fold(value)
        return isinstance(value, list) and any(_json_equal(_folded(item, fold), wanted) for item in value)

    return test


def _matches(operand: Any, fold: Fold) -> Test:
    if not isinstance(operand, str):
        raise ValueError(f"'matches' needs a regular expression, got {_show(operand)}")
    try:
        search = compile_search(operand, any_case=fold is not _same)
    except ValueError as exc:
        raise ValueError(
            f"invalid regular expression {_show(operand)}: {exc} (RE2 syntax: no lookaround, no backreferences)"
        ) from None
    return lambda value: isinstance(value, str) and search(value)


def _glob(operand: Any, fold: Fold) -> Test:
    if not isinstance(operand, str):
        raise ValueError(f"'glob' needs a pattern such as '*@example.com', got {_show(operand)}")
    # What fnmatch.fnmatchcase does per call: Python's `re`, on a pattern fnmatch builds without nested repeats.
    match = re.compile(fnmatch.translate(fold(operand))).match
    return lambda value: isinstance(value, str) and match(fold(value)) is not None


def _ordered(compare: Callable[[Any, Any], bool], name: str) -> Callable[[Any, Fold], Test]:
    def build(operand: Any, fold: Fold) -> Test:
        if isinstance(operand, str):
            return lambda value: isinstance(value, str) and compare(value, operand)
        if _is_number(operand):
            return lambda value: _is_number(value) and compare(value, operand)
        raise ValueError(f"'{name}' needs a number or a string, got {_show(operand)}")

    return build


_TESTS: dict[str, Callable[[Any, Fold], Test]] = {
    "equals": _equals,
    "in": _in,
    "contains": _contains,
    "matches": _matches,
    "glob": _glob,
    "gt": _ordered(operator.gt, "gt"),
    "gte": _ordered(operator.ge, "gte"),
    "lt": _ordered(operator.lt, "lt"),
    "lte": _ordered(operator.le, "lte"),
}


# --- predicates --------------------------------------------------------------------------


class Predicate(ABC):
    """A compiled condition."""

    __slots__ = ()

    @abstractmethod
    def matches(self, doc: Any) -> bool:
        """Whether the condition holds on `doc`."""

    @abstractmethod
    def describe(self) -> str:
        """The condition as one line, e.g. `$.rule.type in ['label_change']`."""

    def explain(self, doc: Any) -> str | None:
        """None when the condition holds, else the first condition that failed and what it saw."""
        return None if self.matches(doc) else f"{self.describe()} failed: {self._evidence(doc)}"

    def _evidence(self, doc: Any) -> str:
        """What the condition saw in `doc`, whether it holds or not (shown under a `not`)."""
        return self.explain(doc) or "it holds"


class _Leaf(Predicate):
    __slots__ = ("_path", "_get", "_op", "_operand")

    def __init__(self, path: str, get: Getter, op: str, operand: Any) -> None:
        self._path, self._get, self._op, self._operand = path, get, op, operand

    def describe(self) -> str:
        return f"{self._path} {self._op} {_show(self._operand)}"

    def _evidence(self, doc: Any) -> str:
        values = self._get(doc)
        if not values:
            return "path yielded nothing"
        shown = ", ".join(_show(value) for value in values[:_SHOWN_VALUES])
        more = len(values) - _SHOWN_VALUES
        return f"saw {shown} and {more} more" if more > 0 else f"saw {shown}"


class _Test(_Leaf):
    __slots__ = ("_test",)

    def __init__(self, path: str, get: Getter, op: str, operand: Any, test: Test) -> None:
        super().__init__(path, get, op, operand)
        self._test = test

    def matches(self, doc: Any) -> bool:
        test = self._test
        for value in self._get(doc):
            if test(value):
                return True
        return False


class _AnyCaseTest(_Test):
    """A test with ignore_case, which says so when described."""

    __slots__ = ()

    def describe(self) -> str:
        return f"{super().describe()} (any case)"


class _Exists(_Leaf):
    __slots__ = ()

    def matches(self, doc: Any) -> bool:
        return bool(self._get(doc)) is self._operand


class _Group(Predicate):
    __slots__ = ("_children",)
    _word = ""

    def __init__(self, children: list[Predicate]) -> None:
        self._children = tuple(children)

    def describe(self) -> str:
        return f"{self._word}({', '.join(child.describe() for child in self._children)})"


class _All(_Group):
    __slots__ = ()
    _word = "all"

    def matches(self, doc: Any) -> bool:
        for child in self._children:
            if not child.matches(doc):
                return False
        return True

    def explain(self, doc: Any) -> str | None:
        for child in self._children:
            failure = child.explain(doc)
            if failure is not None:
                return failure
        return None


class _Any(_Group):
    __slots__ = ()
    _word = "any"

    def matches(self, doc: Any) -> bool:
        for child in self._children:
            if child.matches(doc):
                return True
        return False

    def explain(self, doc: Any) -> str | None:
        if self.matches(doc):
            return None
        return f"any: none of {len(self._children)} held; first: {self._children[0].explain(doc)}"


class _Not(Predicate):
    __slots__ = ("_inner",)

    def __init__(self, inner: Predicate) -> None:
        self._inner = inner

    def matches(self, doc: Any) -> bool:
        return not self._inner.matches(doc)

    def describe(self) -> str:
        return f"not ({self._inner.describe()})"

    def _evidence(self, doc: Any) -> str:
        return self._inner._evidence(doc)


# --- compiling ---------------------------------------------------------------------------


def compile_condition(cond: Condition, at: str, problems: list[ConfigProblem]) -> Predicate | None:
    """Compile `cond`, found at YAML path `at`; None if it added any problem to `problems`."""
    known = len(problems)
    predicate = _compile(cond, at, problems)
    return predicate if len(problems) == known else None


def _compile(cond: Condition, at: str, problems: list[ConfigProblem]) -> Predicate | None:
    if cond.path is not None:
        return _compile_leaf(cond, cond.path, at, problems)
    if cond.not_ is not None:
        inner = _compile(cond.not_, f"{at}.not", problems)
        return None if inner is None else _Not(inner)
    for name, group, make in (("all", cond.all, _All), ("any", cond.any, _Any)):
        if group is None:
            continue
        if not group:
            problems.append(ConfigProblem(f"{at}.{name}", f"'{name}' needs at least one condition"))
        children = [_compile(child, f"{at}.{name}[{index}]", problems) for index, child in enumerate(group)]
        compiled = [child for child in children if child is not None]
        return make(compiled) if group and len(compiled) == len(group) else None
    problems.append(ConfigProblem(at, "a condition needs 'path' with an operator, or one of all, any, not"))
    return None


def _compile_leaf(cond: Condition, path: str, at: str, problems: list[ConfigProblem]) -> Predicate | None:
    get: Getter | None = None
    try:
        get = compile_path(path)
    except ValueError as exc:
        problems.append(ConfigProblem(f"{at}.path", str(exc), hint=_path_hint(path)))
    op = cond.operators()[0]
    operand = getattr(cond, "in_" if op == "in" else op)
    try:
        make = _leaf_maker(path, op, operand, cond.ignore_case)
    except ValueError as exc:
        problems.append(ConfigProblem(f"{at}.{op}", str(exc)))
        return None
    return None if get is None else make(get)


def _leaf_maker(path: str, op: str, operand: Any, ignore_case: bool) -> Callable[[Getter], Predicate]:
    """Checks the operand now; the result builds the predicate once the path is compiled."""
    if op == "exists":
        if not isinstance(operand, bool):
            raise ValueError(f"'exists' needs true or false, got {_show(operand)}")
        return lambda get: _Exists(path, get, op, operand)
    test = _TESTS[op](operand, str.casefold if ignore_case else _same)
    leaf = _AnyCaseTest if ignore_case else _Test
    return lambda get: leaf(path, get, op, operand, test)


def _path_hint(path: str) -> str | None:
    text = path.strip()
    if not text:
        return "e.g. path: $.rule.type"
    if text.startswith("$"):
        return None
    text = text.lstrip("@")
    return f"write it as {'$' if text.startswith(('.', '[')) else '$.'}{text}"
