"""Request templates: compiled once at config load, rendered for every matching event.

Templates are Jinja in an immutable sandbox with `StrictUndefined`. Choices worth knowing:

- A `body` leaf that is exactly one `{{ expression }}` keeps its type (number, list,
  null...); any other leaf holding `{{` or `{%` renders to a string; others are constants.
  Keys are never templates.
- In text, None renders as empty text (`Subject: {{ conversation.subject }}` gives
  `Subject: ` when the subject is null), so `datetime` passes None through: null in a
  one-expression leaf, empty in text.
- Without a body form, GET, HEAD and DELETE send an empty body; other methods send the
  original payload as JSON.
- Content-Type: a header written in the config (destination or send) wins; otherwise it
  follows the body: JSON for `body` and the payload; for `template`/`template_file`, JSON
  when the rendered text parses as JSON, else text/plain; none for an empty body.
- Error messages name the YAML path and never echo header or URL values (they may hold tokens).
- A `body` renders through one template writing its whole JSON text (one Jinja context per render, not one
  per leaf); when that fails it is rendered again leaf by leaf, to name the leaf that fails.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, Undefined, nodes
from jinja2.environment import Template
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from gateway.config.presets import request_defaults
from gateway.config.schema import DestinationConfig, SendConfig
from gateway.errors import ConfigProblem, GatewayError, RenderError
from gateway.model import RenderedRequest
from gateway.routing.payload import payload_view

Scope = dict[str, Any]  # a render's context over the environment's globals, merged once per request

_BODILESS_METHODS = frozenset({"GET", "HEAD", "DELETE"})
_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"
_PLAIN_KEY = re.compile(r"^[A-Za-z_][\w-]*$")


def _defined(value: Any) -> Any:
    """`value`, unless it is undefined: then the UndefinedError (or SecurityError) naming what is missing."""
    if isinstance(value, Undefined):
        str(value)  # StrictUndefined raises here, with Jinja's message
    return value


def _json_default(value: Any) -> Any:
    _defined(value)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        return list(value)  # `map(...)` without `| list` is a generator: send what it yields
    raise TypeError(f"a value of type {type(value).__name__} cannot be sent as JSON")


# What json.dumps builds on every call with these options, built once.
_dumps = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_json_default
).encode


def _value_json(value: Any) -> str:
    return _dumps(_defined(value))


def _tojson(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent, allow_nan=False, default=_json_default)


def _datetime(value: Any, format: str | None = None) -> str | None:
    """Unix seconds as ISO 8601 UTC (`2024-06-03T08:33:15Z`) or in a strftime `format`; None stays None."""
    if _defined(value) is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"datetime expects Unix seconds (a number), got {type(value).__name__}")
    return datetime.fromtimestamp(value, tz=UTC).strftime(format or "%Y-%m-%dT%H:%M:%SZ")


def _slack_escape(value: Any) -> str:
    """Escape the three characters Slack mrkdwn reserves for its own markup."""
    text = "" if value is None else str(value)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _blank_none(value: Any) -> Any:
    return "" if value is None else value


_ENV = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined, autoescape=False, finalize=_blank_none, keep_trailing_newline=True
)
_ENV.filters.update(tojson=_tojson, datetime=_datetime, slack_escape=_slack_escape)
# The JSON of a body leaf inside a body's one template. A filter name in template source is an identifier,
# so no config can call these.
_VALUE_FILTER = "body value"
_TEXT_FILTER = "body text"
_ENV.filters.update({_VALUE_FILTER: _value_json, _TEXT_FILTER: _dumps})


def _reason(exc: Exception) -> str:
    if isinstance(exc, TemplateError | GatewayError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True, slots=True)
class _Part:
    """One templated piece of a request; `path` is its place in the config, for error messages."""

    path: str
    run: Callable[[Scope], str]

    def __call__(self, scope: Scope) -> str:
        try:
            return self.run(scope)
        except Exception as exc:  # a template failing on a payload, whatever the cause, is a RenderError
            raise RenderError(f"{self.path}: {_reason(exc)}") from exc


Text = str | _Part  # a constant, or a template to render


def _text(value: Text, scope: Scope) -> str:
    return value if isinstance(value, str) else value(scope)


def _is_template(source: str) -> bool:
    return "{{" in source or "{%" in source


def _context(template: Template, scope: Scope) -> Context:
    # Template.new_context(scope, shared=True) without listing the template's globals (a slow ChainMap walk) for
    # Context.globals_keys, which only imports read: `scope` already holds the globals.
    return _ENV.context_class(_ENV, scope, template.name, template.blocks)


def _run(template: Template, scope: Scope) -> str:
    # Template.render without its per-call copy of the globals: `scope` already holds them.
    return "".join(template.root_render_func(_context(template, scope)))


def _run_expression(template: Template, scope: Scope) -> Any:
    context = _context(template, scope)
    for _ in template.root_render_func(context):
        pass
    return _defined(context.vars["result"])


def _expression(source: str) -> nodes.Expr | None:
    """The expression, when `source` is exactly one `{{ expression }}`; parsed afresh (compiling changes a tree)."""
    if not (source.startswith("{{") and source.endswith("}}")):
        return None
    body = _ENV.parse(source).body
    if len(body) != 1 or not isinstance(body[0], nodes.Output) or len(body[0].nodes) != 1:
        return None
    expression = body[0].nodes[0]
    return None if isinstance(expression, nodes.TemplateData) else expression


def _compiled(body: list[nodes.Stmt]) -> Template:
    tree = nodes.Template(body, lineno=1)
    tree.set_environment(_ENV)
    return _ENV.from_string(tree)


def _compile_expression(expression: nodes.Expr) -> Template:
    """A template that stores the value of `expression` in `result` (what Environment.compile_expression builds)."""
    return _compiled([nodes.Assign(nodes.Name("result", "store"), expression, lineno=1)])


def _syntax_problem(exc: TemplateSyntaxError, path: str, origin: str) -> ConfigProblem:
    # Jinja's str(exc) quotes the template's source line, which may hold a token: build our own.
    return ConfigProblem(path, f"template error: {exc.message or type(exc).__name__} (line {exc.lineno} of {origin})")


def _compile_text(
    source: str,
    path: str,
    problems: list[ConfigProblem],
    check: Callable[[str], str] | None = None,
    origin: str = "the template",
) -> Text:
    """A text template, or `source` itself when it holds no template; `check` vets the result."""
    if not _is_template(source):
        if check is not None:
            try:
                check(source)
            except RenderError as exc:
                problems.append(ConfigProblem(path, str(exc)))
        return source
    try:
        template = _ENV.from_string(source)
    except TemplateSyntaxError as exc:
        problems.append(_syntax_problem(exc, path, origin))
        return ""
    if check is None:
        return _Part(path, partial(_run, template))
    return _Part(path, lambda scope: check(_run(template, scope)))


def _leaf_expression(template: Template, scope: Scope) -> str:
    return _dumps(_run_expression(template, scope))


def _leaf_text(template: Template, scope: Scope) -> str:
    return _dumps(_run(template, scope))


@dataclass(frozen=True, slots=True)
class _Leaf:
    """A templated body leaf: `part` renders its JSON text alone, `node` emits the same text in the body's template."""

    part: _Part
    node: nodes.Stmt


def _leaf_node(source: str) -> nodes.Stmt:
    expression = _expression(source)
    if expression is not None:
        return nodes.Output([nodes.Filter(expression, _VALUE_FILTER, [], [], None, None, lineno=1)], lineno=1)
    text = nodes.Filter(None, _TEXT_FILTER, [], [], None, None, lineno=1)
    return nodes.FilterBlock(_ENV.parse(source).body, text, lineno=1)  # an inner scope: a `set` stays in its leaf


def _compile_leaf(source: str, path: str, problems: list[ConfigProblem]) -> _Leaf | str:
    """A templated body leaf, or "" when it does not compile (the problem is appended)."""
    try:
        expression = _expression(source)
        if expression is not None:
            part = _Part(path, partial(_leaf_expression, _compile_expression(expression)))
        else:
            part = _Part(path, partial(_leaf_text, _ENV.from_string(source)))
    except TemplateSyntaxError as exc:
        problems.append(_syntax_problem(exc, path, "the template"))
        return ""
    return _Leaf(part, _leaf_node(source))


def _constant(value: Any, path: str, problems: list[ConfigProblem]) -> str:
    try:
        return _dumps(value)
    except (TypeError, ValueError) as exc:
        problems.append(ConfigProblem(path, f"cannot be sent as JSON ({exc})", hint="quote the value"))
        return "null"


def _child(path: str, key: Any) -> str:
    return f"{path}[{json.dumps(key)}]" if isinstance(key, str) and not _PLAIN_KEY.match(key) else f"{path}.{key}"


def _compile_tree(node: Any, path: str, problems: list[ConfigProblem], out: list[str | _Leaf]) -> None:
    """Append `node` as JSON text to `out`: constants as strings, templated leaves as `_Leaf`s."""
    if isinstance(node, dict):
        out.append("{")
        for index, (key, value) in enumerate(node.items()):
            name = key if isinstance(key, str) else _constant(key, _child(path, key), problems)
            out.append(("," if index else "") + _dumps(name) + ":")
            _compile_tree(value, _child(path, key), problems, out)
        out.append("}")
    elif isinstance(node, list):
        out.append("[")
        for index, value in enumerate(node):
            if index:
                out.append(",")
            _compile_tree(value, f"{path}[{index}]", problems, out)
        out.append("]")
    elif isinstance(node, str) and _is_template(node):
        out.append(_compile_leaf(node, path, problems))
    else:
        out.append(_constant(node, path, problems))


def _joined(parts: list[str | _Leaf]) -> tuple[str | _Leaf, ...]:
    """`parts` with neighbouring constants merged, so rendering only visits the templated leaves."""
    merged: list[str | _Leaf] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    return tuple(merged)


def _utf8(text: str) -> bytes:
    # A payload may carry a lone surrogate (a valid JSON escape that UTF-8 cannot encode): send '?', not fail.
    return text.encode("utf-8", "replace")


# What a template shares with the templates it extends, includes or imports: a body with a leaf using any
# of these renders leaf by leaf, each leaf in a template of its own.
_OWN_TEMPLATE = (nodes.Extends, nodes.Block, nodes.Include, nodes.Import, nodes.FromImport)


def _body_template(items: tuple[str | _Leaf, ...]) -> Template | None:
    """One template writing the whole body's JSON text, so a render makes one Jinja context, not one per leaf."""
    leaves = [item.node for item in items if isinstance(item, _Leaf)]
    if not leaves or any(next(leaf.find_all(_OWN_TEMPLATE), None) for leaf in leaves):
        return None
    body = [item.node if isinstance(item, _Leaf) else nodes.Output([nodes.TemplateData(item)]) for item in items]
    return _compiled(body)


class _JsonBody:
    """A JSON body: rendered by its one template when it has one, else (and to name a failure) part by part."""

    __slots__ = ("_parts", "_template")

    def __init__(self, parts: tuple[Text, ...], template: Template | None = None) -> None:
        self._parts = parts
        self._template = template

    @classmethod
    def of(cls, items: tuple[str | _Leaf, ...]) -> _JsonBody:
        return cls(tuple(item.part if isinstance(item, _Leaf) else item for item in items), _body_template(items))

    def render(self, scope: Scope) -> tuple[bytes, str | None]:
        if self._template is not None:
            try:
                return _utf8(_run(self._template, scope)), _JSON
            except Exception:  # rendered again part by part: the same text, or the error naming the failing leaf
                pass
        return _utf8("".join([_text(part, scope) for part in self._parts])), _JSON


class _TextBody:
    __slots__ = ("_text",)

    def __init__(self, text: Text) -> None:
        self._text = text

    def render(self, scope: Scope) -> tuple[bytes, str | None]:
        text = _text(self._text, scope)
        if not text:
            return b"", None
        try:
            json.loads(text)
        except ValueError:
            return _utf8(text), _TEXT
        return _utf8(text), _JSON


def _payload_json(scope: Scope) -> str:
    return _dumps(scope["payload"])


def _checked_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        absolute = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        absolute = False
    if not absolute:
        raise RenderError("the URL is not an absolute http(s) URL (write it like https://example.com/path)")
    return url


def _checked_header(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise RenderError("the rendered header value holds a line break")
    return value


class RequestTemplate:
    """A request compiled from a `send` and its destination; `render` fills it in for one payload."""

    __slots__ = ("method", "_url", "_headers", "_body", "_content_type_set")

    def __init__(
        self,
        method: str,
        url: Text,
        headers: tuple[tuple[str, Text], ...],
        body: _JsonBody | _TextBody,
        content_type_set: bool,
    ) -> None:
        self.method = method
        self._url = url
        self._headers = headers
        self._body = body
        self._content_type_set = content_type_set

    def render(self, context: Mapping[str, Any]) -> RenderedRequest:
        """The request for one payload's `template_context`; raises RenderError naming the failing place."""
        scope = {**_ENV.globals, **context}
        headers = {name: _text(value, scope) for name, value in self._headers}
        body, content_type = self._body.render(scope)
        if content_type is not None and not self._content_type_set:
            headers["Content-Type"] = content_type
        return RenderedRequest(self.method, _text(self._url, scope), headers, body)


def template_context(payload: Any, event: Mapping[str, Any]) -> dict[str, Any]:
    """The names templates see: the payload's keys (with `message` aliased), `event` and `payload`.

    `event` and `payload` win over payload keys of the same name (`payload.event` still reaches those).
    """
    view = payload_view(payload)
    names = dict(view) if isinstance(view, dict) else {}
    names["event"] = event
    names["payload"] = payload
    return names


def _compile_url(send: SendConfig, destination: DestinationConfig, at: str, problems: list[ConfigProblem]) -> Text:
    if send.url is not None:
        url, path = request_defaults(destination.model_copy(update={"url": send.url})).url, f"{at}.url"
    else:
        url, path = request_defaults(destination).url, f"destinations.{send.to}.url"
    if not (send.url or destination.url or destination.type == "missive"):
        problems.append(ConfigProblem(path, "missing: give the destination a url, or this send one"))
        return url
    return _compile_text(url, path, problems, check=_checked_url)


_HeaderSource = tuple[str, str | None, str]  # name, config path (None: a preset's constant), value


def _header_sources(send: SendConfig, destination: DestinationConfig, at: str) -> dict[str, _HeaderSource]:
    """Headers by lowercase name: preset, then destination, then send; later ones win whatever their case."""
    written = {name.lower() for name in destination.headers}
    merged: dict[str, _HeaderSource] = {}
    for name, value in request_defaults(destination).headers.items():
        path = f"destinations.{send.to}.headers.{name}" if name.lower() in written else None
        merged[name.lower()] = (name, path, value)
    for name, value in (send.headers or {}).items():
        merged[name.lower()] = (name, f"{at}.headers.{name}", value)
    return merged


def _compile_body(
    send: SendConfig, method: str, base_dir: Path, at: str, problems: list[ConfigProblem]
) -> _JsonBody | _TextBody:
    if send.body is not None:
        items: list[str | _Leaf] = []
        _compile_tree(send.body, f"{at}.body", problems, items)
        return _JsonBody.of(_joined(items))
    if send.template is not None:
        return _TextBody(_compile_text(send.template, f"{at}.template", problems))
    if send.template_file is not None:
        path = f"{at}.template_file"
        file = base_dir / send.template_file
        try:
            source = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = "not found" if isinstance(exc, FileNotFoundError) else f"cannot be read ({exc})"
            hint = "paths are relative to the config file"
            problems.append(ConfigProblem(path, f"template file {file} {reason}", hint=hint))
            return _TextBody("")
        return _TextBody(_compile_text(source, path, problems, origin=str(file)))
    if method in _BODILESS_METHODS:
        return _TextBody("")
    return _JsonBody((_Part(at, _payload_json),))


def compile_request(
    send: SendConfig, destination: DestinationConfig, base_dir: Path, at: str, problems: list[ConfigProblem]
) -> RequestTemplate | None:
    """Compile one `send` (at YAML path `at`) against its destination.

    Every problem found is appended to `problems`; None is returned when there was any.
    """
    found = len(problems)
    method = (send.method or destination.method).upper()
    url = _compile_url(send, destination, at, problems)
    sources = _header_sources(send, destination, at)
    content_type = sources.get("content-type")
    content_type_set = content_type is not None and content_type[1] is not None
    if not content_type_set:
        sources.pop("content-type", None)
    headers = tuple(
        (name, value if path is None else _compile_text(value, path, problems, check=_checked_header))
        for name, path, value in sources.values()
    )
    body = _compile_body(send, method, base_dir, at, problems)
    if len(problems) > found:
        return None
    return RequestTemplate(method, url, headers, body, content_type_set)
