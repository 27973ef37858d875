"""Logging: text for people or one JSON object per line for machines, and never a secret in either.

Every record, from any logger, has its message, its `extra` fields and its traceback run
through one masker holding the secrets of every config this process has loaded: a replaced
config's secrets stay masked, since deliveries queued under it still carry them.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import orjson

from gateway.mask import Masker, map_strings
from gateway.routing.compiled import LoadedConfig

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_PATTERNS = Masker()  # no known secrets: masks what is recognisable by its place (URL credentials, webhook paths)


class Secrets:
    """What logs must never show, gathered from every config loaded by this process."""

    def __init__(self) -> None:
        self._values: frozenset[str] = frozenset()
        self._masker = _PATTERNS

    def remember(self, loaded: LoadedConfig) -> None:
        if not loaded.secrets <= self._values:
            self._values |= loaded.secrets
            self._masker = Masker(self._values)

    def mask(self, text: str) -> str:
        return self._masker.url(text)

    def mask_value(self, value: Any) -> Any:
        return map_strings(value, self.mask)


# Logging is process-wide, so is what it masks.
SECRETS = Secrets()


def remember_secrets(loaded: LoadedConfig) -> None:
    """Mask `loaded`'s secrets in every log record from now on."""
    SECRETS.remember(loaded)


class MaskingFilter(logging.Filter):
    """Masks a record in place (message, `extra` fields, traceback), so every handler sees it masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed logging call must not break the caller
            message = f"{record.msg} {record.args}"
        record.msg, record.args = SECRETS.mask(message), None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_FIELDS:
                setattr(record, key, SECRETS.mask_value(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = SECRETS.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = SECRETS.mask(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, then the record's `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        document.update((key, value) for key, value in vars(record).items() if key not in _STANDARD_FIELDS)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            document["exc"] = record.exc_text
        if record.stack_info:
            document["stack"] = record.stack_info
        return orjson.dumps(document, default=str).decode()


def default_format(stream: TextIO) -> LogFormat:
    """Text for a person at a terminal, JSON for a log collector."""
    return "text" if stream.isatty() else "json"


def make_handler(log_format: LogFormat | None = None, stream: TextIO | None = None) -> logging.Handler:
    """A handler writing masked records to `stream` (stderr) in `log_format` (default: by `default_format`)."""
    out = stream or sys.stderr
    handler = logging.StreamHandler(out)
    handler.addFilter(MaskingFilter())
    chosen = log_format or default_format(out)
    handler.setFormatter(JsonFormatter() if chosen == "json" else logging.Formatter(TEXT_FORMAT))
    return handler


def setup_logging(log_format: LogFormat | None = None, level: str = "info") -> None:
    """Send every logger's records to stderr through `make_handler`, from `level` up."""
    logging.basicConfig(level=level.upper(), handlers=[make_handler(log_format)], force=True)
