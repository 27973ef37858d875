"""The render budget: what a template may cost in time and output, checked where the work happens."""

from __future__ import annotations

from typing import Any

import pytest
from jinja2 import UndefinedError

from gateway.errors import RenderError
from gateway.routing.sandbox import OverBudget, RenderLimits, budget
from gateway.routing.template_env import ENV, run

TIGHT = RenderLimits(timeout_s=0.2, max_bytes=10_000)
TOO_LONG = "rendering took longer than the 0.2 s allowed (server.render_timeout)"
TOO_BIG = "rendering made more than the 10000 bytes allowed (server.render_max_bytes)"


def render(source: str, limits: RenderLimits = TIGHT, **names: Any) -> str:
    with budget(limits):
        return run(ENV.from_string(source), {**ENV.globals, **names})


@pytest.mark.parametrize(
    ("source", "names", "reason"),
    [
        pytest.param("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", {},
                     TOO_LONG, id="nested-loops-writing-nothing"),
        pytest.param("{% for a in xs %}{% for b in xs %}{% endfor %}{% endfor %}", {"xs": [0] * 100_000},
                     TOO_LONG, id="loops-over-a-payload-list"),
        pytest.param("{% macro spin(n) %}{% for i in range(10) %}{{ spin(n + 1) if n < 7 else '' }}{% endfor %}"
                     "{% endmacro %}{{ spin(0) }}", {}, TOO_LONG, id="macros-calling-macros"),
        pytest.param("{{ 'a' * n }}", {"n": 10**12}, TOO_BIG, id="string-times-a-payload-number"),
        pytest.param("{{ n * [1] }}", {"n": 10**12}, TOO_BIG, id="payload-number-times-a-list"),
        pytest.param("{{ 10 ** n }}", {"n": 10**9}, TOO_BIG, id="huge-power"),
        pytest.param("{{ s + s }}", {"s": "x" * 6000}, TOO_BIG, id="concatenation-with-plus"),
        pytest.param("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
                     {}, TOO_BIG, id="doubling-with-tilde"),
        pytest.param("{% for i in range(100000) %}{{ i }}{% endfor %}", {}, TOO_BIG, id="output-streams-past-the-cap"),
        pytest.param("{{ 'x' | center(n) }}", {"n": 50_000}, TOO_BIG, id="a-filter-result"),
        pytest.param("{{ '{:>{w}}'.format('x', w=n) }}", {"n": 50_000}, TOO_BIG, id="a-method-result"),
        pytest.param("{{ '%s%s' % (s, s) }}", {"s": "x" * 6000}, TOO_BIG, id="percent-formatting"),
    ],
)
def test_a_render_over_budget_stops_with_the_reason(source: str, names: dict[str, Any], reason: str) -> None:
    with pytest.raises(OverBudget) as caught:
        render(source, **names)
    assert str(caught.value) == reason
    assert isinstance(caught.value, RenderError)  # so ingest stores a dead letter with it


@pytest.mark.parametrize(
    ("source", "names", "expected"),
    [
        pytest.param("{% for x in xs %}{{ loop.index }}/{{ loop.length }}{{ '!' if loop.last }} {% endfor %}",
                     {"xs": "abc"}, "1/3 2/3 3/3! ", id="loop-variables-still-work"),
        pytest.param("{% for x in xs %}{{ x }}{% else %}none{% endfor %}", {"xs": []}, "none", id="for-else"),
        pytest.param("{{ labels | map(attribute='name') | join(', ') }}", {"labels": [{"name": "VIP"}, {"name": "B"}]},
                     "VIP, B", id="filters"),
        pytest.param("{{ at * 1000 }} {{ 2 ** 10 }} {{ 'ab' * 3 }} {{ a ~ b }}", {"at": 17, "a": "x", "b": 1},
                     "17000 1024 ababab x1", id="operators"),
        pytest.param("{{ 'x' * 10000 }}", {}, "x" * 10_000, id="exactly-the-cap"),
    ],
)
def test_renders_within_budget_are_unchanged(source: str, names: dict[str, Any], expected: str) -> None:
    assert render(source, **names) == expected


def test_lipsum_is_gone() -> None:
    """lipsum(n) writes n paragraphs in one call that no check could stop."""
    with pytest.raises(UndefinedError, match="'lipsum' is undefined"):
        render("{{ lipsum(10**6) }}")


def test_each_render_has_its_own_budget() -> None:
    assert render("{{ 'x' * 9000 }}") == "x" * 9000
    assert render("{{ 'y' * 9000 }}") == "y" * 9000  # the first render's output does not count
    with pytest.raises(OverBudget):
        render("{{ 'x' * 9000 }}", RenderLimits(timeout_s=1, max_bytes=100))
