"""The console's URLs, and its vendored script and styles."""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from gateway.web.console import actions, events, overview, pages
from gateway.web.console.guard import SESSIONS, console_off, console_page, log_in, log_out, login_form, security_headers
from gateway.web.console.session import Sessions
from gateway.web.keys import CONFIG

_STATIC_TYPES = {"console.css": "text/css", "console.js": "text/javascript"}
_STATIC = {name: (resources.files(__package__) / "static" / name).read_bytes() for name in _STATIC_TYPES}


def add_console_routes(app: web.Application) -> None:
    """Register /console/ (it answers 404 while admin.token is unset, and follows reloads)."""
    app[SESSIONS] = Sessions()
    app.on_response_prepare.append(security_headers)
    app.router.add_routes([
        web.get("/console", _home),
        web.get("/console/static/{name}", _static),
        web.get("/console/login", login_form),
        web.post("/console/login", log_in),
        web.post("/console/logout", console_page(log_out)),
        web.get("/console/", console_page(overview.overview_page)),
        web.get("/console/events", console_page(events.events_page)),
        web.get("/console/events/rows", console_page(events.newer_rows, activity=False)),
        web.get("/console/events/{id}", console_page(pages.event_page)),
        web.post("/console/deliveries/{id}/replay", console_page(actions.replay_delivery)),
        web.get("/console/dead-letters", console_page(actions.dead_letters_page)),
        web.post("/console/dead-letters/replay", console_page(actions.replay_dead_letters)),
        web.get("/console/config", console_page(pages.config_page)),
        web.get("/console/playground", console_page(actions.playground_page)),
        web.post("/console/playground", console_page(actions.run_playground)),
    ])  # fmt: skip


async def _home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMovedPermanently("/console/")


async def _static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if request.app[CONFIG].active.loaded.config.admin.token is None:
        return console_off()
    if name not in _STATIC:
        raise web.HTTPNotFound()
    return web.Response(body=_STATIC[name], content_type=_STATIC_TYPES[name], headers={"Cache-Control": "no-cache"})
