"""The config language: typed models, YAML with line numbers, `${VAR}`, units, credentials, presets.

Loading a file ends in a `LoadedConfig`: validated, cross-checked, with conditions and
templates compiled (by `gateway.routing`). May import `gateway.routing` (to compile) and the
shared modules (`model`, `errors`, `clock`, `mask`).
"""
