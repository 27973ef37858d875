"""The package's layout: a stage per subpackage, imports running one way, modules kept small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gateway"
MAX_LINES = 400
MAX_LOOSE_MODULES = 8
SHARED = {"model", "errors", "clock", "mask", "hashing", "__init__", "__main__"}

# What each stage may import, besides itself and the shared modules: cli → web → ops →
# ingest and delivery → routing and store → config → shared.
ALLOWED: dict[str, set[str]] = {
    "config": set(),
    "store": {"config"},
    "routing": {"config"},
    "ingest": {"routing", "store", "config"},
    "delivery": {"routing", "store", "config"},
    "ops": {"ingest", "delivery", "routing", "store", "config"},
    "web": {"ops", "ingest", "delivery", "routing", "store", "config"},
    "cli": {"web", "ops", "ingest", "delivery", "routing", "store", "config"},
    "__main__": {"cli"},
}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _stage(module: str) -> str:
    """`gateway.routing.plan` -> `routing`; `gateway.model` -> `model`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gateway"):
            if node.module != "gateway":
                found.add(node.module)
                continue
            for alias in node.names:  # `from gateway import x`: a module, or a name from gateway/__init__.py
                is_module = (PACKAGE / alias.name).is_dir() or (PACKAGE / f"{alias.name}.py").exists()
                found.add(f"gateway.{alias.name}" if is_module else "gateway")
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("gateway"))
    return found


def test_every_stage_is_known_and_documented() -> None:
    stages = {path.name for path in PACKAGE.iterdir() if path.is_dir() and (path / "__init__.py").exists()}
    assert stages == set(ALLOWED) - SHARED
    for stage in stages:
        docstring = ast.get_docstring(ast.parse((PACKAGE / stage / "__init__.py").read_text(encoding="utf-8")))
        assert docstring and "import" in docstring, f"gateway/{stage}/__init__.py must say what the stage may import"


def test_few_modules_stay_loose() -> None:
    loose = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(loose) <= MAX_LOOSE_MODULES, loose
    assert {name.removesuffix(".py") for name in loose} <= SHARED


@pytest.mark.parametrize("path", _modules(), ids=lambda path: str(path.relative_to(PACKAGE)))
def test_module_is_small(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines; split it at a second responsibility"


@pytest.mark.parametrize("path", _modules(), ids=lambda path: str(path.relative_to(PACKAGE)))
def test_imports_run_one_way(path: Path) -> None:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    own = _stage(".".join(relative.parts))
    allowed = ALLOWED.get(own, set()) | {own} | SHARED
    wrong = sorted(module for module in _imported(path) if _stage(module) not in allowed)
    assert not wrong, f"{path.relative_to(PACKAGE)} ({own}) may not import {wrong}"
