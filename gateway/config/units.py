"""Durations (`500ms`, `10s`, `5m`, `1h`, `7d`) and sizes (`512KiB`, `1MiB`, `1MB`)."""

from __future__ import annotations

import re

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


def parse_rate(value: str) -> float:
    """Events per second in a rate limit written `N/s`, `N/m` or `N/h`."""
    match = re.match(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\s*$", value)
    if not match:
        raise ValueError(f"{value!r} is not a rate; write it like '1/s', '100/m' or '1000/h'")
    per_s = float(match.group(1)) / _DURATION_S[match.group(2)]
    if per_s <= 0:
        raise ValueError(f"{value!r} must allow more than 0 requests")
    return per_s
