"""The accept path: check the signature, parse, route, store durably, answer.

May import `gateway.routing`, `gateway.store`, `gateway.config` and the shared modules.
"""
