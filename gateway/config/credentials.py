"""Which values in a config are credentials, so every output can hide them.

Declared secrets (source secrets, tokens, signing keys, the admin token), values of
environment variables with secret-looking names, and credentials written literally:
values of credential headers (`Authorization`, `*token*`...), URL passwords and secret
query values, and the token at the end of an incoming-webhook URL.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl, urlsplit

from gateway.config.presets import basic_authorization
from gateway.config.schema import AuthConfig, GatewayConfig
from gateway.mask import MASK, Masker

# Destination types whose URL ends in a credential (incoming webhooks), and the least length taken for one:
# Slack's, Discord's and Mattermost's tokens are 24 to 68 characters, shorter last segments are ordinary words.
# (Teams Workflows and Google Chat carry theirs in query parameters, `sig=`, `key=` and `token=`.)
_WEBHOOK_TYPES = frozenset({"slack", "discord", "mattermost"})
_MIN_WEBHOOK_TOKEN_CHARS = 12
_MIN_SECRET_CHARS = 4
_PATTERNS = Masker()  # no known secrets: recognises credentials by their place only


def config_credentials(config: GatewayConfig, interpolated: Iterable[str] = ()) -> set[str]:
    """Every credential value in `config`; `interpolated` adds values read from secret-looking variables."""
    found = set(interpolated) | _declared(config) | literal_credentials(config)
    return {value for value in found if len(value) >= _MIN_SECRET_CHARS}


def _declared(config: GatewayConfig) -> set[str]:
    found = {secret.get_secret_value() for source in config.sources.values() for secret in source.secrets}
    for destination in config.destinations.values():
        auth = destination.credentials()
        if auth is not None:
            found |= _auth_secrets(auth)
        if destination.sign is not None:
            found.add(destination.sign.secret.get_secret_value())
        if destination.routing_key is not None:
            found.add(destination.routing_key.get_secret_value())
    if config.admin.token is not None:
        found.add(config.admin.token.get_secret_value())
    return found


def _auth_secrets(auth: AuthConfig) -> set[str]:
    """The secret values of `auth`, and the Basic credentials built from them, as sent."""
    found = {secret.get_secret_value() for secret in (auth.token, auth.password, auth.client_secret) if secret}
    if auth.password is not None:
        found.add(basic_authorization(auth.username or "", auth.password.get_secret_value()).removeprefix("Basic "))
    if auth.client_secret is not None:
        encoded = basic_authorization(auth.client_id or "", auth.client_secret.get_secret_value(), form_encoded=True)
        found.add(encoded.removeprefix("Basic "))
    return found


def literal_credentials(config: GatewayConfig) -> set[str]:
    """Credentials written literally in a config: values of credential
    headers (`Authorization`, `*token*`...), URL passwords and secret query values, webhook URL tokens."""
    found: set[str] = set()
    for destination in config.destinations.values():
        found |= _header_secrets(destination.headers)
        if destination.url:
            found |= _url_secrets(destination.url, webhook=destination.type in _WEBHOOK_TYPES)
    for route in config.routes:
        for send in route.send:
            found |= _header_secrets(send.headers or {})
            if send.url:
                webhook = config.destinations[send.to].type in _WEBHOOK_TYPES
                found |= _url_secrets(send.url, webhook)
    return {value for value in found if len(value) >= _MIN_SECRET_CHARS and not _is_template(value)}


def _header_secrets(headers: dict[str, str]) -> set[str]:
    found = set()
    for name, masked in _PATTERNS.headers(headers).items():
        value = headers[name]
        if masked != value:  # a credential header: `***`, or `Scheme ***` keeping the scheme
            found |= {value, value[len(masked) - len(MASK):]}
    return found


def _url_secrets(url: str, webhook: bool) -> set[str]:
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return set()
    found = set()
    if password:
        found |= {password, basic_authorization(parts.username or "", password).removeprefix("Basic ")}
    token = parts.path.rstrip("/").rpartition("/")[2]
    if webhook and len(token) >= _MIN_WEBHOOK_TOKEN_CHARS:
        found.add(token)
    for name, value in parse_qsl(parts.query):
        if _PATTERNS.url(f"?{name}=x") != f"?{name}=x":  # the masker's own notion of a secret parameter
            found.add(value)
    return found


def _is_template(value: str) -> bool:
    return "{{" in value or "{%" in value
