"""Reading a config file: YAML with line numbers, `${VAR}`, validation against the schema, cross-checks.

Everything that can be wrong with a config is found at load and reported all at once as a
ConfigError whose problems name the YAML path, the line and the fix. This module finds what
the file and the schema can tell; `gateway.routing.compiled` adds what compiling conditions
and templates finds, and raises them together.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Union

import pydantic
from pydantic import BaseModel

from gateway.config.prune import PrunedConfig, prune
from gateway.config.schema import GatewayConfig, RouteConfig
from gateway.config.yaml_source import YamlDocument, join_path, read_yaml
from gateway.errors import ConfigError, ConfigProblem
from gateway.mask import Masker

_QUOTED = re.compile(r"'([^']*)'")

_STEP_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class ReadConfig:
    """A config read, validated and cross-checked; `problems` collects what later steps find.

    When the schema rejected parts of the file, `config` is what was left once they were cut out
    (`gateway.config.prune`), `found` holds the schema's problems, and `fail_if_problems` reports
    them all, the later ones under the file's own paths.
    """

    file: Path
    document: YamlDocument
    config: GatewayConfig
    problems: list[ConfigProblem]
    found: list[ConfigProblem] = field(default_factory=list)
    pruned: PrunedConfig | None = None

    def fail_if_problems(self) -> None:
        later = self.problems
        if self.pruned is not None:
            pruned = self.pruned
            later = [replace(p, path=pruned.original_path(p.path)) for p in later]
            later = [p for p in later if not pruned.touches_cut(p.path)]
        reported = {problem.path for problem in self.found}  # e.g. an unset variable: its value fails later too
        later = [problem for problem in later if problem.path not in reported]
        if self.found or later:
            raise ConfigError(str(self.file), finished(self.found + later, self.document))


def read_config(file: str | Path, environ: typing.Mapping[str, str] | None = None) -> ReadConfig:
    """Read, interpolate, validate and cross-check `file`; raise ConfigError when nothing can be checked further."""
    path = Path(file)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [ConfigProblem("", f"cannot read the file: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), [ConfigProblem("", "the file is not UTF-8 text")]) from None
    document = read_yaml(text, environ)
    found = list(document.problems)
    if not isinstance(document.data, dict):
        if document.data is not None or not found:
            found.append(ConfigProblem("", "the config must be a mapping with at least 'sources'", 1,
                                       "start from config.example.yaml"))
        raise ConfigError(str(path), finished(found, document))
    config, pruned = _validate(document, found)
    if config is None:
        raise ConfigError(str(path), finished(found, document))
    problems: list[ConfigProblem] = []
    _cross_check(config, problems)
    return ReadConfig(path, document, config, problems, found, pruned)


def finished(problems: list[ConfigProblem], document: YamlDocument) -> list[ConfigProblem]:
    """`problems` ready to show: each with its line, and no value of a secret-looking variable in the text."""
    masker = Masker(document.secret_values)
    return [
        ConfigProblem(
            problem.path, masker.text(problem.message), problem.line or document.line_of(problem.path),
            masker.text(problem.hint) if problem.hint else None,
        )
        for problem in problems
    ]


def _validate(document: YamlDocument, found: list[ConfigProblem]) -> tuple[GatewayConfig | None, PrunedConfig | None]:
    """The config, or what is left of it once the parts the schema rejects are cut out (their problems in `found`)."""
    try:
        return GatewayConfig.model_validate(document.data), None
    except pydantic.ValidationError as exc:
        errors = exc.errors()
    reported = {problem.path for problem in found}  # a YAML problem there (an unset variable) says it already
    for error in errors:
        problem = _problem_from(error, document)
        if problem.path not in reported:
            found.append(problem)
    pruned = prune(document.data, errors)
    return (pruned.config if pruned else None), pruned


def _problem_from(error: Any, document: YamlDocument) -> ConfigProblem:
    loc: tuple[str | int, ...] = tuple(error["loc"])
    path = ""
    for part in loc:
        path = join_path(path, part)
    kind, message = error["type"], str(error["msg"]).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        known = _fields_at(loc[:-1])
        hint = _did_you_mean(str(loc[-1]), known) or f"known keys here: {', '.join(sorted(known))}"
        return ConfigProblem(path, f"unknown key '{loc[-1]}'", hint=hint)
    if kind == "missing":
        return ConfigProblem(path, f"'{loc[-1]}' is required here", hint="add it")
    if kind == "literal_error":
        options = _QUOTED.findall(str(error.get("ctx", {}).get("expected", "")))
        return ConfigProblem(path, f"{error['input']!r} is not one of: {', '.join(options)}",
                             hint=_did_you_mean(str(error["input"]), options))
    names = document.variables.get(path)
    if names:
        message += " (the value of " + ", ".join(f"${{{name}}}" for name in names) + ")"
    return ConfigProblem(path, message)


def _fields_at(loc: tuple[str | int, ...]) -> list[str]:
    """Key names allowed by the model found at `loc`, for "did you mean" hints."""
    annotation: Any = GatewayConfig
    for part in loc:
        model = _model_in(annotation)
        if model is not None:
            fields = {(info.alias or name): info for name, info in model.model_fields.items()}
            annotation = fields[str(part)].annotation if str(part) in fields else None
        else:
            annotation = _item_of(annotation)
    model = _model_in(annotation)
    return [info.alias or name for name, info in model.model_fields.items()] if model else []


def _item_of(annotation: Any) -> Any:
    """The type of the items of a list or dict annotation (`list[Condition] | None` -> Condition)."""
    for option in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(option) in (list, dict):
            return typing.get_args(option)[-1]
    return None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return next(filter(None, (_model_in(arg) for arg in typing.get_args(annotation))), None)
    return None


def _did_you_mean(name: str, options: Iterable[str]) -> str | None:
    guess = difflib.get_close_matches(name, list(options), n=1)
    return f"did you mean '{guess[0]}'?" if guess else None


def _suggest(name: str, known: Iterable[str], kind: str) -> str:
    options = sorted(known)
    return _did_you_mean(name, options) or f"define it under '{kind}'" + (
        f" (known: {', '.join(options)})" if options else ""
    )


_RESERVED_PATHS = ("/healthz", "/readyz", "/metrics", "/console")
_RESERVED_PREFIXES = ("/admin/", "/console/")


def _cross_check(config: GatewayConfig, problems: list[ConfigProblem]) -> None:
    seen_paths: dict[str, str] = {}
    for name, source in config.sources.items():
        at = f"sources.{name}.path"
        path = source.path or f"/hooks/{name}"
        if not path.startswith("/"):
            problems.append(ConfigProblem(at, f"path '{path}' must start with '/'", hint=f"write /{path}"))
        elif path in seen_paths or path in _RESERVED_PATHS or path.startswith(_RESERVED_PREFIXES):
            taken = f"source '{seen_paths[path]}'" if path in seen_paths else "the gateway itself"
            problems.append(ConfigProblem(at, f"path '{path}' is already used by {taken}", hint="choose another path"))
        seen_paths.setdefault(path, name)
    if config.admin.port is not None and config.admin.port == config.server.port:
        problems.append(ConfigProblem("admin.port", f"port {config.admin.port} is server.port too",
                                      hint="give the admin listener a port of its own, e.g. 9090"))
    for name, destination in config.destinations.items():
        if not destination.url:
            problems.append(
                ConfigProblem(f"destinations.{name}", "'url' is required here", hint="add the URL to send to")
            )
        if destination.credentials() is not None:
            _check_no_authorization_header(f"destinations.{name}", destination.headers, problems)
    seen_routes: set[str] = set()
    for index, route in enumerate(config.routes):
        if route.name in seen_routes:
            problems.append(
                ConfigProblem(f"routes[{index}].name", f"route name '{route.name}' is used twice", hint="rename one")
            )
        seen_routes.add(route.name)
        _check_route_refs(config, index, route, problems)


def _check_route_refs(config: GatewayConfig, index: int, route: RouteConfig, problems: list[ConfigProblem]) -> None:
    if route.source is None and len(config.sources) > 1:
        problems.append(
            ConfigProblem(f"routes[{index}]", "'source' is required when there are several sources",
                          hint=f"add source: one of {', '.join(sorted(config.sources))}")
        )
    elif route.source is not None and route.source not in config.sources:
        problems.append(
            ConfigProblem(f"routes[{index}].source", f"unknown source '{route.source}'",
                          hint=_suggest(route.source, config.sources, "sources"))
        )
    _check_steps(index, route, problems)
    for send_index, send in enumerate(route.send):
        at = f"routes[{index}].send[{send_index}]"
        destination = config.destinations.get(send.to)
        if destination is None:
            problems.append(
                ConfigProblem(f"{at}.to", f"unknown destination '{send.to}'",
                              hint=_suggest(send.to, config.destinations, "destinations"))
            )
        elif destination.credentials() is not None:
            _check_no_authorization_header(at, send.headers or {}, problems)


def _check_steps(index: int, route: RouteConfig, problems: list[ConfigProblem]) -> None:
    """Step ids are names templates can use (`steps.<id>`), once per route; `after` names an earlier one."""
    earlier: set[str] = set()
    for send_index, send in enumerate(route.send):
        at = f"routes[{index}].send[{send_index}]"
        if send.after is not None and send.after not in earlier:
            guess = difflib.get_close_matches(send.after, sorted(earlier), n=1)
            if any(other.id == send.after for other in route.send[send_index:]):
                hint = "move this request below the one it runs after"
            else:
                hint = f"did you mean '{guess[0]}'?" if guess else f"give that request id: {send.after}"
            problems.append(ConfigProblem(
                f"{at}.after", f"no earlier request of route '{route.name}' has id '{send.after}'", hint=hint
            ))
        if send.id is None:
            continue
        if not _STEP_ID.match(send.id):
            problems.append(ConfigProblem(f"{at}.id", f"id '{send.id}' is not a name templates can use",
                                          hint="letters, digits and _, not starting with a digit"))
        elif send.id in earlier:
            problems.append(ConfigProblem(f"{at}.id", f"id '{send.id}' is used twice in route '{route.name}'",
                                          hint="rename one"))
        earlier.add(send.id)


def _check_no_authorization_header(at: str, headers: dict[str, str], problems: list[ConfigProblem]) -> None:
    """With `token` or `auth`, the gateway writes Authorization itself when it sends."""
    for name in headers:
        if name.lower() == "authorization":
            problems.append(ConfigProblem(f"{at}.headers.{name}", "the destination's token/auth sets Authorization",
                                          hint="drop this header, or drop the destination's token/auth"))
