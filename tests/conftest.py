"""Shared fixtures: the test database, one store per backend, the fault proxy."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from wa_session_store import MemoryStore, PostgresStore, SQLiteStore
from wa_session_store.store.base import BaseStore

from .pgbouncer import pgbouncer_dsn  # noqa: F401  # PgBouncer in transaction mode
from .proxy import proxy  # noqa: F401  # the fault-injection fixture

DSN = os.environ.get("WA_SESSION_STORE_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _server_version() -> str | None:
    try:
        with psycopg.connect(DSN, connect_timeout=3) as conn:
            return str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    except psycopg.Error:
        return None


_VERSION = _server_version()


def pytest_report_header(config: pytest.Config) -> str:
    where = DSN.split("@")[-1]
    return f"PostgreSQL: {_VERSION or 'NOT AVAILABLE'} at {where}"


_FIGURES: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Keep what tests print (their measured figures) for the summary below."""
    if report.when == "call" and report.passed and report.capstdout.strip():
        for line in report.capstdout.strip().splitlines():
            _FIGURES.append((report.nodeid, line.strip()))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _FIGURES:
        terminalreporter.section("figures measured by the tests")
        for nodeid, line in _FIGURES:
            terminalreporter.write_line(f"{line}    [{nodeid.split('::')[-1]}]")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "proxy" in names:
            item.add_marker(pytest.mark.proxy)
        if "pg_dsn" in names or "pg_schema" in names or "proxy" in names:
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """The test server's DSN; a failure under CI=true, a skip elsewhere, when it is down."""
    if _VERSION is None:
        message = f"PostgreSQL is not reachable at {DSN.split('@')[-1]} (WA_SESSION_STORE_TEST_DSN)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return DSN


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    """A fresh PostgreSQL schema, dropped afterwards, so tests never see each other's rows."""
    name = f"wa_test_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


StoreFactory = Callable[..., BaseStore]


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("pgbouncer", marks=[pytest.mark.postgres, pytest.mark.pgbouncer]),
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(request.param)


@pytest.fixture
def make_store(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Builds stores of the current backend that share one database (file, schema)."""
    if backend == "memory":
        # Memory stores built here share one "database", like files and schemas do.
        shared = MemoryStore()

        def make_memory(**options: Any) -> BaseStore:
            if not options:
                return shared
            store = MemoryStore(**options)
            store._sessions = shared._sessions
            return store

        return make_memory
    if backend == "sqlite":
        path = tmp_path / "sessions.db"
        return lambda **options: SQLiteStore(path, **options)
    schema = request.getfixturevalue("pg_schema")
    if backend == "pgbouncer":
        # PgBouncer 1.18 in transaction mode cannot keep server-side prepared statements.
        dsn = request.getfixturevalue("pgbouncer_dsn")
        return lambda **options: PostgresStore(
            dsn, schema=schema, prepare_threshold=None, **options
        )
    dsn = request.getfixturevalue("pg_dsn")
    return lambda **options: PostgresStore(dsn, schema=schema, **options)


@pytest.fixture
async def store(make_store: StoreFactory) -> AsyncIterator[BaseStore]:
    async with make_store() as opened:
        yield opened
