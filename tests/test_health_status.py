"""store.health(), the auth state's save status, and ``wa-session-store status``,
on every backend (PostgreSQL directly and through PgBouncer)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from wa_session_store import (
    InvalidInputError,
    PostgresStore,
    RetryPolicy,
    SQLiteStore,
    use_auth_state,
)
from wa_session_store.cli import collect_status
from wa_session_store.store.base import BaseStore

from .conftest import DSN, StoreFactory
from .pgbouncer import running_pgbouncer
from .proxy import Proxy
from .test_cli import run

CREDS: dict[str, Any] = {"registrationId": 7, "noiseKey": {"public": b"\x05" * 32}}


async def test_health_of_an_open_store(store: BaseStore) -> None:
    health = await store.health()
    assert health.ok, health.error
    assert health.error is None
    assert health.backend == store.kind
    assert health.round_trip_ms is not None
    assert health.round_trip_ms >= 0
    assert health.schema_version == health.expected_schema_version
    if isinstance(store, PostgresStore):
        assert health.role == "primary"
        assert health.server_version is not None
        assert health.server_version.startswith("PostgreSQL ")
        assert health.pool is not None
        assert health.pool["max"] == store.pool.max_size
        assert health.pool["size"] >= 1
    elif isinstance(store, SQLiteStore):
        assert health.schema_version == 1
        assert health.server_version is not None
        assert health.server_version.startswith("SQLite ")
    else:
        assert health.schema_version is None
    assert json.loads(json.dumps(health.as_dict()))["ok"] is True


async def test_health_of_a_closed_store(make_store: StoreFactory) -> None:
    store = make_store()
    health = await store.health()
    assert not health.ok
    assert health.error is not None
    assert "not open" in health.error
    with pytest.raises(InvalidInputError, match="timeout"):
        await store.health(timeout=0)


@pytest.mark.postgres
async def test_health_of_an_unreachable_server_answers_in_time(
    pg_schema: str, proxy: Proxy
) -> None:
    dsn = proxy.dsn(DSN).replace("postgres@", "postgres:health-pw-s3cr3t@")
    async with PostgresStore(dsn, schema=pg_schema, retry=RetryPolicy(timeout=30)) as store:
        proxy.blackhole()
        started = time.monotonic()
        health = await store.health(timeout=0.5)
        elapsed = time.monotonic() - started
        proxy.restore()
        assert not health.ok
        assert elapsed < 5  # one attempt of 0.5 s, never the 30 s of the policy
        assert "s3cr3t" not in repr(health)
        assert health.round_trip_ms is None


async def test_auth_state_tells_when_it_last_saved(store: BaseStore) -> None:
    auth = await use_auth_state(store, "s1", throttle=60, backup_interval=None)
    assert auth.last_saved_at is None
    assert auth.consecutive_failures == 0
    assert not auth.pending
    await auth.save_creds(CREDS)
    saved = auth.last_saved_at
    assert saved is not None
    assert saved.tzinfo is not None
    auth.creds_updated({**CREDS, "registrationId": 8})
    auth.creds_updated({**CREDS, "registrationId": 9})
    assert auth.pending
    await auth.aclose()
    assert not auth.pending
    assert auth.last_saved_at is not None
    assert auth.last_saved_at >= saved


async def test_status_flags_what_needs_a_look(store: BaseStore) -> None:
    await store.save_creds("paired", CREDS)
    await store.set_keys("paired", {"pre-key": {"1": b"\x01", "2": b"\x02"}})
    await store.save_creds("no-keys", CREDS)
    await store.set_keys("unpaired", {"pre-key": {"1": b"\x01"}})
    if isinstance(store, PostgresStore):
        held = await store.acquire_lease("paired", owner="w1", ttl=30)
        gone = await store.acquire_lease("no-keys", owner="w0", ttl=30)
        await gone.release()
    report = await collect_status(store)
    assert report["health"]["ok"]
    rows = {row["session"]: row for row in report["sessions"]}
    assert sorted(rows) == ["no-keys", "paired", "unpaired"]
    assert rows["paired"]["keys"] == 2
    assert rows["paired"]["size"] > 0
    assert not rows["unpaired"]["creds"]
    assert report["creds_without_keys"] == ["no-keys"]
    if isinstance(store, PostgresStore):
        assert rows["paired"]["lease"]["owner"] == "w1"
        assert rows["paired"]["lease"]["token"] == held.token
        assert not rows["paired"]["lease"]["expired"]
        assert report["expired_leases"] == ["no-keys"]
        await held.release()
    else:
        assert report["expired_leases"] == []
        assert rows["paired"]["lease"] is None
    json.dumps(report)


def test_status_command_on_sqlite(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'bots.db'}"
    assert run("migrate", "--dsn", dsn, cwd=tmp_path).returncode == 0  # status creates nothing
    result = run("status", "--dsn", dsn, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "0 sessions" in result.stdout
    result = run("status", "--json", "--dsn", dsn, cwd=tmp_path)
    report = json.loads(result.stdout)
    assert report["ok"]
    assert report["health"]["ok"]
    assert report["sessions"] == []


@pytest.mark.postgres
def test_status_command_on_postgres(tmp_path: Path, pg_dsn: str, pg_schema: str) -> None:
    # A schema of the test's own, set through the options parameter, which
    # PgBouncer drops: this one goes direct (the next one through PgBouncer).
    base = pg_dsn + ("&" if "?" in pg_dsn else "?") + f"options=-csearch_path%3D{pg_schema}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{pg_schema}"')

    async def seed() -> None:
        async with PostgresStore(pg_dsn, schema=pg_schema) as store:
            await store.save_creds("bot-1", CREDS)
            await store.set_keys("bot-1", {"pre-key": {"1": b"\x01"}})
            await store.save_creds("bot-2", CREDS)
            lease = await store.acquire_lease("bot-1", owner="worker-a", ttl=60)
            assert lease.token == 1

    asyncio.run(seed())
    result = run("status", "--dsn", base, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "worker-a until" in result.stdout
    assert "1 with creds but no keys: bot-2" in result.stdout
    result = run("status", "--json", "--dsn", base, cwd=tmp_path)
    report = json.loads(result.stdout)
    assert report["health"]["role"] == "primary"
    assert report["creds_without_keys"] == ["bot-2"]
    assert report["sessions"][0]["lease"]["owner"] == "worker-a"


@pytest.mark.postgres
@pytest.mark.pgbouncer
def test_status_command_through_pgbouncer(tmp_path: Path, pg_dsn: str) -> None:
    # PgBouncer drops the options parameter (no search_path), so the command
    # gets a database of its own, whose tables are in the default schema.
    dbname = f"wa_status_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    own = make_conninfo(pg_dsn, dbname=dbname)
    try:

        async def seed() -> None:
            async with PostgresStore(own) as store:
                await store.save_creds("bot-1", CREDS)
                await store.set_keys("bot-1", {"pre-key": {"1": b"\x01"}})
                await store.save_creds("bot-2", CREDS)
                await store.acquire_lease("bot-1", owner="worker-a", ttl=60)

        asyncio.run(seed())
        with running_pgbouncer(own) as bounced:
            params = conninfo_to_dict(bounced)  # the command takes URLs
            url = f"postgresql://{params['user']}@{params['host']}:{params['port']}/{dbname}"
            result = run("status", "--dsn", url, cwd=tmp_path)
            assert result.returncode == 0, result.stderr
            assert "worker-a until" in result.stdout
            assert "1 with creds but no keys: bot-2" in result.stdout
            result = run("status", "--json", "--dsn", url, cwd=tmp_path)
            assert result.returncode == 0, result.stderr
            report = json.loads(result.stdout)
            assert report["health"]["ok"]
            assert report["health"]["role"] == "primary"
            assert report["creds_without_keys"] == ["bot-2"]
            assert [row["session"] for row in report["sessions"]] == ["bot-1", "bot-2"]
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def test_the_sync_facade_has_health_and_creds_pages() -> None:
    from wa_session_store import MemoryStore
    from wa_session_store.sync import SyncStore

    store = SyncStore(MemoryStore())
    store.open()
    try:
        assert store.health().ok
        for n in range(3):
            store.save_creds(f"bot-{n}", CREDS)
        page = store.load_creds_page(limit=2)
        assert list(page.creds) == ["bot-0", "bot-1"]
        assert list(store.load_creds_page(page.next_after).creds) == ["bot-2"]
    finally:
        store.close()
