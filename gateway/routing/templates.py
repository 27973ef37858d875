"""Request templates: compiled once at config load, rendered for every matching event.

Templates are Jinja in an immutable sandbox with `StrictUndefined`. Choices worth knowing:

- A `body` leaf that is exactly one `{{ expression }}` keeps its type (number, list,
  null...); any other leaf holding `{{` or `{%` renders to a string; others are constants.
  Keys are never templates.
- In text, None renders as empty text (`Subject: {{ conversation.subject }}` gives
  `Subject: ` when the subject is null), so `datetime` passes None through: null in a
  one-expression leaf, empty in text.
- Without a body form, GET, HEAD and DELETE send an empty body; other methods send the
  webhook's body byte for byte, as received.
- Content-Type: a header written in the config (destination or send) wins; otherwise it
  follows the body: JSON for `body` and the payload; for `template`/`template_file`, JSON
  when the rendered text parses as JSON, else text/plain; none for an empty body.
- Error messages name the YAML path and never echo header or URL values (they may hold tokens).
- A `body` renders through one template writing its whole JSON text (one Jinja context per render, not one
  per leaf); when that fails it is rendered again leaf by leaf, to name the leaf that fails.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.config.presets import request_defaults
from gateway.config.schema import DestinationConfig, SendConfig
from gateway.errors import ConfigProblem, RenderError
from gateway.model import RenderedRequest
from gateway.routing.bodies import (
    ORIGINAL_BODY,
    BodySource,
    JsonBody,
    OriginalBody,
    TextBody,
    body_source,
    compile_body,
)
from gateway.routing.payload import payload_view
from gateway.routing.preset_bodies import BodyFinisher, body_finisher, check_send, finisher_spec
from gateway.routing.sandbox import DEFAULT_LIMITS, RenderLimits, budget, current_budget
from gateway.routing.template_env import ENV, Text, compile_text, render_text


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

    __slots__ = ("method", "_url", "_headers", "_body", "_content_type_set", "_finish", "_limits", "_untrusted_host")

    def __init__(
        self,
        method: str,
        url: Text,
        headers: tuple[tuple[str, Text], ...],
        body: JsonBody | TextBody | OriginalBody,
        content_type_set: bool,
        finish: BodyFinisher | None = None,
        limits: RenderLimits = DEFAULT_LIMITS,
        untrusted_host: bool = False,
    ) -> None:
        self.method = method
        self._untrusted_host = untrusted_host
        self._url = url
        self._headers = headers
        self._body = body
        self._content_type_set = content_type_set
        self._finish = finish
        self._limits = limits

    @property
    def forwards_original(self) -> bool:
        """True when the body is the webhook as received (the send has no body form)."""
        return isinstance(self._body, OriginalBody)

    @property
    def text_source(self) -> str | None:
        """The template of a `template` or `template_file` body, as written (None for other bodies)."""
        return self._body.source if isinstance(self._body, TextBody) else None

    def render(self, context: Mapping[str, Any]) -> RenderedRequest:
        """The request for one payload's `template_context`, within the render limits; raises RenderError naming
        the failing place."""
        with budget(self._limits):
            scope = {**ENV.globals, **context}
            headers = {name: render_text(value, scope) for name, value in self._headers}
            body, content_type = self._body.render(scope)
            if self._finish is not None:
                body = self._finish(body, scope)
            if not self.forwards_original:  # the webhook as received is not a render's output
                try:
                    current_budget().check_size(len(body))
                except RenderError as exc:
                    raise RenderError(f"the body: {exc}") from None
            if content_type is not None and not self._content_type_set:
                headers["Content-Type"] = content_type
            url = render_text(self._url, scope)
            return RenderedRequest(self.method, url, headers, body, self._untrusted_host)


def template_context(
    payload: Any, event: Mapping[str, Any], original: bytes, changes: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The names templates see: the payload's keys (with `message` aliased), `changes` when its source keeps
    conversations, `event` and `payload`; plus the webhook's `original` bytes, which a send without a body
    form forwards.

    `event` and `payload` win over payload keys of the same name (`payload.event` still reaches those).
    """
    view = payload_view(payload)
    names = dict(view) if isinstance(view, dict) else {}
    if changes is not None:
        names["changes"] = changes
    names["event"] = event
    names["payload"] = payload
    names[ORIGINAL_BODY] = original
    return names


_HeaderSource = tuple[str, str | None, str]  # name, config path (None: a preset's constant), value


@dataclass(frozen=True)
class RequestSource:
    """A send as plain data, its destination's defaults merged in: what its request template compiles from.

    A chained request keeps this (as JSON) with its delivery, so it is rendered as the config was at ingest.
    """

    method: str
    url: tuple[str, str]  # config path, URL template ("" when missing: reported at load)
    headers: tuple[_HeaderSource, ...]
    content_type_set: bool
    body: BodySource
    finish: list[str | None] | None  # what the destination's preset does to each body (`preset_bodies`)

    def to_data(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> RequestSource:
        return cls(data["method"], tuple(data["url"]), tuple(tuple(header) for header in data["headers"]),
                   data["content_type_set"], BodySource(**data["body"]), data["finish"])


# A whole `scheme://host:port` ended by the start of a path, query or fragment.
_LITERAL_ORIGIN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*[/?#]")


def host_from_template(url: str) -> bool:
    """Whether a template may choose any of the URL's scheme, host or port: the text before its first `{{`, `{%`
    or `{#` does not hold a whole `scheme://host:port/`. (`https://api.example.com{{ x }}` may: `x` can go on
    with the host.)"""
    starts = [index for index in (url.find("{{"), url.find("{%"), url.find("{#")) if index != -1]
    return bool(starts) and _LITERAL_ORIGIN.match(url[: min(starts)]) is None


def _url_source(
    send: SendConfig, destination: DestinationConfig, at: str, problems: list[ConfigProblem]
) -> tuple[str, str]:
    if send.url is not None:
        url, path = request_defaults(destination.model_copy(update={"url": send.url})).url, f"{at}.url"
    else:
        url, path = request_defaults(destination).url, f"destinations.{send.to}.url"
    if not (send.url or destination.url):
        problems.append(ConfigProblem(path, "missing: give the destination a url, or this send one"))
        return path, ""
    return path, url


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


def request_source(
    send: SendConfig, destination: DestinationConfig, base_dir: Path, at: str, problems: list[ConfigProblem],
    *, route: str,
) -> RequestSource:  # fmt: skip
    """One `send` (at YAML path `at`, in route `route`) with its destination's defaults, its template file read."""
    method = (send.method or destination.method).upper()
    sources = _header_sources(send, destination, at)
    content_type = sources.get("content-type")
    content_type_set = content_type is not None and content_type[1] is not None
    if not content_type_set:
        sources.pop("content-type", None)
    body = body_source(send, method, base_dir, at, problems)
    return RequestSource(method, _url_source(send, destination, at, problems), tuple(sources.values()),
                         content_type_set, body, finisher_spec(send, destination, route))


def compile_source(
    source: RequestSource, problems: list[ConfigProblem], limits: RenderLimits = DEFAULT_LIMITS
) -> RequestTemplate | None:
    """Compile a request's templates, to render within `limits`; every problem found is appended to `problems`,
    and then None is returned."""
    found = len(problems)
    path, url_source = source.url
    url = compile_text(url_source, path, problems, check=_checked_url) if url_source else ""
    headers = tuple(
        (name, value if path is None else compile_text(value, path, problems, check=_checked_header))
        for name, path, value in source.headers
    )
    body = compile_body(source.body, problems)
    if len(problems) > found:
        return None
    finish = body_finisher(source.finish)
    untrusted_host = host_from_template(url_source)
    return RequestTemplate(source.method, url, headers, body, source.content_type_set, finish, limits, untrusted_host)


def compile_request(
    send: SendConfig,
    destination: DestinationConfig,
    base_dir: Path,
    at: str,
    problems: list[ConfigProblem],
    *,
    route: str,
    limits: RenderLimits = DEFAULT_LIMITS,
) -> RequestTemplate | None:
    """Compile one `send` (at YAML path `at`, in route `route`) against its destination.

    Every problem found, the preset's checks included, is appended to `problems`; None is returned when there was any.
    """
    found = len(problems)
    source = request_source(send, destination, base_dir, at, problems, route=route)
    template = compile_source(source, problems, limits)
    check_send(send, destination, source.body.source if source.body.kind == "text" else None, at, problems)
    return template if len(problems) == found else None
