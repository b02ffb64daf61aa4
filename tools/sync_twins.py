#!/usr/bin/env python3
"""Generate the thin blocking methods of the sync facade, ``src/wa_session_store/sync/``.

The sync facade's twins are produced from the coroutines they mirror, as
psycopg produces its sync pool with ``tools/async_to_sync.py``: this script
rewrites every region between a ``# -- generated from X`` marker and the next
``# -- end of generated code`` line of each module of sync/ (one module per
facade class), from the signatures and
docstring summaries of ``X`` (a class or a coroutine function of the async
core), then formats the file with ruff.

Usage::

    python tools/sync_twins.py --write   # regenerate the sync/ modules in place
    python tools/sync_twins.py --check   # exit 1 if one is stale (CI, nox -s lint)

``--check`` never skips: ruff is a lint dependency (``pip install -e '.[lint]'``)
and, without it, both modes exit with status 2 saying so. The script reads
the sources with :mod:`ast` and imports nothing of the package, so it runs
in any environment that has ruff.
"""

from __future__ import annotations

import argparse
import ast
import copy
import importlib.util
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "wa_session_store"
#: The facade: any module of it may hold generated regions.
SYNC_DIR = PACKAGE / "sync"
COMMAND = "python tools/sync_twins.py --write"

#: source (class or coroutine function): (where its calls go, its public path for docstrings)
SOURCES: dict[str, tuple[str, str]] = {
    "BaseStore": ("self._store", "wa_session_store.store.base.BaseStore"),
    # PostgresStore's lease methods are its lease capability's (backends/postgres_leases.py).
    "PostgresLeases": ("self._postgres_store()", "wa_session_store.PostgresStore"),
    "AuthKeys": ("self._keys", "wa_session_store.AuthKeys"),
    "AuthState": ("self.state", "wa_session_store.AuthState"),
    "use_auth_state": ("", "wa_session_store.use_auth_state"),
    "restore_all": ("", "wa_session_store.restore_all"),
}
#: Functions' twins: (what their first parameter becomes, what they return, their wrapper).
FUNCTIONS: dict[str, tuple[str, str, str]] = {
    "use_auth_state": ("SyncStore", "SyncAuthState", "_sync_auth_state"),
    "restore_all": ("SyncStore", "SyncRestoreResult", "_sync_restore_all"),
}
#: The modules whose top-level classes and coroutine functions may be sources
#: (or the bases of a source class, whose methods it inherits).
MODULES = (
    "store/contract.py",
    "store/base.py",
    "store/sessions.py",
    "store/maintenance.py",
    "auth/keys.py",
    "auth/auth_state.py",
    "auth/state.py",
    "auth/restore.py",
    "backends/postgres_leases.py",
)
#: Twins whose name differs from their coroutine's.
RENAMES = {
    "aclose": "close",
    "use_auth_state": "use_sync_auth_state",
    "restore_all": "restore_all_sync",
}
MARKER = re.compile(r"^(?P<indent> *)# -- generated from (?P<source>\w+)\b.*$", re.MULTILINE)
END = "# -- end of generated code"


class ToolError(Exception):
    """The generator cannot run (exit status 2)."""


def _source_nodes() -> dict[str, ast.ClassDef | ast.AsyncFunctionDef]:
    nodes: dict[str, ast.ClassDef | ast.AsyncFunctionDef] = {}
    for module in MODULES:
        for node in ast.parse((PACKAGE / module).read_text()).body:
            if isinstance(node, (ast.ClassDef, ast.AsyncFunctionDef)):
                nodes[node.name] = node
    return nodes


def _methods(
    node: ast.ClassDef, nodes: dict[str, ast.ClassDef | ast.AsyncFunctionDef]
) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    """The methods of class ``node``, then those it inherits from its bases in
    ``nodes`` (depth first, in the order of its bases), each name once: an
    override hides what it overrides."""
    methods = {
        m.name: m for m in node.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))
    }
    for base in node.bases:
        inherited = nodes.get(base.id) if isinstance(base, ast.Name) else None
        if isinstance(inherited, ast.ClassDef):
            for method in _methods(inherited, nodes):
                methods.setdefault(method.name, method)
    return list(methods.values())


def _call_arguments(args: ast.arguments) -> str:
    """``a, b, *rest, c=c, **options`` for the parameters after the first."""
    positional = [*args.posonlyargs, *args.args][1:]
    parts = [a.arg for a in positional]
    if args.vararg:
        parts.append(f"*{args.vararg.arg}")
    parts += [f"{a.arg}={a.arg}" for a in args.kwonlyargs]
    if args.kwarg:
        parts.append(f"**{args.kwarg.arg}")
    return ", ".join(parts)


def _twin(node: ast.AsyncFunctionDef, *, indent: str, pointer: str, body: str) -> str:
    header = ast.FunctionDef(**{field: getattr(node, field) for field in node._fields})
    header.name = RENAMES.get(node.name, node.name)
    header.body = [ast.Pass()]
    header.decorator_list = []
    if node.name in FUNCTIONS:  # takes a SyncStore, returns the facade of its result
        takes, returns, _ = FUNCTIONS[node.name]
        header.args = copy.deepcopy(node.args)
        header.args.args[0].annotation = ast.Name(takes)
        header.returns = ast.Name(returns)
    signature = ast.unparse(ast.fix_missing_locations(header)).rsplit("\n", 1)[0]
    summary = (ast.get_docstring(node) or "").split("\n\n")[0].replace("\n", " ")
    inner = indent + "    "
    doc = "\n".join(
        [
            textwrap.fill(summary, 96, initial_indent=f'{inner}"""', subsequent_indent=inner),
            "",
            textwrap.fill(pointer, 96, initial_indent=inner, subsequent_indent=inner),
            f'{inner}"""',
        ]
    )
    return f"{indent}{signature}\n{doc}\n{inner}{body}\n"


def generate(text: str, path: Path) -> str:
    """``text`` (the sync module at ``path``), every generated region produced again, formatted.

    Raises:
        ToolError: a marker names an unknown source, lacks its end line, or ruff is missing.
    """
    nodes = _source_nodes()
    protocol = {n.name for n in ast.walk(nodes["AuthStateStore"]) if hasattr(n, "name")}
    out: list[str] = []
    position = 0
    for marker in MARKER.finditer(text):
        indent, source = marker["indent"], marker["source"]
        if source not in SOURCES or source not in nodes:
            raise ToolError(f"{path.name}: unknown source {source!r} in {marker[0].strip()!r}")
        try:
            end = text.index(END, marker.end())
        except ValueError:
            raise ToolError(f"{path.name}: {marker[0].strip()!r} has no {END!r} line") from None
        end = text.rindex("\n", 0, end) + 1
        target, public = SOURCES[source]
        out.append(text[position : marker.end() + 1])
        node = nodes[source]
        twins: list[str] = []
        if isinstance(node, ast.AsyncFunctionDef):  # a function: use_auth_state, restore_all
            wrapper = FUNCTIONS[source][2]
            twins.append(
                _twin(
                    node,
                    indent=indent,
                    pointer=f"Blocking twin of :func:`~{public}` (the same arguments and errors, "
                    "``store`` a SyncStore). The auth states run on the store's loop "
                    "thread and are closed, saving what is pending, by their close() or "
                    "the store's.",
                    body=f"return {wrapper}(store, lambda async_store: "
                    f"{node.name}(async_store, {_call_arguments(node.args)}))",
                )
            )
        else:
            facade = text[: marker.start()].rsplit("\nclass ", 1)[1]
            written = set(re.findall(r"^    def (\w+)\(", facade, re.MULTILINE))
            for method in _methods(node, nodes):
                if not isinstance(method, ast.AsyncFunctionDef) or method.name.startswith("_"):
                    continue
                name = RENAMES.get(method.name, method.name)
                if name in written:
                    continue  # the facade's own (life cycle, thread hops)
                on = target
                if source == "BaseStore" and method.name not in protocol:
                    on = "self._base_store()"
                twins.append(
                    _twin(
                        method,
                        indent=indent,
                        pointer=f"Blocking twin of :meth:`~{public}.{method.name}`: the same "
                        "arguments, result and errors.",
                        body=f"return self._run({name!r}, lambda: "
                        f"{on}.{method.name}({_call_arguments(method.args)}))",
                    )
                )
        out.append("\n".join(twins))
        position = end
    out.append(text[position:])
    return ruff_format("".join(out), path)


def ruff_format(text: str, path: Path) -> str:
    """``text`` formatted as ``ruff format`` would format ``path`` (the project's settings)."""
    if importlib.util.find_spec("ruff") is None:
        raise ToolError(
            f"ruff is not installed for {sys.executable}: pip install -e '.[lint]' "
            "(the generated code is ruff-formatted, so it cannot be checked without it)"
        )
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", str(path), "-"],
        input=text,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if done.returncode != 0:
        raise ToolError(f"ruff format failed: {done.stderr.strip()}")
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="regenerate the sync modules in place")
    mode.add_argument("--check", action="store_true", help="exit 1 if a sync module is stale")
    args = parser.parse_args(argv)
    stale = 0
    for path in sorted(SYNC_DIR.glob("*.py")):
        text = path.read_text()
        if not MARKER.search(text):
            continue
        try:
            generated = generate(text, path)
        except ToolError as exc:
            print(f"sync_twins: {exc}", file=sys.stderr)
            return 2
        if generated == text:
            continue
        if args.write:
            path.write_text(generated)
            print(f"sync_twins: rewrote {path.relative_to(ROOT)}")
        else:
            print(
                f"sync_twins: {path.relative_to(ROOT)} is stale: run `{COMMAND}`", file=sys.stderr
            )
            stale = 1
    return stale


if __name__ == "__main__":
    sys.exit(main())
