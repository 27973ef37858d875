"""Reading a YAML config while remembering where each value came from.

Produces plain Python data plus a map from YAML paths (`routes[2].send[0].to`) to line
numbers, expands `${VAR}` / `${VAR:-default}` in string values, and reports duplicate keys,
which PyYAML would otherwise silently collapse.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from gateway.errors import ConfigProblem

_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_NAME = re.compile(r"SECRET|TOKEN|KEY|PASSWORD|PASSWD|WEBHOOK|AUTH|CREDENTIAL|DSN", re.IGNORECASE)


def join_path(parent: str, key: str | int) -> str:
    """`routes` + 2 -> `routes[2]`; `routes[2]` + `send` -> `routes[2].send`."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


@dataclass
class YamlDocument:
    """A parsed config: its data, the line of every path, and what was interpolated."""

    data: Any
    lines: dict[str, int] = field(default_factory=dict)
    problems: list[ConfigProblem] = field(default_factory=list)
    secret_values: set[str] = field(default_factory=set)

    def line_of(self, path: str) -> int | None:
        """Line of `path`, or of its nearest ancestor that exists in the file."""
        while path:
            if path in self.lines:
                return self.lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return None


def read_yaml(text: str, environ: Mapping[str, str] | None = None) -> YamlDocument:
    """Parse `text`; syntax errors become a single problem with the line, never an exception."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return YamlDocument(
            data=None,
            problems=[ConfigProblem("", f"not valid YAML: {reason}", line, "check the indentation and quoting")],
        )
    builder = _Builder(os.environ if environ is None else environ)
    data = builder.build(root, "") if root is not None else None
    return YamlDocument(data=data, lines=builder.lines, problems=builder.problems, secret_values=builder.secrets)


class _Builder:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.lines: dict[str, int] = {}
        self.problems: list[ConfigProblem] = []
        self.secrets: set[str] = set()
        self._constructor = yaml.SafeLoader("")

    def build(self, node: yaml.Node, path: str) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, join_path(path, index)) for index, item in enumerate(node.value)]
        value = self._constructor.construct_object(node, deep=True)
        return self._interpolate(value, path, node.start_mark.line + 1) if isinstance(value, str) else value

    def _mapping(self, node: yaml.MappingNode, path: str) -> dict[Any, Any]:
        self._constructor.flatten_mapping(node)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self._constructor.construct_object(key_node, deep=True)
            child = join_path(path, str(key))
            line = key_node.start_mark.line + 1
            if key in result:
                self.problems.append(
                    ConfigProblem(child, f"key '{key}' appears twice", line, "keep one; YAML would use the last")
                )
            self.lines[child] = line
            result[key] = self.build(value_node, child)
            self.lines[child] = line
        return result

    def _interpolate(self, value: str, path: str, line: int) -> str:
        if "$" not in value:
            return value

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name is None:
                return "$"
            found = self.environ.get(name)
            if found is None or (found == "" and default is not None):
                if default is None:
                    self.problems.append(
                        ConfigProblem(
                            path,
                            f"environment variable {name} is not set",
                            line,
                            f"set it, or give a default: ${{{name}:-value}}",
                        )
                    )
                    return ""
                found = default
            if _SECRET_NAME.search(name) and len(found) >= 4:
                self.secrets.add(found)
            return found

        return _VARIABLE.sub(substitute, value)
