"""PostgresStore beyond the contract: migrations, errors, versions, logging."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg
import psycopg_pool
import pytest
from psycopg import sql

from wa_session_store import (
    InvalidInputError,
    InvalidTypeError,
    PostgresStore,
    RetryDetails,
    RetryPolicy,
    SchemaVersionError,
    StoreOperationError,
    open_store,
)
from wa_session_store.backends.postgres_migrations import SCHEMA_VERSION

pytestmark = pytest.mark.postgres


def _count_tables(dsn: str, schema: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = %s", (schema,)
        ).fetchone()
        assert row is not None
        return int(row[0])


async def test_ten_stores_opening_at_once_migrate_once(pg_dsn: str, pg_schema: str) -> None:
    stores = [PostgresStore(pg_dsn, schema=pg_schema, max_size=2) for _ in range(10)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        with psycopg.connect(pg_dsn) as conn:
            rows = conn.execute(
                sql.SQL("SELECT version FROM {}").format(
                    sql.Identifier(pg_schema, "wa_schema_version")
                )
            ).fetchall()
        assert rows == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
        assert _count_tables(pg_dsn, pg_schema) == 4
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_newer_schema_is_refused(pg_dsn: str, pg_schema: str) -> None:
    async with PostgresStore(pg_dsn, schema=pg_schema):
        pass
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("INSERT INTO {} (version) VALUES (%s)").format(
                sql.Identifier(pg_schema, "wa_schema_version")
            ),
            (SCHEMA_VERSION + 1,),
        )
    store = PostgresStore(pg_dsn, schema=pg_schema)
    with pytest.raises(SchemaVersionError, match="newer than this library"):
        await store.open()
    assert not store.is_open
    assert store.pool.closed


async def test_migrate_false_checks_only(pg_dsn: str, pg_schema: str) -> None:
    with pytest.raises(SchemaVersionError, match="run the migrations"):
        await PostgresStore(pg_dsn, schema=pg_schema, migrate=False).open()
    assert _count_tables(pg_dsn, pg_schema) == 0
    async with PostgresStore(pg_dsn, schema=pg_schema):
        pass
    async with PostgresStore(pg_dsn, schema=pg_schema, migrate=False) as store:
        await store.save_creds("s", {"a": 1})


async def test_table_prefixes_keep_applications_apart(pg_dsn: str, pg_schema: str) -> None:
    async with (
        PostgresStore(pg_dsn, schema=pg_schema, table_prefix="one_") as one,
        PostgresStore(pg_dsn, schema=pg_schema, table_prefix="two_") as two,
    ):
        await one.save_creds("s", {"app": 1})
        assert await two.load_creds("s") is None
    assert _count_tables(pg_dsn, pg_schema) == 8


@pytest.mark.parametrize("prefix", ["", "Upper_", "semi;colon_", "x" * 31, "1abc"])
def test_bad_table_prefix(prefix: str) -> None:
    with pytest.raises(InvalidInputError, match="table_prefix"):
        PostgresStore("postgresql://localhost/db", table_prefix=prefix)


def test_hostile_schema_name_is_an_identifier() -> None:
    store = PostgresStore("postgresql://localhost/db", schema='x"; DROP TABLE y; --')
    assert "DROP" in store.schema.describe()  # kept literally, quoted when sent


async def test_hostile_schema_name_round_trips(pg_dsn: str, pg_schema: str) -> None:
    async with PostgresStore(pg_dsn, schema=pg_schema + '"; --') as store:
        await store.save_creds("s", {"ok": True})
        assert await store.load_creds("s") == {"ok": True}
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(pg_schema + '"; --')))


@pytest.mark.parametrize(
    "conninfo",
    [
        "postgresql://user:s3cr3t-pw@[::1/db",
        "host='unterminated password=s3cr3t-pw",
        "host=localhost password=s3cr3t-pw dbname",
        "postgresql://user:s3cr3t-pw@host/db?unknown_option=1",
    ],
)
def test_malformed_dsn_never_echoes_the_password(conninfo: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        PostgresStore(conninfo)
    assert "s3cr3t-pw" not in str(info.value)
    assert info.value.__cause__ is None


def test_repr_hides_the_password() -> None:
    store = PostgresStore("postgresql://bot:s3cr3t-pw@db.example:5433/bots")
    assert "s3cr3t-pw" not in repr(store)
    assert "bot@db.example:5433/bots" in repr(store)


def test_constructor_arguments_are_checked() -> None:
    with pytest.raises(InvalidInputError, match="not both"):
        PostgresStore("postgresql://x/y", pool=psycopg_pool.AsyncConnectionPool("", open=False))
    with pytest.raises(InvalidTypeError, match="AsyncConnectionPool"):
        PostgresStore(pool=object())  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="min_size"):
        PostgresStore("postgresql://x/y", min_size=5, max_size=2)
    with pytest.raises(InvalidInputError, match="max_size"):
        PostgresStore("postgresql://x/y", max_size=0)
    with pytest.raises(InvalidInputError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(InvalidInputError, match="timeout"):
        RetryPolicy(timeout=0)


async def test_open_store_gives_a_postgres_store(pg_dsn: str, pg_schema: str) -> None:
    async with open_store(pg_dsn, schema=pg_schema) as store:
        assert isinstance(store, PostgresStore)
        await store.save_creds("s", {"x": b"y"})
        assert await store.load_creds("s") == {"x": b"y"}


async def test_shared_pool_is_not_closed(pg_dsn: str, pg_schema: str) -> None:
    async with psycopg_pool.AsyncConnectionPool(pg_dsn, min_size=1, max_size=2) as pool:
        async with PostgresStore(pool=pool, schema=pg_schema) as store:
            await store.set_keys("s", {"pre-key": {"1": b"k"}})
            assert await store.get_keys("s", "pre-key", [1]) == {"1": b"k"}
        assert not pool.closed
        async with pool.connection() as conn:
            assert conn.autocommit is False  # handed back as the application set it


async def test_permanent_errors_fail_at_once(pg_dsn: str, pg_schema: str) -> None:
    retries: list[RetryDetails] = []
    async with PostgresStore(
        pg_dsn, schema=pg_schema, on_retry=retries.append, retry=RetryPolicy(backoff=5)
    ) as store:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(pg_schema, "wa_keys")))
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(StoreOperationError, match="does not exist") as info:
            await store.set_keys("s", {"pre-key": {"1": "x"}})
        assert loop.time() - started < 2
        assert isinstance(info.value.__cause__, psycopg.errors.UndefinedTable)
    assert retries == []


async def test_a_late_write_never_overwrites_a_newer_one(pg_dsn: str, pg_schema: str) -> None:
    async with PostgresStore(pg_dsn, schema=pg_schema) as store:
        await store.save_creds("s", {"v": 2})
        stored = await store.load_creds("s")
        # What a retry of an earlier call does: write with the version it was given.
        late = store._clock._last - 1_000_000
        blob = b'{"v":1}'
        assert await store._write_creds("s", blob, late, 5.0) is False
        assert await store.load_creds("s") == stored == {"v": 2}


async def test_concurrent_saves_of_one_session_keep_the_last_call(
    pg_dsn: str, pg_schema: str
) -> None:
    async with PostgresStore(pg_dsn, schema=pg_schema, max_size=8) as store:
        for _ in range(5):
            await asyncio.gather(*(store.save_creds("s", {"n": n}) for n in range(40)))
            assert await store.load_creds("s") == {"n": 39}


async def test_new_process_writes_above_a_stored_version_from_the_future(
    pg_dsn: str, pg_schema: str
) -> None:
    async with PostgresStore(pg_dsn, schema=pg_schema) as store:
        await store.save_creds("s", {"v": 1})
        with psycopg.connect(pg_dsn, autocommit=True) as conn:  # a clock far ahead wrote it
            conn.execute(
                sql.SQL("UPDATE {} SET version = version + 3600000000000").format(
                    sql.Identifier(pg_schema, "wa_creds")
                )
            )
    async with PostgresStore(pg_dsn, schema=pg_schema) as store:
        assert await store.load_creds("s") == {"v": 1}
        await store.save_creds("s", {"v": 2})
        assert await store.load_creds("s") == {"v": 2}


async def test_logs_success_at_debug_with_fields(
    pg_dsn: str, pg_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="wa_session_store")
    async with PostgresStore(pg_dsn, schema=pg_schema) as store:
        await store.save_creds("user_123", {"secret": b"\x99" * 8})
    records = [r for r in caplog.records if r.getMessage() == "session user_123 saved (attempt 1)"]
    assert len(records) == 1
    record: Any = records[0]
    assert record.levelno == logging.DEBUG
    assert (record.session_id, record.op, record.attempt, record.attempts) == (
        "user_123",
        "save_creds",
        1,
        3,
    )
    assert record.elapsed >= 0
