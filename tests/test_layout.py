"""The package's shape (issue 16): no module imports itself back through
others, and one list of the session options."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from collections.abc import Callable
from pathlib import Path

from wa_session_store.auth.state import AuthState, AuthStateOptions, SessionOptions, use_auth_state

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "wa_session_store"


def _imports() -> dict[str, set[str]]:
    """Each module's imports of other modules of the package: every import
    statement, those inside functions and under TYPE_CHECKING included."""
    modules: dict[str, Path] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = (
                    ".".join(base + ([node.module] if node.module else []))
                    if node.level
                    else node.module or ""
                )
                candidates = [target, *(f"{target}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            graph[name] |= {c for c in candidates if c in modules and c != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state and (found := visit(name)):
            return found
    return None


def test_no_import_cycles() -> None:
    graph = _imports()
    assert "wa_session_store.store.base" in graph["wa_session_store.backends.postgres"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_session_options_are_one_list() -> None:
    """``SessionOptions`` carries the options; every other spelling of the
    list (the TypedDict for ``**options``, ``use_auth_state``'s keyword
    arguments, ``AuthState``'s) must name the same options with the same
    defaults, so none can drift from it."""
    carried = {f.name: f.default for f in dataclasses.fields(SessionOptions)}
    assert set(AuthStateOptions.__required_keys__ | AuthStateOptions.__optional_keys__) == set(
        carried
    )
    assert _keyword_defaults(use_auth_state) == carried
    built = _keyword_defaults(AuthState.__init__)
    assert built == {name: value for name, value in carried.items() if name != "preload"}


def _keyword_defaults(function: Callable[..., object]) -> dict[str, object]:
    return {
        p.name: p.default
        for p in inspect.signature(function).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
