"""The config language, declared once as typed models.

Validation, `gateway schema` (JSON Schema for editors) and the README's reference all come
from these models: every field has a description, and unknown keys are errors.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    WithJsonSchema,
    model_validator,
)

from gateway.config.presets import with_preset_settings
from gateway.config.units import RateWindow, parse_duration, parse_rates, parse_size

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema({"type": ["string", "number"], "description": "a duration: '500ms', '10s', '5m', '1h', '7d'"}),
]
Size = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema({"type": ["string", "integer"], "description": "a size: '512KiB', '1MiB' or bytes"}),
]
Rates = Annotated[
    tuple[RateWindow, ...],
    BeforeValidator(parse_rates),
    PlainSerializer(lambda rates: [rate.text for rate in rates]),
    WithJsonSchema({
        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}],
        "description": "a rate, or a list of rates that must all allow a request: '1/s', '300/m', '900/15m'",
    }),
]  # fmt: skip
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _http_method(value: str) -> str:
    method = value.strip().upper()
    if method not in HTTP_METHODS:
        guess = difflib.get_close_matches(method, HTTP_METHODS, n=1)
        advice = f"did you mean '{guess[0]}'?" if guess else f"use one of {', '.join(HTTP_METHODS)}"
        raise ValueError(f"{value!r} is not an HTTP method; {advice}")
    return method


def _not_blank(secret: SecretStr) -> SecretStr:
    if not secret.get_secret_value().strip():
        raise ValueError(
            "the secret is empty: anyone could sign or authenticate with an empty key; set it (an environment "
            "variable set to '' gives an empty value) or remove the entry"
        )
    return secret


HttpMethod = Annotated[
    str,
    AfterValidator(_http_method),
    WithJsonSchema({"type": "string", "enum": list(HTTP_METHODS), "description": "an HTTP method (any case)"}),
]
Secret = Annotated[SecretStr, AfterValidator(_not_blank)]
DestinationType = Literal["http", "slack", "discord", "teams", "missive", "google_chat", "mattermost", "pagerduty"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ServerConfig(Model):
    host: str = Field("0.0.0.0", description="Address to listen on.")
    port: int = Field(8080, ge=1, le=65535, description="Port to listen on (overridden by --port).")
    max_body: Size = Field(1024 * 1024, description="Largest webhook body accepted; larger ones get 413.")
    render_timeout: Duration = Field(
        1.0, gt=0, description="Longest time one request may take to render; a render over it makes that delivery "
        "a dead letter.",
    )
    render_max_bytes: Size = Field(
        1024 * 1024, gt=0, description="Most text each part of a request (the URL, a header, the body) may render to; "
        "a render over it makes that delivery a dead letter.",
    )
    read_timeout: Duration = Field(
        10.0, gt=0, description="Longest wait for a request's headers, and again for its body; then the connection "
        "is closed (a body cut off gets 408).",
    )
    shutdown_grace: Duration = Field(
        10.0, description="On SIGTERM/SIGINT, how long requests and delivery attempts in flight may take to finish."
    )


class StorageConfig(Model):
    backend: Literal["sqlite", "redis"] = Field("sqlite", description="Where events and deliveries are kept.")
    path: str = Field("data/gateway.db", description="SQLite file (backend: sqlite), relative to the config file.")
    url: str | None = Field(None, description="Redis URL (backend: redis), e.g. redis://localhost:6379/0.")
    retention: Duration = Field(7 * 86400.0, description="Delivered events older than this are pruned.")
    lease_margin: Duration = Field(
        30.0,
        description="A claimed delivery is leased for the longest destination timeout plus this; deliveries that "
        "were in flight when a gateway died are sent again once their lease runs out.",
    )

    @model_validator(mode="after")
    def _redis_needs_url(self) -> StorageConfig:
        if self.backend == "redis" and not self.url:
            raise ValueError("backend 'redis' needs 'url', e.g. url: redis://localhost:6379/0")
        return self


class AdminConfig(Model):
    token: Secret | None = Field(
        None, description="Bearer token for /admin/ and the console's login; both are off (404) when unset."
    )
    host: str | None = Field(
        None, description="Address of a second listener for /admin/, /console/ and /metrics (needs port); "
        "default 127.0.0.1.",
    )
    port: int | None = Field(
        None, ge=1, le=65535,
        description="Port of the second listener; when set, /admin/, /console/ and /metrics are served there only.",
    )
    session_idle: Duration = Field(1800.0, description="A console session ends after this long without a request.")
    secure_cookie: bool = Field(
        False, description="Mark the console's cookie Secure even on plain HTTP (behind a TLS proxy); "
        "it is Secure on HTTPS requests anyway.",
    )

    @model_validator(mode="after")
    def _host_needs_port(self) -> AdminConfig:
        if self.host is not None and self.port is None:
            raise ValueError("admin.host needs admin.port, e.g. {host: 127.0.0.1, port: 9090}")
        return self


class SourceConfig(Model):
    path: str | None = Field(None, description="URL path that receives this source's webhooks; default /hooks/<name>.")
    secrets: list[Secret] = Field(
        default_factory=list,
        description="Signing secrets; a request signed with any one is accepted (several during rotation). "
        "Empty: unsigned requests are accepted, and the gateway warns at start-up.",
    )
    dedupe_window: Duration = Field(600.0, description="The same body again within this window is not routed twice.")


class RetryConfig(Model):
    attempts: int = Field(8, ge=1, le=100, description="Attempts in all, the first included, before a dead letter.")
    backoff: Duration = Field(1.0, description="Base of the exponential backoff (full jitter).")
    max_backoff: Duration = Field(600.0, description="Longest wait between two attempts.")
    max_wait: Duration = Field(
        86400.0, description="Longest wait for a spent quota (a 429's Retry-After); a longer hint is a dead letter."
    )


class SignConfig(Model):
    secret: Secret = Field(description="HMAC-SHA256 key used to sign outgoing bodies.")
    header: str = Field("X-Gateway-Signature", description="Header that carries 'sha256=<hex>'.")


AuthType = Literal["bearer", "basic", "oauth2_client_credentials"]
_AUTH_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {  # type -> (required, optional)
    "bearer": (("token",), ()),
    "basic": (("username", "password"), ()),
    "oauth2_client_credentials": (("token_url", "client_id", "client_secret"), ("scope", "audience", "client_auth")),
}


class AuthConfig(Model):
    """How the gateway proves who it is to a destination; added to each request when it is sent, never stored."""

    type: AuthType = Field(description="bearer, basic or oauth2_client_credentials.")
    token: Secret | None = Field(None, description="type bearer: the token, sent as 'Authorization: Bearer ...'.")
    username: str | None = Field(None, description="type basic: the user name.")
    password: Secret | None = Field(None, description="type basic: the password.")
    token_url: str | None = Field(None, description="type oauth2_client_credentials: the token endpoint (https URL).")
    client_id: str | None = Field(None, description="type oauth2_client_credentials: the client id.")
    client_secret: Secret | None = Field(None, description="type oauth2_client_credentials: the client secret.")
    scope: str | None = Field(None, description="type oauth2_client_credentials: scopes asked for, space-separated.")
    audience: str | None = Field(None, description="type oauth2_client_credentials: the audience asked for.")
    client_auth: Literal["body", "basic"] | None = Field(
        None, description="type oauth2_client_credentials: client id and secret in the form (body, the default) "
        "or as HTTP Basic (basic)."
    )

    @model_validator(mode="after")
    def _fields_of_its_type(self) -> AuthConfig:
        required, optional = _AUTH_FIELDS[self.type]
        missing = [name for name in required if getattr(self, name) is None]
        if missing:
            raise ValueError(f"auth type {self.type} needs {', '.join(missing)}")
        extra = sorted(self.model_fields_set - {"type", *required, *optional})
        if extra:
            owner = next(kind for kind, (req, opt) in _AUTH_FIELDS.items() if extra[0] in req + opt)
            raise ValueError(f"'{extra[0]}' belongs to auth type {owner}, not {self.type}")
        if self.token_url is not None and not self.token_url.startswith(("https://", "http://")):
            raise ValueError(f"token_url {self.token_url!r} must be an absolute http(s) URL")
        return self


class DestinationConfig(Model):
    type: DestinationType = Field(
        "http", description="Preset: http, slack, discord, teams, missive, google_chat, mattermost or pagerduty."
    )
    url: str | None = Field(
        None, description="Where to send (a template). Required except for types missive and pagerduty."
    )
    method: HttpMethod = Field("POST", description="HTTP method.")
    headers: dict[str, str] = Field(default_factory=dict, description="Headers sent with every request (templates).")
    token: Secret | None = Field(
        None, description="Bearer token (Slack chat.postMessage bot token, Missive API token); short for auth type "
        "bearer."
    )
    auth: AuthConfig | None = Field(None, description="Credentials added when each request is sent (never stored).")
    timeout: Duration = Field(10.0, description="Longest wait for one answer.")
    retry: RetryConfig = Field(default_factory=RetryConfig, description="Retry policy.")  # type: ignore[arg-type]
    rate_limit: Rates | None = Field(
        None, description="At most N requests in any window of a length: '1/s', '300/m', '900/15m', or a list of "
        "them that must all allow a request."
    )
    concurrency: int = Field(4, ge=1, le=256, description="Most requests in flight at once.")
    allow_private_hosts: bool = Field(
        False, description="Let URLs whose scheme, host or port come from a template reach loopback, private, "
        "link-local and other non-public addresses (refused by default).",
    )
    sign: SignConfig | None = Field(None, description="Sign outgoing bodies (type http) so receivers can verify us.")
    routing_key: Secret | None = Field(
        None, description="PagerDuty Events v2 routing key (type pagerduty), added to every event's body."
    )

    @model_validator(mode="before")
    @classmethod
    def _preset_settings(cls, data: Any) -> Any:
        return with_preset_settings(data)

    @model_validator(mode="after")
    def _one_credential(self) -> DestinationConfig:
        if self.token is not None and self.auth is not None:
            raise ValueError("give 'token' or 'auth', not both ('token: X' is short for auth: {type: bearer, ...})")
        return self

    def credentials(self) -> AuthConfig | None:
        """The destination's auth, with `token:` read as auth type bearer."""
        if self.token is not None:
            return AuthConfig.model_validate({"type": "bearer", "token": self.token})
        return self.auth


TEXT_OPERATORS = ("equals", "in", "contains", "glob", "matches")


class Condition(Model):
    """One test on a JSONPath, or all/any/not of other conditions."""

    path: str | None = Field(None, description="JSONPath into the payload, e.g. $.rule.type.")
    equals: Any = Field(None, description="Value equals this.")
    in_: list[Any] | None = Field(None, alias="in", description="Value is one of these.")
    contains: Any = Field(None, description="Value (a string or list) contains this.")
    matches: str | None = Field(None, description="Value matches this regular expression (search).")
    glob: str | None = Field(None, description="Value matches this shell-style pattern, e.g. '*@example.com'.")
    exists: bool | None = Field(None, description="The path yields a value (true) or nothing (false).")
    gt: Any = Field(None, description="Value is greater than this.")
    gte: Any = Field(None, description="Value is greater than or equal to this.")
    lt: Any = Field(None, description="Value is less than this.")
    lte: Any = Field(None, description="Value is less than or equal to this.")
    ignore_case: bool = Field(
        False, description="equals, in, contains, glob and matches compare text in any case (Alma@X.COM = alma@x.com)."
    )
    all: list[Condition] | None = Field(None, description="Every condition holds.")
    any: list[Condition] | None = Field(None, description="At least one condition holds.")
    not_: Condition | None = Field(None, alias="not", description="The condition does not hold.")

    @model_validator(mode="after")
    def _one_shape(self) -> Condition:
        ops = self.operators()
        combinators = (("all", self.all), ("any", self.any), ("not", self.not_))
        groups = [name for name, value in combinators if value is not None]
        if self.path is not None:
            if groups:
                raise ValueError(f"a condition has either 'path' or '{groups[0]}', not both")
            if len(ops) != 1:
                found = ", ".join(ops) or "none"
                raise ValueError(
                    f"a 'path' condition needs exactly one operator (found: {found}); "
                    "use one of equals, in, contains, matches, glob, exists, gt, gte, lt, lte"
                )
        elif ops:
            raise ValueError(f"operator '{ops[0]}' needs a 'path', e.g. {{path: $.rule.type, {ops[0]}: ...}}")
        elif len(groups) != 1:
            raise ValueError("a condition needs 'path' with an operator, or exactly one of all, any, not")
        if self.ignore_case and not set(ops) & set(TEXT_OPERATORS):
            raise ValueError(f"'ignore_case' goes with {', '.join(TEXT_OPERATORS)}, beside the 'path' it applies to")
        return self

    def operators(self) -> list[str]:
        """Names of the operators set on this condition, as written in YAML."""
        names = ("equals", "in", "contains", "matches", "glob", "exists", "gt", "gte", "lt", "lte")
        fields = self.model_fields_set
        return [name for name in names if (name + "_" if name == "in" else name) in fields]


class SendConfig(Model):
    to: str = Field(description="Name of a destination.")
    body: Any = Field(None, description="YAML structure whose string leaves are templates; sent as JSON.")
    card: dict[str, Any] | None = Field(
        None, description="Teams: the Adaptive Card (a YAML structure like body); sent in the message envelope."
    )
    template: str | None = Field(None, description="Raw text body (a template).")
    template_file: str | None = Field(
        None, description="File holding a raw text body template, relative to the config."
    )
    headers: dict[str, str] | None = Field(None, description="Extra headers (templates), added to the destination's.")
    url: str | None = Field(None, description="Overrides the destination's URL (a template).")
    method: HttpMethod | None = Field(None, description="Overrides the destination's method.")
    id: str | None = Field(None, description="Names this request, so a later one of the route can run after it.")
    after: str | None = Field(
        None, description="The id of an earlier request of this route: this one is rendered and sent once that one "
        "is delivered, and its templates see steps.<id>.status, .headers, .json and .text."
    )

    @model_validator(mode="after")
    def _one_body(self) -> SendConfig:
        given = [name for name in ("body", "card", "template", "template_file") if name in self.model_fields_set]
        if len(given) > 1:
            raise ValueError(f"give one of body, card, template, template_file (found: {', '.join(given)})")
        return self


class OncePerConfig(Model):
    key: str = Field(
        "{{ conversation.id }}", description="What is limited: a template rendered for each matching event."
    )
    window: Duration = Field(description="After a match, the route does not match again for the same key this long.")

    @model_validator(mode="after")
    def _window_runs(self) -> OncePerConfig:
        if self.window <= 0:
            raise ValueError("window must be longer than 0, e.g. window: 30m")
        return self


class RouteConfig(Model):
    name: str = Field(description="Unique name, used in logs, metrics and replay filters.")
    source: str | None = Field(None, description="Source whose events this route sees; optional with one source.")
    when: Condition | None = Field(None, description="Condition on the payload; no condition matches every event.")
    send: list[SendConfig] = Field(min_length=1, description="Requests to make when the route matches.")
    continue_: bool = Field(
        True, alias="continue", description="true: later routes are evaluated too; false: stop at this route."
    )
    once_per: OncePerConfig | None = Field(
        None, description="Match at most once per key per window, e.g. {key: '{{ conversation.id }}', window: 30m}."
    )


class GatewayConfig(Model):
    server: ServerConfig = Field(default_factory=ServerConfig)  # type: ignore[arg-type]
    storage: StorageConfig = Field(default_factory=StorageConfig)  # type: ignore[arg-type]
    admin: AdminConfig = Field(default_factory=AdminConfig)  # type: ignore[arg-type]
    sources: dict[str, SourceConfig] = Field(min_length=1, description="Where webhooks come from.")
    destinations: dict[str, DestinationConfig] = Field(default_factory=dict, description="Where requests go.")
    routes: list[RouteConfig] = Field(default_factory=list, description="Which events go where, in order.")
