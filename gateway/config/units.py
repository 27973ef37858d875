"""Durations (`500ms`, `10s`, `5m`, `1h`, `7d`), sizes (`512KiB`, `1MiB`, `1MB`) and rates (`300/m`, `900/15m`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_DURATION_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_BYTES = {
    None: 1, "B": 1, "KB": 1000, "KiB": 1024, "MB": 1000**2, "MiB": 1024**2, "GB": 1000**3, "GiB": 1024**3,
}


def parse_duration(value: str | int | float) -> float:
    """Seconds in a duration; bare numbers are seconds. Raises ValueError with the accepted forms."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; write it like '500ms', '10s', '5m', '1h' or '7d'")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a duration; write it like '500ms', '10s', '5m', '1h' or '7d'")
        seconds = float(match.group(1)) * _DURATION_S[match.group(2)]
    if seconds < 0:
        raise ValueError(f"{value!r} is negative; a duration must be 0 or more")
    return seconds


def parse_size(value: str | int) -> int:
    """Bytes in a size; bare numbers are bytes. Raises ValueError with the accepted forms."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size; write it like '512KiB' or '1MiB'")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a size; write it like '512KiB', '1MiB' or '2000000'")
        size = int(float(match.group(1)) * _SIZE_BYTES[match.group(2)])
    if size <= 0:
        raise ValueError(f"{value!r} must be more than 0 bytes")
    return size


@dataclass(frozen=True)
class RateWindow:
    """At most `limit` requests in any `window_ms` (a sliding window, as services count their quotas)."""

    limit: int
    window_ms: int
    text: str = field(default="", compare=False)  # as written, for showing the config


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\S.*?)\s*$")
_RATE_FORMS = "'1/s', '300/m', '1000/h', '10000/d' or '900/15m'"


def parse_rate(value: str) -> RateWindow:
    """A rate written `N/s`, `N/m`, `N/h`, `N/d` or `N/<duration>`: at most N requests in any such window."""
    match = _RATE.match(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"{value!r} is not a rate; write it like {_RATE_FORMS}")
    count, per = match.groups()
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"{value!r}: the count must be a whole number of requests, 1 or more (e.g. '1/2s')")
    try:
        window_s = parse_duration(f"1{per}" if per in _DURATION_S else per)
    except ValueError:
        raise ValueError(f"{value!r} is not a rate; write it like {_RATE_FORMS}") from None
    window_ms = round(window_s * 1000)
    if window_ms < 1:
        raise ValueError(f"{value!r}: the window must be 1ms or longer")
    return RateWindow(int(count), window_ms, f"{count}/{per}")


def parse_rates(value: Any) -> tuple[RateWindow, ...]:
    """One rate, or a list of rates that must all allow a request."""
    if isinstance(value, RateWindow):
        return (value,)
    if isinstance(value, list | tuple):
        if not value:
            raise ValueError(f"give at least one rate, like {_RATE_FORMS}")
        return tuple(item if isinstance(item, RateWindow) else parse_rate(item) for item in value)
    return (parse_rate(value),)
