"""What a config that fails the schema still says: the parts that pass, so the cross-checks run anyway.

`gateway check` lists every problem at once. When the schema rejects some values, they are cut
out (a bad value falls back to its default, an unknown key goes, an entry that cannot stand is
dropped) until what is left validates; the cross-checks and the compiler then see that, so an
unknown key does not hide an unknown destination. Problems found in the pruned config name
paths of the pruned data; `PrunedConfig.original_path` turns them back into the file's paths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pydantic

from gateway.config.schema import GatewayConfig
from gateway.config.yaml_source import join_path

_MAX_ROUNDS = 50
_NAMED_ENTRIES = ("sources", "destinations")  # an entry there is kept, empty, so references to its name still hold
_PATH_PART = re.compile(r"\[(\d+)\]|\.?([^.\[]+)")

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class PrunedConfig:
    """The config that validated once the `cut` paths were taken out, and where its list items came from."""

    config: GatewayConfig
    cut: frozenset[str]
    _kept: dict[str, list[int]]

    def original_path(self, path: str) -> str:
        """`routes[1].send[0]` of the pruned data as the path in the file (`routes[2].send[0]` if routes[1] was cut)."""
        original = ""
        for index, key in _PATH_PART.findall(path):
            if index:
                kept = self._kept.get(original)
                position = int(index)
                original = join_path(original, kept[position] if kept and position < len(kept) else position)
            else:
                original = join_path(original, key)
        return original

    def touches_cut(self, path: str) -> bool:
        """True when `path` holds a value that was cut (a problem there may only echo the schema's)."""
        return any(cut == path or cut.startswith((path + ".", path + "[")) for cut in self.cut)


def prune(data: dict[str, Any], first_errors: list[Any]) -> PrunedConfig | None:
    """Cut what the schema rejects from `data` until the rest validates; None when nothing usable is left."""
    cut: set[Loc] = set()
    kept: dict[Loc, list[int]] = {}  # empty before the first cut: the errors name the file's own paths
    errors = first_errors
    for _ in range(_MAX_ROUNDS):
        cut |= {_to_cut(_original_loc(tuple(error["loc"]), kept), error["type"]) for error in errors}
        if () in cut:
            return None
        pruned, kept = _without(data, cut)
        try:
            config = GatewayConfig.model_validate(pruned)
        except pydantic.ValidationError as exc:
            errors = exc.errors()
            continue
        return PrunedConfig(config, frozenset(map(_path, cut)), {_path(loc): ids for loc, ids in kept.items()})
    return None


def _to_cut(loc: Loc, kind: str) -> Loc:
    """What to take out for an error at `loc`: the value there, or its owner when a required key is missing."""
    if kind == "missing":
        loc = loc[:-1]
    if len(loc) == 2 and loc[0] in _NAMED_ENTRIES:
        return (*loc, "")  # the entry's settings go, its name stays (see _without)
    return loc


def _original_loc(loc: Loc, kept: dict[Loc, list[int]]) -> Loc:
    original: Loc = ()
    for part in loc:
        if isinstance(part, int) and original in kept and part < len(kept[original]):
            part = kept[original][part]
        original = (*original, part)
    return original


def _without(data: Any, cut: set[Loc]) -> tuple[Any, dict[Loc, list[int]]]:
    """`data` without the values at `cut`, and for each list the original indexes of the items kept."""
    kept: dict[Loc, list[int]] = {}

    def walk(value: Any, loc: Loc) -> Any:
        if (*loc, "") in cut:
            return {}
        if isinstance(value, dict):
            return {key: walk(item, (*loc, key)) for key, item in value.items() if (*loc, key) not in cut}
        if isinstance(value, list):
            kept[loc] = [index for index in range(len(value)) if (*loc, index) not in cut]
            return [walk(value[index], (*loc, index)) for index in kept[loc]]
        return value

    return walk(data, ()), kept


def _path(loc: Loc) -> str:
    path = ""
    for part in loc:
        if part != "":
            path = join_path(path, part)
    return path
