"""Developer sessions: ``nox -s lint typecheck tests`` (what .ci/run runs, too).

``tests`` runs on every Python version pyproject claims (``nox -s tests-3.12``
for one); interpreters are found on PATH or among pyenv's builds.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

LINTED = ("src", "tests", "benchmarks", "tools", "noxfile.py")
#: The versions of pyproject's classifiers (requires-python >= 3.10).
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


def _pyenv_builds_on_path() -> None:
    """Put pyenv's newest build of each version first on PATH, where nox looks.

    pyenv's shims cannot stand in: a shim for a version not selected fails.
    """
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    builds = []
    for version in PYTHONS:
        found = sorted(
            root.glob(f"{version}.*"),
            key=lambda p: [int(n) for n in p.name.split(".") if n.isdigit()],
        )
        if found:
            builds.append(str(found[-1] / "bin"))
    if builds:
        os.environ["PATH"] = os.pathsep.join([*builds, os.environ.get("PATH", "")])


_pyenv_builds_on_path()


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite on each version (needs PostgreSQL: WA_SESSION_STORE_TEST_DSN, README).

    ``nox -s tests-3.10 -- tests/test_contract.py tests/test_auth_state.py`` is
    what .ci/run runs on the versions besides the system one.
    """
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site: mkdocs build --strict (into site/)."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", *session.posargs, env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark suite (needs PostgreSQL, like the tests): ``nox -s bench -- --quick``."""
    session.install("-e", ".[bench]")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the source, tests, benchmarks and tooling; the sync twins are current."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", *LINTED)
    session.run("ruff", "format", "--check", *LINTED)
    # Reads the sources with ast and formats with ruff: needs nothing else installed.
    session.run("python", "tools/sync_twins.py", "--check")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over src/."""
    session.install("-e", ".[typecheck]")
    session.run("mypy", "--strict", "src")
