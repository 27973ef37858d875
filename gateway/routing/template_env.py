"""The Jinja environment every template runs in: an immutable sandbox under a render budget
(`gateway.routing.sandbox`), strict about undefined values, with the gateway's filters, and the
few low-level helpers that run compiled templates.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import quote

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, Undefined, nodes
from jinja2.environment import Template
from jinja2.runtime import Context

from gateway.errors import ConfigProblem, GatewayError, RenderError
from gateway.routing.sandbox import BudgetedSandbox, current_budget

Scope = dict[str, Any]  # a render's context over the environment's globals, merged once per request


def defined(value: Any) -> Any:
    """`value`, unless it is undefined: then the UndefinedError (or SecurityError) naming what is missing."""
    if isinstance(value, Undefined):
        str(value)  # StrictUndefined raises here, with Jinja's message
    return value


def _json_default(value: Any) -> Any:
    defined(value)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        return list(value)  # `map(...)` without `| list` is a generator: send what it yields
    raise TypeError(f"a value of type {type(value).__name__} cannot be sent as JSON")


# What json.dumps builds on every call with these options, built once.
dumps = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_json_default
).encode


def _value_json(value: Any) -> str:
    return dumps(defined(value))


def _tojson(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent, allow_nan=False, default=_json_default)


def _datetime(value: Any, format: str | None = None) -> str | None:
    """Unix seconds as ISO 8601 UTC (`2024-06-03T08:33:15Z`) or in a strftime `format`; None stays None."""
    if defined(value) is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"datetime expects Unix seconds (a number), got {type(value).__name__}")
    return datetime.fromtimestamp(value, tz=UTC).strftime(format or "%Y-%m-%dT%H:%M:%SZ")


def _slack_escape(value: Any) -> str:
    """Escape the three characters Slack mrkdwn reserves for its own markup."""
    text = "" if value is None else str(value)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _path_segment(value: Any) -> str:
    """`value` as one URL path segment: everything but unreserved characters (letters, digits, `-._~`)
    percent-encoded, `/` included, so a payload value cannot climb out of its segment."""
    text = "" if defined(value) is None else str(value)
    if text in (".", ".."):  # encoded or not, URL normalisation reads these as "this" and "parent" segment
        raise ValueError(f"{text!r} cannot be a path segment")
    return quote(text, safe="")


def _blank_none(value: Any) -> Any:
    return "" if value is None else value


ENV = BudgetedSandbox(undefined=StrictUndefined, autoescape=False, finalize=_blank_none, keep_trailing_newline=True)
ENV.filters.update(tojson=_tojson, datetime=_datetime, slack_escape=_slack_escape, path_segment=_path_segment)
# The JSON of a body leaf inside a body's one template. A filter name in template source is an identifier,
# so no config can call these.
VALUE_FILTER = "body value"
TEXT_FILTER = "body text"
ENV.filters.update({VALUE_FILTER: _value_json, TEXT_FILTER: dumps})
ENV.budget_filters(VALUE_FILTER, TEXT_FILTER)


def _context(template: Template, scope: Scope) -> Context:
    # Template.new_context(scope, shared=True) without listing the template's globals (a slow ChainMap walk) for
    # Context.globals_keys, which only imports read: `scope` already holds the globals.
    return ENV.context_class(ENV, scope, template.name, template.blocks)


def run(template: Template, scope: Scope) -> str:
    """Template.render without its per-call copy of the globals (`scope` holds them), counting the text it writes
    against the render's budget as it streams out."""
    budget = current_budget()
    pieces = []
    size = 0
    for piece in template.root_render_func(_context(template, scope)):
        size += len(piece)
        if size > budget.max_bytes:
            budget.check_size(size)
        pieces.append(piece)
    return "".join(pieces)


def run_expression(template: Template, scope: Scope) -> Any:
    context = _context(template, scope)
    for _ in template.root_render_func(context):
        pass
    return defined(context.vars["result"])


def single_expression(source: str) -> nodes.Expr | None:
    """The expression, when `source` is exactly one `{{ expression }}`; parsed afresh (compiling changes a tree)."""
    if not (source.startswith("{{") and source.endswith("}}")):
        return None
    body = ENV.parse(source).body
    if len(body) != 1 or not isinstance(body[0], nodes.Output) or len(body[0].nodes) != 1:
        return None
    expression = body[0].nodes[0]
    return None if isinstance(expression, nodes.TemplateData) else expression


def compiled(body: list[nodes.Stmt]) -> Template:
    tree = nodes.Template(body, lineno=1)
    tree.set_environment(ENV)
    return ENV.from_string(tree)


def compile_expression(expression: nodes.Expr) -> Template:
    """A template that stores the value of `expression` in `result` (what Environment.compile_expression builds)."""
    return compiled([nodes.Assign(nodes.Name("result", "store"), expression, lineno=1)])


def _reason(exc: Exception) -> str:
    if isinstance(exc, TemplateError | GatewayError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True, slots=True)
class Part:
    """One templated piece of a request; `path` is its place in the config, for error messages."""

    path: str
    run: Callable[[Scope], str]

    def __call__(self, scope: Scope) -> str:
        try:
            return self.run(scope)
        except Exception as exc:  # a template failing on a payload, whatever the cause, is a RenderError
            raise RenderError(f"{self.path}: {_reason(exc)}") from exc


Text = str | Part  # a constant, or a template to render


def render_text(value: Text, scope: Scope) -> str:
    return value if isinstance(value, str) else value(scope)


def is_template(source: str) -> bool:
    return "{{" in source or "{%" in source


def syntax_problem(exc: TemplateSyntaxError, path: str, origin: str) -> ConfigProblem:
    # Jinja's str(exc) quotes the template's source line, which may hold a token: build our own.
    return ConfigProblem(path, f"template error: {exc.message or type(exc).__name__} (line {exc.lineno} of {origin})")


def compile_text(
    source: str,
    path: str,
    problems: list[ConfigProblem],
    check: Callable[[str], str] | None = None,
    origin: str = "the template",
) -> Text:
    """A text template, or `source` itself when it holds no template; `check` vets the result."""
    if not is_template(source):
        if check is not None:
            try:
                check(source)
            except RenderError as exc:
                problems.append(ConfigProblem(path, str(exc)))
        return source
    try:
        template = ENV.from_string(source)
    except TemplateSyntaxError as exc:
        problems.append(syntax_problem(exc, path, origin))
        return ""
    if check is None:
        return Part(path, partial(run, template))
    return Part(path, lambda scope: check(run(template, scope)))


def utf8(text: str) -> bytes:
    # A payload may carry a lone surrogate (a valid JSON escape that UTF-8 cannot encode): send '?', not fail.
    return text.encode("utf-8", "replace")
