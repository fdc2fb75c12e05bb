"""The package's layers, checked from its source: no import cycle, and data flows one way.

Layers, top to bottom: ``http``/``cli`` (adapters) > ``runtime`` (builds the services once) > ``upstream`` >
``services`` > ``auth``/``caches``/``index``/``storage``/``metadata`` > ``core``. The domain (everything below the
adapters) imports neither starlette nor ``updown_app.http``/``updown_app.cli``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "src" / "updown_app"
DOMAIN = ("core", "metadata", "storage", "index", "caches", "services", "upstream", "auth")
ADAPTERS = ("updown_app.http", "updown_app.cli")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module this file imports, at any depth of the file (functions too) except ``TYPE_CHECKING`` blocks."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    found: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def graph() -> dict[str, set[str]]:
    files = [p for p in ROOT.rglob("*.py") if "migrations" not in p.parts]
    modules = {module_name(p): p for p in files}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules on it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_there_is_no_import_cycle() -> None:
    assert cycle(graph()) is None


def test_a_cycle_is_seen() -> None:
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("layer", DOMAIN)
def test_the_domain_imports_neither_starlette_nor_the_adapters(layer: str) -> None:
    offenders = {}
    for path in (ROOT / layer).rglob("*.py"):
        found = imports_of(path)
        bad = {m for m in found if m.split(".")[0] == "starlette"}
        bad |= {m for m in found if m.startswith(ADAPTERS) or m == "updown_app.runtime"}
        if bad:
            offenders[module_name(path)] = sorted(bad)
    assert offenders == {}


def test_function_level_imports_count() -> None:
    """A lazy import inside a function is an import too (the old circle hid behind them)."""
    found = imports_of(ROOT / "cli" / "mirror.py")
    assert "updown_app.runtime" in found  # imported inside run(), not at the top
