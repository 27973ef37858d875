"""The listening sockets: the public one, and with `admin.port` a second one for /admin/, /console/ and /metrics.

With a second listener, each path answers on one side only: the public port serves the hooks and
the health checks, the admin port the admin API, the console, the metrics and the health checks.
A request on the wrong side gets the 404 an unknown path gets.
"""

from __future__ import annotations

import ipaddress
import socket

from aiohttp import web

from gateway.config.schema import GatewayConfig
from gateway.errors import GatewayError
from gateway.routing.compiled import LoadedConfig
from gateway.web.errors import Handler, error_response
from gateway.web.keys import ADMIN_PORT

DEFAULT_ADMIN_HOST = "127.0.0.1"
PLACEHOLDER_PREFIX = "change-me"  # the example config's secret when MISSIVE_SECRET is unset starts so
_ADMIN_SIDE = ("/admin/", "/console/")
_ADMIN_SIDE_EXACT = frozenset({"/admin", "/console", "/metrics"})
_BOTH_SIDES = frozenset({"/healthz", "/readyz"})


def bind(config: GatewayConfig, host: str | None = None, port: int | None = None) -> list[socket.socket]:
    """The listening sockets, public first; `host` and `port` override `server.host` and `server.port`."""
    public = (host or config.server.host, port or config.server.port)
    wanted = [public]
    admin = config.admin
    if admin.port is not None:
        if admin.port == public[1]:
            raise GatewayError(f"admin.port {admin.port} is the public port too; give the admin listener its own port")
        wanted.append((admin.host or DEFAULT_ADMIN_HOST, admin.port))
    bound: list[socket.socket] = []
    try:
        for address in wanted:
            bound.append(_listen(*address))
    except GatewayError:
        for sock in bound:
            sock.close()
        raise
    return bound


def _listen(host: str, port: int) -> socket.socket:
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, port), family=family, backlog=512)
    except OSError as exc:
        raise GatewayError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def refuse_placeholder_secrets(loaded: LoadedConfig, host: str) -> None:
    """Refuse to take webhooks from beyond this machine while a source's secret is a placeholder (`change-me...`,
    the example config's default when MISSIVE_SECRET is unset): anyone who read the example could sign."""
    if is_loopback(host):
        return
    for name, source in loaded.config.sources.items():
        for index, secret in enumerate(source.secrets):
            if not secret.get_secret_value().lower().startswith(PLACEHOLDER_PREFIX):
                continue
            variables = loaded.variables.get(f"sources.{name}.secrets[{index}]")
            fix = f"set {variables[0]}" if variables else f"write it in sources.{name}.secrets"
            raise GatewayError(
                f"source '{name}' still has a placeholder secret ('{PLACEHOLDER_PREFIX}...') and the gateway would "
                f"listen on {host}: {fix} to the secret of your Missive rule (or listen on 127.0.0.1 to try it)"
            )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def on_admin_side(path: str) -> bool | None:
    """True: served by the admin listener only; False: by the public one only; None: by both."""
    if path in _BOTH_SIDES:
        return None
    return path in _ADMIN_SIDE_EXACT or path.startswith(_ADMIN_SIDE)


@web.middleware
async def split_listeners(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With a second listener, answer each path on its own side only."""
    admin_port = request.app[ADMIN_PORT]
    if admin_port is not None:
        side = on_admin_side(request.path)
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        arrived_on_admin = isinstance(sockname, tuple) and sockname[1] == admin_port
        if side is not None and side != arrived_on_admin:
            return error_response(404, f"nothing at {request.path} on this port")
    return await handler(request)
