"""Declarative routing and forwarding of Missive webhooks."""

__version__ = "0.1.0"
