"""Running the gateway: metrics, logs, hot reload, the config in force.

May import `gateway.ingest`, `gateway.delivery`, `gateway.store`, `gateway.config` and the
shared modules; `gateway.web` and `gateway.cli` build on it.
"""
