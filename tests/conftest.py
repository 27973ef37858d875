"""Fixtures shared by the whole suite: payload fixtures, config files, signing."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "missive"
FIXTURE_SECRET = "fixture-secret-do-not-use"


def fixture_bytes(name: str) -> bytes:
    """The exact bytes of a Missive payload fixture (signatures are over these bytes)."""
    return (FIXTURES / name).read_bytes()


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Write a YAML config (dedented) into a temp dir and return its path."""

    def write(text: str, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write
