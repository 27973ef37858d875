"""Filter values as people write them (query parameters, JSON bodies, CLI options), checked and converted.

Deliveries and event lookups share these, so both answer a bad value the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from gateway.config.units import parse_duration
from gateway.errors import GatewayError
from gateway.model import DeliveryStatus

MAX_LIMIT = 10_000


class FilterError(GatewayError):
    """A filter value is not acceptable (unknown status, bad duration...)."""


def texts(fields: Mapping[str, object], known: Iterable[str]) -> dict[str, str]:
    """The given filters as text, None dropped; FilterError for an unknown name or a value that is not text."""
    names = tuple(known)
    unknown = sorted(set(fields) - set(names))
    if unknown:
        raise FilterError(f"unknown filter '{unknown[0]}'; filters are: {', '.join(names)}")
    return {name: _text(name, value) for name, value in fields.items() if value is not None}


def _text(name: str, value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise FilterError(f"filter '{name}' must be a string, not {type(value).__name__}")
    return str(value)


def status(value: str) -> DeliveryStatus:
    try:
        return DeliveryStatus(value)
    except ValueError:
        choices = ", ".join(status.value for status in DeliveryStatus)
        raise FilterError(f"unknown status '{value}'; use one of {choices}") from None


def moment_ms(name: str, value: str, now_ms: int) -> int:
    """A point in time: a duration ago (`1h`) or a date and time (`2026-03-01T12:00:00Z`; without an offset, UTC)."""
    try:
        return now_ms - round(parse_duration(value) * 1000)
    except ValueError as exc:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise FilterError(f"{name}: {exc}, or a time like 2026-03-01T12:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


def limit(value: str, most: int = MAX_LIMIT) -> int:
    if not value.isdigit() or not 1 <= int(value) <= most:
        raise FilterError(f"limit {value!r} must be a whole number from 1 to {most}")
    return int(value)
