"""The web console under /console/: server-rendered pages over the services the CLI and the admin API use.

Part of the `web` stage (it may import what `gateway.web` may). Its templates are its own, in an
autoescaping Jinja environment separate from the routing sandbox; its script and styles are vendored
under `static/`, so nothing is fetched from anywhere else.
"""
