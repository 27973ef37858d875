"""Typed keys for what the application holds."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from gateway.clock import Clock
from gateway.runtime import ConfigHolder
from gateway.store.base import Store

CONFIG = web.AppKey("config", ConfigHolder)
STORE = web.AppKey("store", Store)
CLOCK = web.AppKey("clock", Clock)
WAKE: web.AppKey[Callable[[], None]] = web.AppKey("wake")
