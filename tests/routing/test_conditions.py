"""Route conditions: operators, paths, explanations, config problems, real payloads."""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from jsonpath_ng.ext.parser import parse as parse_jsonpath

from gateway.config.schema import Condition
from gateway.errors import ConfigProblem
from gateway.routing.conditions import Predicate, compile_condition
from gateway.routing.jsonpath import _fast_getter, compile_path
from gateway.routing.payload import payload_view
from tests.conftest import FIXTURES

FIXTURE_NAMES = sorted(path.name for path in FIXTURES.glob("*.json"))


def test_payload_fixtures_live_in_the_repo() -> None:
    # A glob over a missing folder would quietly turn the fixture-driven tests below into none.
    assert len(FIXTURE_NAMES) >= 9, FIXTURES

DOC: dict[str, Any] = {
    "s": "incoming_email",
    "n": 3,
    "f": 2.5,
    "t": True,
    "z": None,
    "tags": ["vip", "urgent"],
    "nums": [1, 2, 3],
    "labels": [{"name": "Customers"}, {"name": "VIP"}],
    "empty": [],
    "obj": {"a": 1},
}


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def fixture_docs() -> list[Any]:
    return [load(name) for name in FIXTURE_NAMES]


def compiled(spec: dict[str, Any]) -> Predicate:
    problems: list[ConfigProblem] = []
    predicate = compile_condition(Condition.model_validate(spec), "when", problems)
    assert problems == []
    assert predicate is not None
    return predicate


def problems_of(spec: dict[str, Any]) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    assert compile_condition(Condition.model_validate(spec), "routes[2].when", problems) is None
    return problems


def jsonpath_ng_values(expr: str, doc: Any) -> list[Any]:
    return [match.value for match in parse_jsonpath(expr).find(doc)]


# --- operators -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({"path": "$.s", "equals": "incoming_email"}, True, id="equals-hit"),
        pytest.param({"path": "$.s", "equals": "outgoing_email"}, False, id="equals-miss"),
        pytest.param({"path": "$.n", "equals": 3.0}, True, id="equals-int-vs-float"),
        pytest.param({"path": "$.f", "equals": 2.5}, True, id="equals-float"),
        pytest.param({"path": "$.n", "equals": "3"}, False, id="equals-number-vs-string"),
        pytest.param({"path": "$.t", "equals": True}, True, id="equals-true"),
        pytest.param({"path": "$.t", "equals": 1}, False, id="equals-true-is-not-1"),
        pytest.param({"path": "$.nums[0]", "equals": True}, False, id="equals-1-is-not-true"),
        pytest.param({"path": "$.z", "equals": None}, True, id="equals-null"),
        pytest.param({"path": "$.missing", "equals": None}, False, id="equals-null-on-missing"),
        pytest.param({"path": "$.nums", "equals": [1, 2, 3.0]}, True, id="equals-list"),
        pytest.param({"path": "$.nums", "equals": [True, 2, 3]}, False, id="equals-list-bool-inside"),
        pytest.param({"path": "$.obj", "equals": {"a": 1.0}}, True, id="equals-object"),
        pytest.param({"path": "$.obj", "equals": {"a": 1, "b": 2}}, False, id="equals-object-miss"),
        pytest.param({"path": "$.s", "in": ["label_change", "incoming_email"]}, True, id="in-hit"),
        pytest.param({"path": "$.s", "in": ["label_change"]}, False, id="in-miss"),
        pytest.param({"path": "$.n", "in": [1, 3.0]}, True, id="in-numbers"),
        pytest.param({"path": "$.n", "in": ["3"]}, False, id="in-number-vs-string"),
        pytest.param({"path": "$.t", "in": [1, 2]}, False, id="in-true-is-not-1"),
        pytest.param({"path": "$.z", "in": ["x", None]}, True, id="in-null"),
        pytest.param({"path": "$.tags", "in": ["vip"]}, False, id="in-list-is-not-its-items"),
        pytest.param({"path": "$.s", "contains": "email"}, True, id="contains-substring"),
        pytest.param({"path": "$.s", "contains": "sms"}, False, id="contains-substring-miss"),
        pytest.param({"path": "$.s", "contains": 1}, False, id="contains-number-in-string"),
        pytest.param({"path": "$.tags", "contains": "vip"}, True, id="contains-list"),
        pytest.param({"path": "$.tags", "contains": "vi"}, False, id="contains-list-is-not-substring"),
        pytest.param({"path": "$.nums", "contains": 2.0}, True, id="contains-list-number"),
        pytest.param({"path": "$.nums", "contains": True}, False, id="contains-list-true-is-not-1"),
        pytest.param({"path": "$.n", "contains": 3}, False, id="contains-on-number"),
        pytest.param({"path": "$.obj", "contains": "a"}, False, id="contains-on-object"),
        pytest.param({"path": "$.s", "matches": "^incoming_"}, True, id="matches-hit"),
        pytest.param({"path": "$.s", "matches": "email$"}, True, id="matches-searches"),
        pytest.param({"path": "$.s", "matches": "^outgoing"}, False, id="matches-miss"),
        pytest.param({"path": "$.n", "matches": "3"}, False, id="matches-on-number"),
        pytest.param({"path": "$.s", "glob": "incoming_*"}, True, id="glob-hit"),
        pytest.param({"path": "$.s", "glob": "*_sms"}, False, id="glob-miss"),
        pytest.param({"path": "$.s", "glob": "INCOMING_*"}, False, id="glob-is-case-sensitive"),
        pytest.param({"path": "$.s", "glob": "incoming"}, False, id="glob-matches-whole-value"),
        pytest.param({"path": "$.n", "glob": "3"}, False, id="glob-on-number"),
        pytest.param({"path": "$.s", "exists": True}, True, id="exists-true-hit"),
        pytest.param({"path": "$.missing", "exists": True}, False, id="exists-true-miss"),
        pytest.param({"path": "$.missing", "exists": False}, True, id="exists-false-hit"),
        pytest.param({"path": "$.s", "exists": False}, False, id="exists-false-miss"),
        pytest.param({"path": "$.z", "exists": True}, True, id="exists-null-is-found"),
        pytest.param({"path": "$.empty", "exists": True}, True, id="exists-empty-list-is-found"),
        pytest.param({"path": "$.empty[*]", "exists": False}, True, id="exists-false-no-items"),
        pytest.param({"path": "$.n", "gt": 2}, True, id="gt-hit"),
        pytest.param({"path": "$.n", "gt": 3}, False, id="gt-miss"),
        pytest.param({"path": "$.n", "gte": 3.0}, True, id="gte-hit"),
        pytest.param({"path": "$.n", "gte": 3.5}, False, id="gte-miss"),
        pytest.param({"path": "$.f", "lt": 3}, True, id="lt-hit"),
        pytest.param({"path": "$.n", "lt": 3}, False, id="lt-miss"),
        pytest.param({"path": "$.n", "lte": 3}, True, id="lte-hit"),
        pytest.param({"path": "$.f", "lte": 2}, False, id="lte-miss"),
        pytest.param({"path": "$.s", "gt": "a"}, True, id="gt-strings"),
        pytest.param({"path": "$.s", "lt": "a"}, False, id="lt-strings"),
        pytest.param({"path": "$.s", "gt": 1}, False, id="gt-string-vs-number"),
        pytest.param({"path": "$.n", "lt": "9"}, False, id="lt-number-vs-string"),
        pytest.param({"path": "$.z", "lt": 1}, False, id="lt-null"),
        pytest.param({"path": "$.t", "gt": 0}, False, id="gt-bool-is-not-a-number"),
        pytest.param({"path": "$.nums", "gt": 0}, False, id="gt-list"),
    ],
)
def test_operator(spec: dict[str, Any], expected: bool) -> None:
    predicate = compiled(spec)
    assert predicate.matches(DOC) is expected
    assert (predicate.explain(DOC) is None) is expected


def test_glob_agrees_with_fnmatchcase() -> None:
    patterns = ["*@example.com", "a?c", "[ab]*", "[!a]*", "*.[ch]", "x[*]y", "", "*"]
    values = ["me@example.com", "me@example.org", "abc", "bcd", "main.c", "x*y", "xzy", "", "A@example.com"]
    for pattern in patterns:
        predicate = compiled({"path": "$.v", "glob": pattern})
        for value in values:
            assert predicate.matches({"v": value}) is fnmatch.fnmatchcase(value, pattern), (pattern, value)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({"path": "$.labels[*].name", "equals": "VIP"}, True, id="any-value-equals"),
        pytest.param({"path": "$.labels[*].name", "equals": "Gold"}, False, id="no-value-equals"),
        pytest.param({"path": "$.labels[*].name", "matches": "^C"}, True, id="any-value-matches"),
        pytest.param({"path": "$.nums[*]", "gt": 2}, True, id="any-value-gt"),
        pytest.param({"path": "$.nums[*]", "gt": 3}, False, id="no-value-gt"),
        pytest.param({"path": "$.tags[*]", "in": ["urgent"]}, True, id="any-value-in"),
        pytest.param({"path": "$.*", "equals": 2.5}, True, id="wildcard-on-object"),
        pytest.param({"path": "$.labels[*].name", "exists": True}, True, id="several-values-exist"),
    ],
)
def test_multi_valued_path_holds_when_any_value_does(spec: dict[str, Any], expected: bool) -> None:
    assert compiled(spec).matches(DOC) is expected


EVERY_OPERATOR = [
    pytest.param({"equals": None}, id="equals-null"),
    pytest.param({"equals": "x"}, id="equals"),
    pytest.param({"in": [None, "x", 1]}, id="in"),
    pytest.param({"contains": "x"}, id="contains"),
    pytest.param({"matches": ".*"}, id="matches-anything"),
    pytest.param({"glob": "*"}, id="glob-anything"),
    pytest.param({"exists": True}, id="exists-true"),
    pytest.param({"gt": 0}, id="gt"),
    pytest.param({"gte": ""}, id="gte"),
    pytest.param({"lt": 9}, id="lt"),
    pytest.param({"lte": "z"}, id="lte"),
]


@pytest.mark.parametrize("operator", EVERY_OPERATOR)
@pytest.mark.parametrize("path", ["$.missing", "$.empty[*]", "$.s.deeper", "$.nums[7]", "$.labels[*].nope"])
def test_path_yielding_nothing_fails_every_operator(operator: dict[str, Any], path: str) -> None:
    assert compiled({"path": path, **operator}).matches(DOC) is False
    assert compiled({"path": path, "exists": False}).matches(DOC) is True


ODD_VALUES = [None, True, False, 0, -1, 1.5, float("nan"), "", "x", "3", [], [None], [1, "1"], {}, {"v": [1]}]


@pytest.mark.parametrize(
    "operator",
    [*EVERY_OPERATOR, pytest.param({"contains": 1}, id="contains-number"), pytest.param({"gt": "a"}, id="gt-str")],
)
def test_type_mismatches_never_raise(operator: dict[str, Any]) -> None:
    predicate = compiled({"path": "$.v", **operator})
    for value in ODD_VALUES:
        result = predicate.matches({"v": value})
        assert isinstance(result, bool)
        assert (predicate.explain({"v": value}) is None) is result


# --- all, any, not ---------------------------------------------------------------------------

YES = {"path": "$.s", "equals": "incoming_email"}
NO = {"path": "$.s", "equals": "outgoing_email"}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({"all": [YES, YES]}, True, id="all-hold"),
        pytest.param({"all": [YES, NO]}, False, id="all-one-fails"),
        pytest.param({"any": [NO, YES]}, True, id="any-one-holds"),
        pytest.param({"any": [NO, NO]}, False, id="any-none-holds"),
        pytest.param({"not": YES}, False, id="not-holding"),
        pytest.param({"not": NO}, True, id="not-failing"),
        pytest.param({"not": {"not": YES}}, True, id="not-not"),
        pytest.param({"all": [{"any": [NO, YES]}, {"not": NO}]}, True, id="nested-holds"),
        pytest.param({"all": [{"any": [NO, YES]}, {"not": YES}]}, False, id="nested-fails"),
        pytest.param({"any": [{"all": [YES, NO]}, {"not": {"any": [NO]}}]}, True, id="nested-any-of-all-and-not"),
    ],
)
def test_groups(spec: dict[str, Any], expected: bool) -> None:
    predicate = compiled(spec)
    assert predicate.matches(DOC) is expected
    assert (predicate.explain(DOC) is None) is expected


# --- explain ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "doc", "expected"),
    [
        pytest.param(
            {"path": "$.rule.type", "in": ["label_change"]},
            load("incoming-email-with-labels.json"),
            "$.rule.type in ['label_change'] failed: saw 'incoming_email'",
            id="in",
        ),
        pytest.param(
            {"path": "$.message.from_field.address", "matches": r"@example\.com$"},
            load("assignee-change.json"),
            r"$.message.from_field.address matches '@example\.com$' failed: path yielded nothing",
            id="nothing",
        ),
        pytest.param(
            {"not": {"path": "$.rule.type", "equals": "incoming_email"}},
            load("incoming-email-with-labels.json"),
            "not ($.rule.type equals 'incoming_email') failed: saw 'incoming_email'",
            id="not",
        ),
        pytest.param(
            {"path": "$.conversation.shared_labels[*].name", "equals": "Gold"},
            load("incoming-email-with-labels.json"),
            "$.conversation.shared_labels[*].name equals 'Gold' failed: saw 'Customers', 'VIP'",
            id="several-values",
        ),
        pytest.param(
            {"all": [YES, {"path": "$.n", "gt": 5}, NO]},
            DOC,
            "$.n gt 5 failed: saw 3",
            id="all-first-failure",
        ),
        pytest.param(
            {"any": [NO, {"path": "$.missing", "exists": True}]},
            DOC,
            "any: none of 2 held; first: $.s equals 'outgoing_email' failed: saw 'incoming_email'",
            id="any",
        ),
        pytest.param(
            {"not": {"any": [NO, YES]}},
            DOC,
            "not (any($.s equals 'outgoing_email', $.s equals 'incoming_email')) failed: it holds",
            id="not-of-group",
        ),
        pytest.param(
            {"not": {"not": NO}},
            DOC,
            "not (not ($.s equals 'outgoing_email')) failed: saw 'incoming_email'",
            id="not-not",
        ),
        pytest.param(
            {"path": "$.s", "exists": False},
            DOC,
            "$.s exists false failed: saw 'incoming_email'",
            id="exists-false",
        ),
        pytest.param(
            {"path": "$.conversation.subject", "equals": "x"},
            load("null-fields.json"),
            "$.conversation.subject equals 'x' failed: saw null",
            id="null-value",
        ),
        pytest.param(
            {"path": "$.v[*]", "equals": 0},
            {"v": [1, 2, 3, 4, 5, 6, 7]},
            "$.v[*] equals 0 failed: saw 1, 2, 3, 4, 5 and 2 more",
            id="many-values",
        ),
        pytest.param(
            {"path": "$.v", "in": [True, None]},
            {"v": {"k": [1]}},
            "$.v in [True, None] failed: saw {'k': [1]}",
            id="structures",
        ),
    ],
)
def test_explain(spec: dict[str, Any], doc: Any, expected: str) -> None:
    assert compiled(spec).explain(doc) == expected


def test_explain_truncates_long_values() -> None:
    doc = load("incoming-email-with-labels.json")
    preview = doc["message"]["preview"]
    explanation = compiled({"path": "$.message.preview", "equals": "x"}).explain(doc)
    assert explanation is not None
    seen = explanation.split("failed: saw ", 1)[1]
    assert len(preview) > 80
    assert len(seen) == 80
    assert seen.endswith("...")
    assert preview.startswith(seen[1:-3])


def test_explain_is_none_when_the_condition_holds() -> None:
    assert compiled({"all": [YES, {"not": NO}]}).explain(DOC) is None


# --- config problems -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "where", "message", "hint"),
    [
        pytest.param(
            {"path": "rule.type", "equals": "x"},
            "routes[2].when.path",
            "JSONPath 'rule.type' does not start with '$'",
            "write it as $.rule.type",
            id="missing-dollar",
        ),
        pytest.param(
            {"path": ".rule.type", "equals": "x"},
            "routes[2].when.path",
            "JSONPath '.rule.type' does not start with '$'",
            "write it as $.rule.type",
            id="missing-dollar-before-dot",
        ),
        pytest.param(
            {"path": "['rule']", "equals": "x"},
            "routes[2].when.path",
            "JSONPath \"['rule']\" does not start with '$'",
            "write it as $['rule']",
            id="missing-dollar-before-bracket",
        ),
        pytest.param(
            {"path": " ", "exists": True},
            "routes[2].when.path",
            "the JSONPath is empty",
            "e.g. path: $.rule.type",
            id="empty-path",
        ),
        pytest.param(
            {"path": "$.a[", "equals": "x"},
            "routes[2].when.path",
            "invalid JSONPath '$.a[': it ends too early (an unclosed bracket, or a trailing '.'?)",
            None,
            id="ends-early",
        ),
        pytest.param(
            {"path": "$.rule type", "equals": "x"},
            "routes[2].when.path",
            "invalid JSONPath '$.rule type': unexpected 'type' after '$.rule '",
            None,
            id="unexpected-token",
        ),
        pytest.param(
            {"path": "$.rule.type#", "equals": "x"},
            "routes[2].when.path",
            "invalid JSONPath '$.rule.type#': unexpected character '#' after '$.rule.type'",
            None,
            id="unexpected-character",
        ),
        pytest.param(
            {"path": "$['rule]", "equals": "x"},
            "routes[2].when.path",
            "invalid JSONPath \"$['rule]\": a quote is not closed",
            None,
            id="unclosed-quote",
        ),
        pytest.param(
            {"path": "$.a | $.b", "equals": "x"},
            "routes[2].when.path",
            "JSONPath '$.a | $.b' uses deprecated syntax: The `|` (union) operator is deprecated. "
            "It will be removed in version 2.0.0.",
            None,
            id="deprecated-union",
        ),
        pytest.param(
            {"path": "$.s", "matches": "(unclosed"},
            "routes[2].when.matches",
            "invalid regular expression '(unclosed': missing ): (unclosed (RE2 syntax: no lookaround, no "
            "backreferences)",
            None,
            id="bad-regex",
        ),
        pytest.param(
            {"path": "$.s", "matches": "(?<!no-reply)@"},
            "routes[2].when.matches",
            "invalid regular expression '(?<!no-reply)@': invalid perl operator: (?<! (RE2 syntax: no lookaround, no "
            "backreferences)",
            None,
            id="lookaround-is-not-re2",
        ),
        pytest.param(
            {"path": '$.labels[?(@.name =~ "^(a+)+$")]', "exists": True},
            "routes[2].when.path",
            "JSONPath '$.labels[?(@.name =~ \"^(a+)+$\")]' filters with a regular expression (=~), which would run "
            "in Python's backtracking engine: select the values with the path and test them with 'matches' (RE2, "
            "linear time)",
            None,
            id="regex-filter-in-a-path",
        ),
        pytest.param(
            {"path": "$.s", "in": None},
            "routes[2].when.in",
            "'in' needs a list of values, got null",
            None,
            id="in-null",
        ),
        pytest.param(
            {"path": "$.s", "exists": None},
            "routes[2].when.exists",
            "'exists' needs true or false, got null",
            None,
            id="exists-null",
        ),
        pytest.param(
            {"path": "$.s", "glob": None},
            "routes[2].when.glob",
            "'glob' needs a pattern such as '*@example.com', got null",
            None,
            id="glob-null",
        ),
        pytest.param(
            {"path": "$.s", "gte": [1]},
            "routes[2].when.gte",
            "'gte' needs a number or a string, got [1]",
            None,
            id="gte-list",
        ),
        pytest.param(
            {"any": []},
            "routes[2].when.any",
            "'any' needs at least one condition",
            None,
            id="empty-any",
        ),
    ],
)
def test_problem(spec: dict[str, Any], where: str, message: str, hint: str | None) -> None:
    assert problems_of(spec) == [ConfigProblem(path=where, message=message, hint=hint)]


def test_every_problem_is_collected_with_its_path() -> None:
    spec = {
        "all": [
            {"path": "$.ok", "equals": 1},
            {"path": "rule.type", "matches": "[z-a]"},
            {"any": [{"path": "$.x", "equals": 1}, {"not": {"path": "$.a[?(@.b ==)]", "exists": True}}]},
            {"not": {"all": [{"path": "$.y", "glob": None}]}},
        ]
    }
    assert [problem.path for problem in problems_of(spec)] == [
        "routes[2].when.all[1].path",
        "routes[2].when.all[1].matches",
        "routes[2].when.all[2].any[1].not.path",
        "routes[2].when.all[3].not.all[0].glob",
    ]


@pytest.mark.parametrize(
    "path",
    ["$.a[?(@.b ==)]", "$..", "$.a]", "$.a[?(@.x == VIP)]", "$.`nope`", "$.a[1:2:", "$.a.'b", "$.a\n[", "$.(a"],
)
def test_path_problems_are_one_clean_line(path: str) -> None:
    [problem] = problems_of({"path": path, "exists": True})
    assert problem.path == "routes[2].when.path"
    assert repr(path) in problem.message
    assert "\n" not in str(problem)
    for noise in ("Traceback", "Parse error", "Error on line", "near token", "Exception"):
        assert noise not in problem.message


def test_problems_already_listed_do_not_fail_a_good_condition() -> None:
    earlier = ConfigProblem(path="routes[0].when.path", message="from another route")
    problems = [earlier]
    predicate = compile_condition(Condition.model_validate(YES), "routes[1].when", problems)
    assert predicate is not None
    assert problems == [earlier]


# --- paths -----------------------------------------------------------------------------------


def test_compile_path_raises_one_line_value_error() -> None:
    with pytest.raises(ValueError, match=r"^invalid JSONPath '\$\.a\[': it ends too early") as raised:
        compile_path("$.a[")
    assert "\n" not in str(raised.value)
    with pytest.raises(ValueError, match="does not start with"):
        compile_path("rule.type")


def _expressions_from(value: Any, prefix: str = "$", depth: int = 0) -> Iterator[str]:
    """Every path into `value`, as written by hand: dotted names, indices."""
    yield prefix
    if depth >= 6:
        return
    if isinstance(value, dict):
        for key, child in value.items():
            simple = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) and key not in ("where", "wherenot")
            yield from _expressions_from(child, f"{prefix}.{key}" if simple else f"{prefix}[{key!r}]", depth + 1)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _expressions_from(child, f"{prefix}[{index}]", depth + 1)


def _generated_expressions() -> list[str]:
    found: set[str] = set()
    for name in FIXTURE_NAMES:
        for expr in _expressions_from(load(name)):
            found.update({expr, re.sub(r"\[\d+\]", "[*]", expr), re.sub(r"\[\d+\]", "[-1]", expr)})
            found.add(re.sub(r"\.[a-z_]+$", ".*", expr))
    return sorted(found)


HAND_WRITTEN = [
    "$",
    "$.*",
    "$[*]",
    "$.*.*",
    "$.*.id",
    "$[*][*]",
    "$['rule']['type']",
    "$[\"rule\"].type",
    "$['rule', 'conversation'].id",
    "$['rule','nope','rule'].type",
    "$.rule[*]",
    "$.rule[0]",
    "$.rule.type[0]",
    "$.rule.type[*]",
    "$.rule.type.x",
    "$.conversation.shared_labels.name",
    "$.conversation.shared_labels[0,1,0].name",
    "$.conversation.shared_labels[-1].name",
    "$.conversation.shared_labels[-3].name",
    "$.conversation.shared_labels[9].name",
    "$.conversation.users[*].*",
    "$.conversation.organization.name",
    "$.conversation.organization[*]",
    "$.message.to_fields[0, 1].address",
    "$.latest_message.from_field.address",
    "$.comment.task.assignees[*].email",
    "$.comment.mentions[*].*",
    "$.a-b",
    "$['*']",
    "$['a b'].c",
    "$[0]",
    "$.0",
]

ODD_DOCS: list[Any] = [
    {"*": 1, "a b": {"c": 2}, "a-b": [3], "0": "zero", "rule": None, "conversation": {"shared_labels": "x"}},
    [{"rule": {"type": "a"}}, [1, [2, 3]], "s", None],
    {"rule": {"type": ["x", "y"]}, "conversation": {"shared_labels": [[{"name": 1}], {"name": 2}]}},
    None,
    "text",
    7,
]

FAST_EXPRESSIONS = [*HAND_WRITTEN, *(expr for expr in _generated_expressions() if expr not in HAND_WRITTEN)]


@pytest.mark.parametrize("expr", FAST_EXPRESSIONS)
def test_fast_path_agrees_with_jsonpath_ng(expr: str, fixture_docs: list[Any]) -> None:
    parsed = parse_jsonpath(expr)
    fast = _fast_getter(parsed)
    assert fast is not None, "expected the direct walk for this expression"
    get = compile_path(expr)
    for doc in [*fixture_docs, *ODD_DOCS]:
        expected = [match.value for match in parsed.find(doc)]
        assert fast(doc) == expected
        assert get(doc) == expected


@pytest.mark.parametrize(
    "expr",
    [
        "$..name",
        "$.conversation..address",
        "$.conversation.shared_labels[?(@.name == 'VIP')].id",
        "$.conversation.users[?(@.assigned == true)].email",
        "$.conversation.users[1:]",
        "$.conversation.users[:1].name",
        "$.conversation.shared_labels.`len`",
        "$.conversation.users[/name].name",
    ],
)
def test_other_expressions_go_to_jsonpath_ng(expr: str, fixture_docs: list[Any]) -> None:
    assert _fast_getter(parse_jsonpath(expr)) is None
    get = compile_path(expr)
    for doc in fixture_docs:
        assert get(doc) == jsonpath_ng_values(expr, doc)


def test_a_path_jsonpath_ng_cannot_evaluate_yields_nothing() -> None:
    doc = {"a": [{"x": "s"}, {"x": 2}]}
    with pytest.raises(TypeError):
        jsonpath_ng_values("$.a[/x]", doc)
    assert compile_path("$.a[/x]")(doc) == []
    assert compiled({"path": "$.a[/x]", "exists": False}).matches(doc) is True


# --- real payloads ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "rule_type"),
    [
        ("assignee-change.json", "conversation_assignee_change"),
        ("incoming-email-with-labels.json", "incoming_email"),
        ("incoming-sms.json", "incoming_sms_message"),
        ("label-change.json", "label_change"),
        ("new-comment-task.json", "new_comment"),
        ("new-comment.json", "new_comment"),
        ("null-fields.json", "incoming_email"),
        ("outgoing-email.json", "outgoing_email"),
        ("team-change.json", "team_change"),
    ],
)
def test_rule_type_of_each_fixture(name: str, rule_type: str) -> None:
    doc = load(name)
    assert compiled({"path": "$.rule.type", "equals": rule_type}).matches(doc)
    others = compiled({"path": "$.rule.type", "in": ["nope", rule_type + "_not"]})
    assert others.explain(doc) == f"$.rule.type in ['nope', '{rule_type}_not'] failed: saw '{rule_type}'"


VIP = {"path": "$.conversation.shared_labels[*].name", "equals": "VIP"}
README_EXAMPLE = {
    "all": [
        {"path": "$.rule.type", "in": ["incoming_email", "label_change"]},
        {
            "any": [
                VIP,
                {"path": "$.conversation.organization.name", "contains": "Harbor"},
            ]
        },
        {"not": {"path": "$.message.from_field.address", "matches": r"@example\.com$"}},
    ]
}


@pytest.mark.parametrize(
    ("spec", "name", "expected"),
    [
        pytest.param(VIP, "incoming-email-with-labels.json", True, id="vip-label"),
        pytest.param(VIP, "new-comment.json", True, id="vip-on-comment"),
        pytest.param(VIP, "label-change.json", False, id="other-labels"),
        pytest.param(VIP, "null-fields.json", False, id="no-labels"),
        pytest.param(
            {"path": "$.message.from_field.address", "glob": "*@example.org"},
            "label-change.json",
            True,
            id="message-from-latest-message",
        ),
        pytest.param(
            {"path": "$.conversation.organization.name", "exists": True}, "null-fields.json", False, id="null-parent"
        ),
        pytest.param({"path": "$.conversation.messages_count", "gte": 3}, "incoming-sms.json", True, id="count-gte"),
        pytest.param({"path": "$.comment.task", "exists": True}, "new-comment.json", True, id="null-task-is-found"),
        pytest.param(
            {"not": {"path": "$.comment.task", "equals": None}}, "new-comment-task.json", True, id="task-not-null"
        ),
        pytest.param({"not": {"path": "$.comment.task", "equals": None}}, "new-comment.json", False, id="task-null"),
        pytest.param(
            {"path": "$.conversation.users[?(@.assigned == true)].name", "equals": "Alma Reyes"},
            "incoming-email-with-labels.json",
            True,
            id="filter",
        ),
        pytest.param(README_EXAMPLE, "incoming-email-with-labels.json", True, id="readme-example"),
        pytest.param(README_EXAMPLE, "label-change.json", True, id="readme-example-label-change"),
        pytest.param(README_EXAMPLE, "outgoing-email.json", False, id="readme-example-outgoing"),
        pytest.param(README_EXAMPLE, "null-fields.json", False, id="readme-example-no-org"),
    ],
)
def test_fixture_payloads(spec: dict[str, Any], name: str, expected: bool) -> None:
    predicate = compiled(spec)
    view = payload_view(load(name))
    assert predicate.matches(view) is expected
    assert (predicate.explain(view) is None) is expected


# --- ignore_case ---------------------------------------------------------------------------

MIXED: dict[str, Any] = {
    "from": "Alma@Example-Support.COM",
    "tags": ["VIP", "Urgent"],
    "street": "Straße",
    "n": 3,
}


@pytest.mark.parametrize(
    ("spec", "sensitive", "any_case"),
    [
        pytest.param({"path": "$.from", "glob": "*@example-support.com"}, False, True, id="glob"),
        pytest.param({"path": "$.from", "glob": "*@EXAMPLE-support.com"}, False, True, id="glob-pattern-folded"),
        pytest.param({"path": "$.from", "equals": "alma@example-support.com"}, False, True, id="equals"),
        pytest.param({"path": "$.from", "in": ["x", "ALMA@EXAMPLE-SUPPORT.COM"]}, False, True, id="in"),
        pytest.param({"path": "$.from", "in": [1, "alma@example-support.com"]}, False, True, id="in-mixed-types"),
        pytest.param({"path": "$.from", "contains": "example-SUPPORT"}, False, True, id="contains-text"),
        pytest.param({"path": "$.tags", "contains": "vip"}, False, True, id="contains-list"),
        pytest.param({"path": "$.tags[*]", "equals": "urgent"}, False, True, id="any-value"),
        pytest.param({"path": "$.from", "matches": "^alma@example"}, False, True, id="matches"),
        pytest.param({"path": "$.street", "equals": "STRASSE"}, False, True, id="unicode-caseless"),
        pytest.param({"path": "$.from", "glob": "*@example.com"}, False, False, id="still-a-miss"),
        pytest.param({"path": "$.n", "equals": 3}, True, True, id="numbers-as-before"),
        pytest.param({"path": "$.n", "in": ["3", 3.0]}, True, True, id="in-numbers-as-before"),
        pytest.param({"path": "$.n", "equals": "3"}, False, False, id="a-number-is-not-text"),
    ],
)
def test_ignore_case(spec: dict[str, Any], sensitive: bool, any_case: bool) -> None:
    assert compiled(spec).matches(MIXED) is sensitive
    assert compiled({**spec, "ignore_case": True}).matches(MIXED) is any_case


def test_ignore_case_is_said_when_explained() -> None:
    predicate = compiled({"not": {"path": "$.from", "glob": "*@example-support.com", "ignore_case": True}})
    assert predicate.explain(MIXED) == (
        "not ($.from glob '*@example-support.com' (any case)) failed: saw 'Alma@Example-Support.COM'"
    )


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"path": "$.n", "gt": 1, "ignore_case": True}, id="gt"),
        pytest.param({"path": "$.n", "exists": True, "ignore_case": True}, id="exists"),
        pytest.param({"any": [{"path": "$.n", "equals": 3}], "ignore_case": True}, id="group"),
    ],
)
def test_ignore_case_only_beside_a_text_operator(spec: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="'ignore_case' goes with equals, in, contains, glob, matches"):
        Condition.model_validate(spec)
