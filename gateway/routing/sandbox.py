"""The sandbox templates render in, and the budget that bounds one render's time and output.

Templates come from the config but render payload values, so a loop over a payload list, a
`'a' * payload.n` or a template mistake can cost any amount of CPU and memory. A render runs
inside `budget(limits)`, and the environment checks it where the work happens:

- every `for` loop's iterable goes through a filter that checks the clock at each item;
- every call (functions, methods, macros, so recursion too) and every filter checks the clock,
  and refuses a result longer than the size cap;
- `*`, `**` and `+` refuse, before computing it, a result longer than the cap (`'a' * 10**12`,
  `10 ** 10 ** 9`); `%` and `~` are checked after;
- the text a template writes is counted as it streams out (`gateway.routing.template_env.run`).

A render over budget raises `OverBudget`, a RenderError: the delivery becomes a dead letter with the
reason. The clock is only read between steps: one step (a filter on a huge value) runs to its end.
Inside `time_slice(s)`, the same checks raise `SliceSpent` once `s` seconds have passed, for the
caller to run the work again where it may take its whole budget.
"""

from __future__ import annotations

import functools
import math
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from jinja2 import nodes
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from gateway.errors import RenderError

# Filter names holding a space cannot be written in a template: only the transformation below uses them.
LOOP_FILTER = "loop budget"
SIZE_FILTER = "size budget"
_SIZED = (str, bytes, list, tuple, dict)
_LOG10_2 = math.log10(2)


class OverBudget(RenderError):
    """A render took longer than `server.render_timeout` or made more than `server.render_max_bytes`."""


@dataclass(frozen=True)
class RenderLimits:
    timeout_s: float = 1.0
    max_bytes: int = 1024 * 1024


DEFAULT_LIMITS = RenderLimits()  # server.render_timeout and server.render_max_bytes's defaults


class SliceSpent(BaseException):  # noqa: N818 - an interruption, not an error
    """The time slice a render was started in (`time_slice`) is spent: the caller runs the work again elsewhere.

    A BaseException, so that nothing on the way (a template part's `except Exception`) takes it for the
    template's own failure.
    """


class _Budget:
    __slots__ = ("deadline", "max_bytes", "limits", "slice_deadline")

    def __init__(
        self, deadline: float, max_bytes: int, limits: RenderLimits | None, slice_deadline: float = math.inf
    ) -> None:
        self.deadline = deadline
        self.max_bytes = max_bytes
        self.limits = limits
        self.slice_deadline = slice_deadline

    def check_time(self) -> None:
        now = time.perf_counter()
        if now > self.deadline:
            timeout_s = self.limits.timeout_s if self.limits else 0
            raise OverBudget(f"rendering took longer than the {timeout_s:g} s allowed (server.render_timeout)")
        if now > self.slice_deadline:
            raise SliceSpent()

    def check_size(self, size: int) -> None:
        if size > self.max_bytes:
            raise OverBudget(f"rendering made more than the {self.max_bytes} bytes allowed (server.render_max_bytes)")

    def check_value(self, value: Any) -> None:
        if isinstance(value, _SIZED):
            self.check_size(len(value))


_UNLIMITED = _Budget(math.inf, sys.maxsize, None)
_local = threading.local()  # renders run in several threads at once, each under its own budget


def current_budget() -> _Budget:
    budget: _Budget = getattr(_local, "budget", _UNLIMITED)
    return budget


class budget:  # lower case: it reads like a function, `with budget(limits):`
    """Render under `limits` while the block runs (in this thread)."""

    __slots__ = ("_limits", "_previous")

    def __init__(self, limits: RenderLimits) -> None:
        self._limits = limits
        self._previous = _UNLIMITED

    def __enter__(self) -> None:
        self._previous = current_budget()
        limits = self._limits
        slice_deadline = getattr(_local, "slice_deadline", math.inf)
        _local.budget = _Budget(time.perf_counter() + limits.timeout_s, limits.max_bytes, limits, slice_deadline)

    def __exit__(self, *exc_info: object) -> None:
        _local.budget = self._previous


class time_slice:  # lower case: it reads like a function, `with time_slice(0.02):`
    """Let the renders started in this block (in this thread) run `seconds` at most, whatever their budget
    allows: past that a check raises SliceSpent. So the event loop can try a render and hand it to a thread
    once it proves slow."""

    __slots__ = ("_seconds", "_previous")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._previous = math.inf

    def __enter__(self) -> None:
        self._previous = getattr(_local, "slice_deadline", math.inf)
        _local.slice_deadline = time.perf_counter() + self._seconds

    def __exit__(self, *exc_info: object) -> None:
        _local.slice_deadline = self._previous


def _loop_budget(iterable: Iterable[Any]) -> Iterator[Any]:
    check = current_budget().check_time
    for item in iterable:
        check()
        yield item


def _size_budget(value: Any) -> Any:
    current_budget().check_value(value)
    return value


def _budgeted(function: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that checks the clock before it runs and the size of what it returns."""

    @functools.wraps(function)  # keeps `jinja_pass_arg`, so Jinja passes the context or environment as before
    def run(*args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        budget.check_time()
        result = function(*args, **kwargs)
        budget.check_value(result)
        return result

    return run


def _length(value: Any) -> int | None:
    return len(value) if isinstance(value, _SIZED) else None


def _check_before(operator: str, left: Any, right: Any, budget: _Budget) -> None:
    """Refuse a result over the size cap before Python allocates it."""
    if operator == "*":
        for sequence, count in ((left, right), (right, left)):
            size = _length(sequence)
            if size is not None and isinstance(count, int):
                budget.check_size(size * count)
    elif operator == "+":
        left_size, right_size = _length(left), _length(right)
        if left_size is not None and right_size is not None:
            budget.check_size(left_size + right_size)
    elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        budget.check_size(math.ceil(right * left.bit_length() * _LOG10_2))  # the digits of the result


class _Budgeted(NodeTransformer):
    """Routes every loop's iterable and every `~` through the budget."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, LOOP_FILTER, [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Filter(node, SIZE_FILTER, [], [], None, None, lineno=node.lineno)


class BudgetedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, checking the current render's budget as it goes."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals.pop("lipsum", None)  # lipsum(n) writes n paragraphs in one call that no check can stop
        self.filters.update({LOOP_FILTER: _loop_budget, SIZE_FILTER: _size_budget})

    def budget_filters(self, *exempt: str) -> None:
        """Wrap every filter registered so far, but `exempt` ones (the gateway's own, whose output is counted)."""
        skip = {LOOP_FILTER, SIZE_FILTER, *exempt}
        self.filters.update({name: _budgeted(f) for name, f in self.filters.items() if name not in skip})

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        budgeted: nodes.Template = _Budgeted().visit(tree)
        return budgeted

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        budget.check_time()
        result = super().call(context, obj, *args, **kwargs)
        budget.check_value(result)
        return result

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = current_budget()
        _check_before(operator, left, right, budget)
        result = super().call_binop(context, operator, left, right)
        budget.check_value(result)
        return result
