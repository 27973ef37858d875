"""Which addresses a request whose host came from a template may connect to: public ones only.

A template that puts payload data into a URL's scheme, host or port lets the sender of an email
choose where the gateway connects, credentials attached. Such requests may not reach loopback,
private, link-local (the cloud metadata address 169.254.169.254), shared (CGNAT), multicast,
unspecified or otherwise non-global addresses, unless their destination sets `allow_private_hosts`.
The check is made on the address the connection uses (`gateway.delivery.send`), so a name that
resolves to a public address when checked and a private one when used (DNS rebinding) gains nothing.
"""

from __future__ import annotations

import ipaddress

_CGNAT = ipaddress.ip_network("100.64.0.0/10")


class BlockedAddress(OSError):
    """A connection to a non-public address was refused; the message names the host, the address and why."""


def refusal(address: str) -> str | None:
    """Why `address` (an IP address) is not public, or None when it is."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])  # an IPv6 zone (`fe80::1%eth0`) is not part of it
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    checks = (
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (ip in _CGNAT, "shared (CGNAT)"),
        (ip.is_private, "private"),
        (not ip.is_global, "not public"),
    )
    return next((why for failed, why in checks if failed), None)


def blocked(host: str, address: str, why: str) -> BlockedAddress:
    shown = host if host == address else f"{host} ({address})"
    return BlockedAddress(
        f"refused to connect to {shown} ({why} address): the URL's host came from a template; "
        "set allow_private_hosts: true on the destination if it must reach it"
    )
