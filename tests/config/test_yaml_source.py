"""YAML a config may hold: hostile structure gets one problem with its line, never a traceback or a stall."""

from __future__ import annotations

import pytest

from gateway.config.yaml_source import MAX_VALUES, read_yaml


def laughs(levels: int, width: int = 10) -> str:
    """The "billion laughs": each level repeats the previous one `width` times (width ** levels values)."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * width)}]" for n in range(1, levels)]
    return "\n".join(lines) + "\nsources: {m: {}}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(laughs(10), f"aliases expand this config past {MAX_VALUES} values", id="billion-laughs"),
        pytest.param("a: &a [1, *a]\n", "line 1: an alias refers to the value that contains it", id="recursive-list"),
        pytest.param("a: &a\n  b: *a\n", "line 1: an alias refers to the value that contains it", id="recursive-map"),
        pytest.param("sources:\n  ? [a, b]\n  : {}\n", "line 2: sources: a key is a list or a mapping",
                     id="list-as-key"),
        pytest.param("x: !!python/object/apply:os.system ['true']\n",
                     "line 1: x: unsupported YAML tag '!!python/object/apply:os.system'", id="python-apply"),
        pytest.param("x: !!python/name:os.system\n", "line 1: x: unsupported YAML tag '!!python/name:os.system'",
                     id="python-name"),
        pytest.param("x: !!python/object:os.Foo {a: 1}\n", "line 1: x: unsupported YAML tag '!!python/object:os.Foo'",
                     id="python-object-mapping"),
        pytest.param("? !!python/name:os.system\n: 1\n", "line 1: unsupported YAML tag '!!python/name:os.system'",
                     id="python-key"),
        pytest.param("x: !!set {a, b}\n", "line 1: x: unsupported YAML tag '!!set'", id="set"),
        pytest.param("sources:\n\tm: {}\n", "line 2: a tab in the indentation; indent with spaces", id="tab"),
        pytest.param("sources:\n  m: {}\n\t\n  n: 1\n", "line 3: a tab in the indentation; indent with spaces",
                     id="tab-on-a-blank-line"),
        pytest.param("x: " + "[" * 3000 + "]" * 3000 + "\n", "line 1: the YAML is nested too deeply", id="deep"),
    ],
)
def test_hostile_yaml_is_one_problem(text: str, expected: str) -> None:
    document = read_yaml(text, environ={})
    problems = [str(problem) for problem in document.problems]
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_aliases_within_the_budget_still_work() -> None:
    document = read_yaml("base: &b {timeout: 2s}\nuse: [*b, *b]\nmerged: {<<: *b, url: x}\n", environ={})
    assert document.problems == []
    assert document.data["use"] == [{"timeout": "2s"}, {"timeout": "2s"}]
    assert document.data["merged"] == {"timeout": "2s", "url": "x"}


def test_each_value_remembers_the_variables_it_was_read_from() -> None:
    document = read_yaml("a: ${ONE}-${TWO:-2}\nb: plain\n", environ={"ONE": "1"})
    assert document.data == {"a": "1-2", "b": "plain"}
    assert document.variables == {"a": ["ONE", "TWO"]}
