"""The README stays true to the code: every config field is documented, and the first commands work as CI runs them."""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Union

import pytest
from pydantic import BaseModel

from gateway.config.schema import GatewayConfig

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def models_in(annotation: Any) -> Iterator[tuple[type[BaseModel], str]]:
    """The models an annotation holds, each with how its YAML path continues: '', '.<name>' or '[]'."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation, ""
    elif origin is dict:
        yield from ((model, ".<name>" + rest) for model, rest in models_in(args[1]))
    elif origin is list:
        yield from ((model, "[]" + rest) for model, rest in models_in(args[0]))
    elif origin in (Union, types.UnionType, Annotated):
        for arg in args if origin is not Annotated else args[:1]:
            yield from models_in(arg)


def config_fields(model: type[BaseModel] = GatewayConfig, at: str = "", seen: frozenset[type] = frozenset()
                  ) -> Iterator[tuple[str, str]]:
    """(YAML path of the parent, key) for every field reachable from `model`, keys as written in YAML."""
    for name, info in model.model_fields.items():
        key = info.alias or name
        yield at, key
        for child, rest in models_in(info.annotation):
            if child not in seen:
                yield from config_fields(child, f"{at}.{key}{rest}".lstrip("."), seen | {child})


def config_reference() -> dict[str, str]:
    """The README's "Config reference" subsections: heading path (`destinations.<name>`) -> text."""
    match = re.search(r"^## Config reference\n(.*?)(?=^## )", README, re.MULTILINE | re.DOTALL)
    assert match, "the README has no '## Config reference' section"
    sections = {}
    for block in re.split(r"^### ", match.group(1), flags=re.MULTILINE)[1:]:
        heading, _, text = block.partition("\n")
        path = re.search(r"`([^`]+)`", heading)
        assert path, f"a Config reference heading names no path in backticks: {heading!r}"
        sections[path.group(1)] = text
    return sections


def documented_in(parent: str, key: str, sections: dict[str, str]) -> bool:
    if not parent:
        return any(heading == key or heading.startswith((f"{key}.", f"{key}[")) for heading in sections)
    owners = [
        text for heading, text in sections.items()
        if parent == heading or parent.startswith((f"{heading}.", f"{heading}["))
    ]
    return any(f"`{key}`" in text for text in owners)


def test_the_walk_reaches_nested_models() -> None:
    fields = set(config_fields())
    assert {("", "routes"), ("destinations.<name>.retry", "max_backoff"), ("routes[].when", "not"),
            ("routes[].send[]", "template_file"), ("routes[]", "continue")} <= fields
    assert ("routes[]", "continue_") not in fields  # by alias
    assert ("routes[].when.all[]", "path") not in fields  # a model nested in itself is walked once


def test_every_config_field_is_in_the_config_reference() -> None:
    sections = config_reference()
    missing = [f"{parent or '(top level)'}: `{key}`" for parent, key in dict.fromkeys(config_fields())
               if not documented_in(parent, key, sections)]
    assert missing == [], "document these in the README's Config reference, under the section of their path"


def test_documented_in_needs_the_right_section() -> None:
    sections = {"server": "| `host` |", "destinations.<name>": "| `retry` | `attempts` |"}
    assert documented_in("destinations.<name>.retry", "attempts", sections)
    assert not documented_in("server", "attempts", sections)
    assert documented_in("", "server", sections) and not documented_in("", "routes", sections)


def fenced_blocks(text: str) -> list[str]:
    return re.findall(r"^```[^\n]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def test_the_readme_starts_with_make_run_and_make_test() -> None:
    assert fenced_blocks(README)[0].split("\n")[:2] == ["make run", "make test"]
    assert fenced_blocks(README)[0].strip().splitlines() == ["make run", "make test"]


def test_ci_runs_make_test() -> None:
    commands = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert "make test" in commands


@pytest.mark.parametrize("section", ["Testing your routes", "Running in Docker", "Examples"])
def test_the_readme_has_the_operator_sections(section: str) -> None:
    assert re.search(rf"^## {re.escape(section)}$", README, re.MULTILINE)
    anchor = section.lower().replace(" ", "-")
    assert f"(#{anchor})" in README, f"'{section}' is missing from the Contents"
