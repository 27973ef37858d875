"""Getting stored deliveries out: the worker, sending (the only user of aiohttp's client),
classifying answers, backoff, limits (local and Redis), dead letters and replay.

May import `gateway.routing` (replay re-renders), `gateway.store`, `gateway.config` and the
shared modules; never `gateway.ingest`, `gateway.web` or `gateway.ops`.
"""
