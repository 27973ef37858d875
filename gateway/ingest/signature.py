"""Checking Missive's `X-Hook-Signature: sha256=<hex>` over the raw body."""

from __future__ import annotations

import hmac

from gateway.errors import SignatureError
from gateway.hashing import hmac_sha256

SIGNATURE_HEADER = "X-Hook-Signature"


def sign(secret: bytes, body: bytes) -> str:
    """The header value Missive sends for `body` signed with `secret`."""
    return "sha256=" + hmac_sha256(secret, body).hex()


def verify(secrets: list[bytes], body: bytes, header: str | None) -> None:
    """Return if any secret signed `body`; raise SignatureError otherwise.

    Every secret is tried (no early exit), each comparison in constant time.
    """
    if not header:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    scheme, _, given = header.strip().partition("=")
    if scheme.lower() != "sha256" or not given:
        raise SignatureError(f"{SIGNATURE_HEADER} must look like 'sha256=<hex>'")
    expected = given.lower().encode("utf-8", "surrogateescape")  # aiohttp decodes bytes that are not UTF-8 so
    valid = False
    for secret in secrets:
        valid |= hmac.compare_digest(hmac_sha256(secret, body).hex().encode(), expected)
    if not valid:
        raise SignatureError(f"{SIGNATURE_HEADER} does not match the body")
