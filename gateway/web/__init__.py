"""The aiohttp application: wiring, hook and health handlers, the admin API, the JSON error shape.

May import every stage but `gateway.cli`.
"""
