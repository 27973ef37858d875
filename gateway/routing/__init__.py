"""Routing one payload: JSONPath, conditions, request templates, and the plan they make.

Pure and synchronous: no I/O, no store. May import `gateway.config.schema`,
`gateway.config.presets`, `gateway.config.units` and the shared modules.
"""
