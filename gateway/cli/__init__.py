"""The `gateway` command and its text output: dry run, rule tests, deliveries tables.

May import every other stage; nothing imports it.
"""
