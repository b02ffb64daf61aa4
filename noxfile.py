"""Developer sessions: ``nox -s lint typecheck tests`` (what .ci/run runs, too)."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

LINTED = ("src", "tests", "benchmarks", "tools", "noxfile.py")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (needs PostgreSQL: see WA_SESSION_STORE_TEST_DSN in the README)."""
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
