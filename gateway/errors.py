"""The gateway's exceptions.

GatewayError
├── ConfigError        a config file is invalid; carries every problem found
├── SignatureError     a request's X-Hook-Signature is missing or wrong
├── PayloadError       a request body is not acceptable (too large, not JSON, too slow)
├── ClientGone         the client closed its connection before its request was read
├── RenderError        a template failed on a payload
├── StoreUnavailable   the store cannot take writes right now (answer 503)
└── DeliveryError      a delivery cannot be built or sent
"""

from __future__ import annotations

from dataclasses import dataclass


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """`1 problem`, `2 problems`; `nouns` for an irregular plural (`delivery`, `deliveries`)."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


class GatewayError(Exception):
    """Base class of every error the gateway raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong in a config: where, what, and how to fix it."""

    path: str
    message: str
    line: int | None = None
    hint: str | None = None

    def __str__(self) -> str:
        where = [f"line {self.line}"] if self.line is not None else []
        where += [self.path] if self.path else []
        text = ": ".join([*where, self.message])
        return f"{text}; {self.hint}" if self.hint else text


class ConfigError(GatewayError):
    """A config file is invalid; `problems` lists every problem found."""

    def __init__(self, file: str, problems: list[ConfigProblem]) -> None:
        self.file = file
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(f"{self.file}: {problem}" for problem in self.problems)

    def headline(self, what: str) -> str:
        """`config.yaml: 2 problems in the config:`, the line above `render()`'s."""
        return f"{self.file}: {plural(len(self.problems), 'problem')} in {what}:"


class SignatureError(GatewayError):
    """A request's X-Hook-Signature is missing or does not match any secret."""


class PayloadError(GatewayError):
    """A request body is not acceptable; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        self.status = status
        super().__init__(message)


class ClientGone(GatewayError):
    """The client closed its connection before the gateway had read its request."""


class RenderError(GatewayError):
    """A template failed on a payload (undefined name, bad filter input...)."""


class StoreUnavailable(GatewayError):
    """The store cannot take writes right now; ingest answers 503 so Missive retries."""


class DeliveryError(GatewayError):
    """A delivery cannot be built or sent."""
