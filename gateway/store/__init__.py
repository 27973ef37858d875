"""Where events and deliveries live: the interface, SQLite (with its group-commit writer), Redis.

May import `gateway.config.schema` (the factory) and the shared modules.
"""
