"""Reading a YAML config while remembering where each value came from.

Produces plain Python data plus a map from YAML paths (`routes[2].send[0].to`) to line
numbers, expands `${VAR}` / `${VAR:-default}` in string values, and reports duplicate keys,
which PyYAML would otherwise silently collapse.

Hostile YAML gets one problem, never a traceback or a stall: aliases that would expand past
`MAX_VALUES` values ("billion laughs") are refused before anything is expanded, and so are
recursive aliases, nesting too deep to parse, keys that are not plain values, and tags other
than YAML's own (`!!python/object...`).
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
    variables: dict[str, list[str]] = field(default_factory=dict)  # path -> the ${VAR}s its value was read from

    def line_of(self, path: str) -> int | None:
        """Line of `path`, or of its nearest ancestor that exists in the file."""
        while path:
            if path in self.lines:
                return self.lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return None


MAX_VALUES = 100_000  # far above any real config; a config that expands past it is refused before expanding
_TAB_HINT = "indent with spaces: YAML does not allow tabs in indentation"
_PLAIN_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})


def read_yaml(text: str, environ: Mapping[str, str] | None = None) -> YamlDocument:
    """Parse `text`; every problem (syntax, hostile structure) becomes one problem with its line, never an exception."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        return YamlDocument(data=None, problems=[_syntax_problem(exc, text)])
    except RecursionError:
        return YamlDocument(data=None, problems=[ConfigProblem("", "the YAML is nested too deeply", 1)])
    if root is None:
        return YamlDocument(data=None)
    refused = _refuse_expansion(root)
    if refused is not None:
        return YamlDocument(data=None, problems=[refused])
    builder = _Builder(os.environ if environ is None else environ)
    data = builder.build(root, "")
    return YamlDocument(data, builder.lines, builder.problems, builder.secrets, builder.variables)


def _syntax_problem(exc: yaml.YAMLError, text: str) -> ConfigProblem:
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    lines = text.splitlines()
    source_line = lines[mark.line] if mark is not None and mark.line < len(lines) else ""
    if "\t" in source_line[: len(source_line) - len(source_line.lstrip())] or "'\\t'" in reason:
        return ConfigProblem("", "a tab in the indentation", line, _TAB_HINT)
    return ConfigProblem("", f"not valid YAML: {reason}", line, "check the indentation and quoting")


def _refuse_expansion(root: yaml.Node) -> ConfigProblem | None:
    """A problem when aliases make `root` recursive or expand past MAX_VALUES; counted without expanding."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        if id(node) in open_nodes:
            raise _Recursive(node)
        open_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(key) + size(value) for key, value in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(item) for item in node.value)
        else:
            total = 1
        open_nodes.discard(id(node))
        sizes[id(node)] = min(total, MAX_VALUES + 1)
        return sizes[id(node)]

    try:
        total = size(root)
    except _Recursive as exc:
        return ConfigProblem("", "an alias refers to the value that contains it (a recursive alias)",
                             exc.node.start_mark.line + 1, "aliases (*name) may only repeat a value defined apart")
    if total > MAX_VALUES:
        return ConfigProblem("", f"aliases expand this config past {MAX_VALUES} values", None,
                             "repeat values with fewer nested aliases (*name)")
    return None


class _Recursive(Exception):
    def __init__(self, node: yaml.Node) -> None:
        self.node = node


class _Builder:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.lines: dict[str, int] = {}
        self.problems: list[ConfigProblem] = []
        self.secrets: set[str] = set()
        self.variables: dict[str, list[str]] = {}
        self._constructor = yaml.SafeLoader("")

    def build(self, node: yaml.Node, path: str) -> Any:
        line = node.start_mark.line + 1
        self.lines.setdefault(path, line)
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode) and node.tag not in _PLAIN_TAGS:
            return self._unsupported(node, path)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, join_path(path, index)) for index, item in enumerate(node.value)]
        value = self._scalar(node, path)
        return self._interpolate(value, path, line) if isinstance(value, str) else value

    def _scalar(self, node: yaml.Node, path: str) -> Any:
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError:
            return self._unsupported(node, path)

    def _unsupported(self, node: yaml.Node, path: str) -> None:
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        self.problems.append(ConfigProblem(path, f"unsupported YAML tag '{tag}'", node.start_mark.line + 1,
                                           "write plain values: text, numbers, true/false, lists and mappings"))

    def _mapping(self, node: yaml.MappingNode, path: str) -> dict[Any, Any]:
        try:
            self._constructor.flatten_mapping(node)
        except yaml.YAMLError as exc:
            self.problems.append(ConfigProblem(path, f"a merge key (<<) {getattr(exc, 'problem', exc)}",
                                               node.start_mark.line + 1, "merge mappings only"))
            return {}
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append(ConfigProblem(path, "a key is a list or a mapping", line,
                                                   "keys are plain names, like 'url:'"))
                continue
            found = len(self.problems)
            key = self._scalar(key_node, path)
            if len(self.problems) > found:
                continue
            child = join_path(path, str(key))
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
            self.variables.setdefault(path, []).append(name)
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
