"""Request bodies: a YAML `body` compiled into JSON text with templated leaves, or a text template.

A `body` leaf that is exactly one `{{ expression }}` keeps its type; any other leaf holding
`{{` or `{%` renders to a string; others are constants. A body renders through one template
writing its whole JSON text; when that fails it is rendered again leaf by leaf, to name the
leaf that fails.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from jinja2 import TemplateSyntaxError, nodes
from jinja2.environment import Template

from gateway.config.files import read_beside
from gateway.config.presets import TEAMS_CARD_CONTENT_TYPE
from gateway.config.schema import SendConfig
from gateway.errors import ConfigProblem, RenderError
from gateway.routing.sandbox import OverBudget
from gateway.routing.template_env import (
    ENV,
    TEXT_FILTER,
    VALUE_FILTER,
    Part,
    Scope,
    Text,
    compile_expression,
    compile_text,
    compiled,
    dumps,
    is_template,
    render_text,
    run,
    run_expression,
    single_expression,
    syntax_problem,
    utf8,
)

BODILESS_METHODS = frozenset({"GET", "HEAD", "DELETE"})
_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"
_PLAIN_KEY = re.compile(r"^[A-Za-z_][\w-]*$")
# A Teams `card:` goes out inside the message envelope Workflows expect.
_CARD_OPEN = '{"type":"message","attachments":[{"contentType":' + dumps(TEAMS_CARD_CONTENT_TYPE) + ',"content":'
_CARD_CLOSE = "}]}"
# Where a render's scope holds the webhook's bytes as received; not an identifier, so no template can name it.
ORIGINAL_BODY = "original body"


def _leaf_expression(template: Template, scope: Scope) -> str:
    return dumps(run_expression(template, scope))


def _leaf_text(template: Template, scope: Scope) -> str:
    return dumps(run(template, scope))


@dataclass(frozen=True, slots=True)
class _Leaf:
    """A templated body leaf: `part` renders its JSON text alone, `node` emits the same text in the body's template."""

    part: Part
    node: nodes.Stmt


def _leaf_node(source: str) -> nodes.Stmt:
    expression = single_expression(source)
    if expression is not None:
        return nodes.Output([nodes.Filter(expression, VALUE_FILTER, [], [], None, None, lineno=1)], lineno=1)
    text = nodes.Filter(None, TEXT_FILTER, [], [], None, None, lineno=1)
    return nodes.FilterBlock(ENV.parse(source).body, text, lineno=1)  # an inner scope: a `set` stays in its leaf


def _compile_leaf(source: str, path: str, problems: list[ConfigProblem]) -> _Leaf | str:
    """A templated body leaf, or "" when it does not compile (the problem is appended)."""
    try:
        expression = single_expression(source)
        if expression is not None:
            part = Part(path, partial(_leaf_expression, compile_expression(expression)))
        else:
            part = Part(path, partial(_leaf_text, ENV.from_string(source)))
    except TemplateSyntaxError as exc:
        problems.append(syntax_problem(exc, path, "the template"))
        return ""
    return _Leaf(part, _leaf_node(source))


def _constant(value: Any, path: str, problems: list[ConfigProblem]) -> str:
    try:
        return dumps(value)
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
            out.append(("," if index else "") + dumps(name) + ":")
            _compile_tree(value, _child(path, key), problems, out)
        out.append("}")
    elif isinstance(node, list):
        out.append("[")
        for index, value in enumerate(node):
            if index:
                out.append(",")
            _compile_tree(value, f"{path}[{index}]", problems, out)
        out.append("]")
    elif isinstance(node, str) and is_template(node):
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


# What a template shares with the templates it extends, includes or imports: a body with a leaf using any
# of these renders leaf by leaf, each leaf in a template of its own.
_OWN_TEMPLATE = (nodes.Extends, nodes.Block, nodes.Include, nodes.Import, nodes.FromImport)


def _body_template(items: tuple[str | _Leaf, ...]) -> Template | None:
    """One template writing the whole body's JSON text, so a render makes one Jinja context, not one per leaf."""
    leaves = [item.node for item in items if isinstance(item, _Leaf)]
    if not leaves or any(next(leaf.find_all(_OWN_TEMPLATE), None) for leaf in leaves):
        return None
    body = [item.node if isinstance(item, _Leaf) else nodes.Output([nodes.TemplateData(item)]) for item in items]
    return compiled(body)


class JsonBody:
    """A JSON body: rendered by its one template when it has one, else (and to name a failure) part by part."""

    __slots__ = ("_parts", "_template", "_path")

    def __init__(self, parts: tuple[Text, ...], template: Template | None = None, path: str = "body") -> None:
        self._parts = parts
        self._template = template
        self._path = path

    @classmethod
    def of(cls, items: tuple[str | _Leaf, ...], path: str) -> JsonBody:
        parts = tuple(item.part if isinstance(item, _Leaf) else item for item in items)
        return cls(parts, _body_template(items), path)

    def render(self, scope: Scope) -> tuple[bytes, str | None]:
        if self._template is not None:
            try:
                return utf8(run(self._template, scope)), _JSON
            except OverBudget as exc:  # rendering again would not name the leaf: the budget is spent
                raise RenderError(f"{self._path}: {exc}") from None
            except Exception:  # rendered again part by part: the same text, or the error naming the failing leaf
                pass
        return utf8("".join([render_text(part, scope) for part in self._parts])), _JSON


class TextBody:
    """A raw text body; `source` is the template as written, for what presets check in it."""

    __slots__ = ("render_text", "source")

    def __init__(self, text: Text, source: str = "") -> None:
        self.render_text = text
        self.source = source

    def render(self, scope: Scope) -> tuple[bytes, str | None]:
        text = render_text(self.render_text, scope)
        if not text:
            return b"", None
        try:
            json.loads(text)
        except ValueError:
            return utf8(text), _TEXT
        return utf8(text), _JSON


class OriginalBody:
    """No body form: the webhook's bytes exactly as received, so big numbers keep their digits and a receiver
    can check Missive's signature again."""

    __slots__ = ()

    def render(self, scope: Scope) -> tuple[bytes, str | None]:
        body: bytes = scope[ORIGINAL_BODY]
        return body, _JSON


@dataclass(frozen=True)
class BodySource:
    """A send's body form as plain data: `json` (a YAML structure), `card` (a Teams Adaptive Card), `text` (a
    template; a template file's text, read at load), `original` (the webhook's body) or `empty`. `path` names it
    in the config, `origin` the template's file."""

    kind: str
    path: str
    source: Any = None
    origin: str = "the template"


def body_source(send: SendConfig, method: str, base_dir: Path, at: str, problems: list[ConfigProblem]) -> BodySource:
    if send.body is not None:
        return BodySource("json", f"{at}.body", send.body)
    if send.card is not None:
        return BodySource("card", f"{at}.card", send.card)
    if send.template is not None:
        return BodySource("text", f"{at}.template", send.template)
    if send.template_file is not None:
        path, file = f"{at}.template_file", base_dir / send.template_file
        try:
            return BodySource("text", path, read_beside(base_dir, send.template_file), str(file))
        except ValueError as exc:
            hint = "paths are relative to the config file, inside its folder"
            problems.append(ConfigProblem(path, f"template file {file} {exc}", hint=hint))
            return BodySource("text", path, "")
    return BodySource("empty" if method in BODILESS_METHODS else "original", at)


def compile_body(body: BodySource, problems: list[ConfigProblem]) -> JsonBody | TextBody | OriginalBody:
    if body.kind in ("json", "card"):
        items: list[str | _Leaf] = [_CARD_OPEN] if body.kind == "card" else []
        _compile_tree(body.source, body.path, problems, items)
        if body.kind == "card":
            items.append(_CARD_CLOSE)
        return JsonBody.of(_joined(items), body.path)
    if body.kind == "text":
        return TextBody(compile_text(body.source, body.path, problems, origin=body.origin), body.source)
    if body.kind == "original":
        return OriginalBody()
    return TextBody("")
