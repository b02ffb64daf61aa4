"""The package's shape (issues 16 and 23): one package per layer, imports
that only run down the layers and never in a cycle, modules short enough to
read in one sitting, a map (docs/architecture.md) that names every module,
and one list of the session options."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from collections.abc import Callable
from pathlib import Path

from wa_session_store.auth.state import AuthState, AuthStateOptions, SessionOptions, use_auth_state

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "wa_session_store"

#: The layers, from the top (what a user calls) to the bottom (what everything
#: uses). A module belongs to the first layer whose name is its own or a
#: package above it; it may import its own layer and the layers below, never
#: one above (docs/architecture.md explains each).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("wa_session_store", "wa_session_store.__main__", "wa_session_store.testing"),
    ("wa_session_store.cli",),
    ("wa_session_store.sync",),
    ("wa_session_store.integrations",),
    ("wa_session_store.interop",),
    ("wa_session_store.auth",),
    ("wa_session_store.backends",),
    ("wa_session_store.store",),
    ("wa_session_store.metrics",),
    ("wa_session_store.errors", "wa_session_store._version"),
)
#: At most this many modules directly in src/wa_session_store/ (packages don't count).
MAX_TOP_LEVEL_MODULES = 10
#: At most this many hand-written lines a module (see _hand_written_lines).
MAX_LINES = 450


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


def _layer(module: str) -> int:
    """The rank of ``module``'s layer in LAYERS: the longest name there that is
    the module or a package above it (the package itself only by its name)."""
    found = [
        (len(name), rank)
        for rank, names in enumerate(LAYERS)
        for name in names
        if module == name or (name != "wa_session_store" and module.startswith(f"{name}."))
    ]
    assert found, f"{module} is in no layer: add it to LAYERS and docs/architecture.md"
    return max(found)[1]


def _upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if _layer(target) < _layer(module)
    )


def test_imports_run_down_the_layers() -> None:
    assert _upward(_imports()) == []
    # the check sees an upward edge
    assert _upward({"wa_session_store.store.rows": {"wa_session_store.auth.keys"}})
    assert _layer("wa_session_store.auth.keys") < _layer("wa_session_store.store.codec")


def test_every_module_is_in_a_layer() -> None:
    for module in _imports():
        _layer(module)
    assert _layer("wa_session_store") == 0
    assert _layer("wa_session_store.errors") == len(LAYERS) - 1


GENERATED = re.compile(r"^ *# -- generated from \w+")


def _hand_written_lines(text: str) -> int:
    """The lines of a module that a person wrote: every physical line (blank
    lines, comments and docstrings included) except the generated regions
    tools/sync_twins.py writes, each from its ``# -- generated from X`` marker
    line to its ``# -- end of generated code`` line, both included."""
    count, generated = 0, False
    for line in text.splitlines():
        if not generated and GENERATED.match(line):
            generated = True
        elif generated:
            generated = not line.strip().startswith("# -- end of generated code")
        else:
            count += 1
    return count


def test_the_line_count_skips_generated_regions() -> None:
    text = "a\n    # -- generated from X by tool\nb\nc\n    # -- end of generated code\nd\n"
    assert _hand_written_lines(text) == 2


def test_modules_are_readable_in_one_sitting() -> None:
    counts = {
        path.relative_to(PACKAGE).as_posix(): _hand_written_lines(path.read_text())
        for path in PACKAGE.rglob("*.py")
    }
    too_long = {name: n for name, n in counts.items() if n > MAX_LINES}
    assert too_long == {}, f"over {MAX_LINES} hand-written lines: split by responsibility"


def test_few_modules_at_the_top_level() -> None:
    top = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_the_map_names_every_module() -> None:
    """docs/architecture.md names every module by its path under
    src/wa_session_store/ (``auth/keys.py``) and every package by its folder
    (``auth/``), so a module cannot land without its place on the map."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        top = relative.parent == Path(".")
        name = relative.as_posix() if top or path.name != "__init__.py" else f"{relative.parent}/"
        if f"`{name}`" not in text:
            missing.append(name)
    assert missing == [], "add these to docs/architecture.md"
