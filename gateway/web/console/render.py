"""The console's own Jinja environment: autoescaping, strict, loading the templates shipped beside this module.

It is not the routing sandbox: its templates are ours and trusted, the data they show is not, so
every value is escaped (a subject of `<script>` shows as text). Nothing here marks data as safe.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from jinja2 import Environment, PackageLoader, StrictUndefined


def _at(ms: int | None) -> str:
    """`2026-03-01 12:00:03` (UTC), for people."""
    if ms is None:
        return "–"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _iso(ms: int) -> str:
    """ISO 8601 with the zone, for `<time datetime>`."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def _age(ms: float) -> str:
    """A length of time in milliseconds, short: `850 ms`, `42 s`, `7 min`, `3 h`, `2 d`."""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1000)):
        if ms >= size:
            return f"{ms / size:.0f} {unit}"
    return f"{ms:.0f} ms"


def _pretty(text: str) -> str:
    """JSON text indented for reading; other text unchanged."""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


def _entries(value: Mapping[Any, Any] | Sequence[Any]) -> list[tuple[Any, Any]]:
    """(key, item) pairs of a mapping, (index, item) pairs of a list: one loop shows both."""
    return list(value.items()) if isinstance(value, Mapping) else list(enumerate(value))


def _person(person: Mapping[str, Any]) -> str:
    """How the dry run's people are named: name, else email, else id."""
    return str(person.get("name") or person.get("email") or person.get("id"))


ENV = Environment(
    loader=PackageLoader("gateway.web.console", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters.update(at=_at, iso=_iso, age=_age, pretty=_pretty, entries=_entries, person=_person)


def render(template: str, **context: Any) -> str:
    return ENV.get_template(template).render(**context)


def html(template: str, status: int = 200, **context: Any) -> web.Response:
    return web.Response(text=render(template, **context), status=status, content_type="text/html", charset="utf-8")
