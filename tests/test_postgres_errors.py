"""PostgreSQL errors classified the way the server means them (issue 20, class 10).

Against the real server: lock_timeout and statement_timeout under real lock
contention from a second connection, bad startup options in a real DSN,
identifiers limited in bytes as the server counts them.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from wa_session_store import (
    InvalidInputError,
    PostgresStore,
    RetryDetails,
    RetryPolicy,
    StoreConfigurationError,
    StoreUnavailableError,
)
from wa_session_store.backends.postgres_errors import (
    Verdict,
    is_transient,
    needs_new_connection,
    verdict,
)
from wa_session_store.backends.postgres_schema import MAX_IDENTIFIER_BYTES, Schema

from .proxy import target_dsn

# -- the table -----------------------------------------------------------------


def test_every_sqlstate_psycopg_knows_has_a_class_in_the_table() -> None:
    """The table covers Appendix A: no code falls through to the unknown default."""
    from wa_session_store.backends import postgres_errors

    codes = [code for code in psycopg.errors._sqlcodes if len(code) == 5 and "_" not in code]
    assert len(codes) > 200
    missing = sorted({code[:2] for code in codes} - set(postgres_errors._CLASSES))
    assert missing == []


RETRIED = [
    "55P03",  # lock_not_available: lock_timeout, like statement_timeout
    "57014",  # query_canceled: statement_timeout
    "53300",  # too_many_connections
    "08006",  # connection_failure
]
#: Retried on a new connection: what a failover looks like from a connection.
RECONNECTED = [
    "25006",  # read_only_sql_transaction: a standby, a demoted primary
    "40001",  # serialization_failure (and hot-standby conflicts)
    "40P01",  # deadlock_detected (and a buffer deadlock with recovery)
    "57P01",  # admin_shutdown
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now: starting up, shutting down, in recovery
    "25P03",  # idle_in_transaction_session_timeout
]
REFUSED = [
    "55000",  # object_not_in_prerequisite_state: the class of 55P03, but not a lock
    "55P02",  # cant_change_runtime_param
    "57P04",  # database_dropped: reconnecting cannot help
    "53400",  # configuration_limit_exceeded
    "40002",  # an integrity violation found at commit
    "58P01",  # undefined_file
    "42P01",  # undefined_table
    "42704",  # undefined_object
    "28P01",  # invalid_password
    "3D000",  # invalid_catalog_name
    "23505",  # unique_violation
    "XX001",  # data_corrupted
    "ZZ999",  # not in Appendix A
]


@pytest.mark.parametrize(
    ("sqlstate", "expected"),
    [(code, Verdict.RETRY) for code in RETRIED]
    + [(code, Verdict.RECONNECT) for code in RECONNECTED]
    + [(code, Verdict.FAIL) for code in REFUSED],
)
def test_verdicts(sqlstate: str, expected: Verdict) -> None:
    assert verdict(sqlstate) is expected
    if sqlstate in psycopg.errors._sqlcodes:
        # Whatever psycopg's class for it (DatabaseError, OperationalError...).
        error = psycopg.errors.lookup(sqlstate)("test")
        assert error.sqlstate == sqlstate
        assert is_transient(error) is (expected is not Verdict.FAIL)
        assert needs_new_connection(error) is (expected is Verdict.RECONNECT)


def test_errors_without_a_sqlstate() -> None:
    assert is_transient(psycopg.OperationalError("connection lost"))
    assert is_transient(psycopg.InterfaceError("connection closed"))
    assert is_transient(ConnectionResetError())
    assert not is_transient(psycopg.DataError("NUL bytes"))
    assert not is_transient(ValueError("x"))


# -- lock_timeout and statement_timeout under real contention --------------------


def _dsn_with(dsn: str, **settings: object) -> str:
    options = " ".join(f"-c {name}={value}" for name, value in settings.items())
    return f"{dsn}{'&' if '?' in dsn else '?'}options={quote(options)}"


@pytest.fixture
async def holder(pg_dsn: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    conn = await psycopg.AsyncConnection.connect(pg_dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def _lock_tables(conn: psycopg.AsyncConnection[Any], schema: str) -> None:
    """Hold a lock that every write of the store waits for (reads go on)."""
    tables = sql.SQL(", ").join(sql.Identifier(schema, t) for t in ("wa_creds", "wa_keys"))
    await conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(tables))


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("setting", "error"),
    [
        ("lock_timeout", psycopg.errors.LockNotAvailable),  # 55P03
        ("statement_timeout", psycopg.errors.QueryCanceled),  # 57014
    ],
)
@pytest.mark.parametrize("operation", ["save_creds", "set_keys"])
async def test_a_write_that_waited_too_long_for_a_lock_is_retried(
    pg_dsn: str,
    pg_schema: str,
    holder: psycopg.AsyncConnection[Any],
    setting: str,
    error: type[psycopg.Error],
    operation: str,
) -> None:
    retries: list[RetryDetails] = []
    released = asyncio.Event()

    def on_retry(details: RetryDetails) -> None:
        retries.append(details)
        released.set()

    async def release_after_first_retry() -> None:
        await released.wait()
        await holder.commit()

    dsn = _dsn_with(pg_dsn, **{setting: 200})
    policy = RetryPolicy(attempts=4, timeout=10, backoff=0.5)
    async with PostgresStore(dsn, schema=pg_schema, retry=policy, on_retry=on_retry) as store:
        await _lock_tables(holder, pg_schema)
        releaser = asyncio.ensure_future(release_after_first_retry())
        if operation == "save_creds":
            await store.save_creds("s", {"ok": True})
        else:
            await store.set_keys("s", {"pre-key": {"1": b"k"}})
        await releaser
        assert retries, f"{setting} failed the call at once"
        assert isinstance(retries[0].cause, error), retries[0].cause
        if operation == "save_creds":
            assert await store.load_creds("s") == {"ok": True}
        else:
            assert await store.get_keys("s", "pre-key", [1]) == {"1": b"k"}


@pytest.mark.postgres
@pytest.mark.parametrize("setting", ["lock_timeout", "statement_timeout"])
async def test_a_lock_held_past_the_budget_ends_unavailable_not_refused(
    pg_dsn: str, pg_schema: str, holder: psycopg.AsyncConnection[Any], setting: str
) -> None:
    dsn = _dsn_with(pg_dsn, **{setting: 100})
    policy = RetryPolicy(attempts=3, timeout=10, backoff=0.2)
    async with PostgresStore(dsn, schema=pg_schema, retry=policy) as store:
        await _lock_tables(holder, pg_schema)
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError) as info:
            await store.save_creds("s", {"ok": True})
        took = time.monotonic() - started
    assert info.value.attempts == 3
    assert isinstance(info.value.__cause__, psycopg.errors.OperationalError)
    assert info.value.__cause__.sqlstate in ("55P03", "57014")
    # 3 waits of 100 ms for the lock and backoffs of 0.2 + 0.4 s, well within 10 s each.
    assert took < 8, took
    print(f"\n{setting}=100ms, lock held: StoreUnavailableError after 3 attempts, {took:.2f} s")


# -- connect-time errors: a configuration to fix, or a passing condition ---------

SECRET = "s3cr3t-pw-20"


def _with_password(dsn: str) -> str:
    return dsn.replace("postgres@", f"postgres:{SECRET}@", 1)


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ("-c no_such_param=1", 'unrecognized configuration parameter "no_such_param"'),
        ("-c statement_timeout=abc", 'invalid value for parameter "statement_timeout"'),
        ("-c work_mem=1", 'outside the valid range for parameter "work_mem"'),
        ("-c enable_seqscan=maybe", 'parameter "enable_seqscan" requires a Boolean value'),
        ("-c shared_buffers=1MB", 'parameter "shared_buffers" cannot be changed'),
        ("-c search_path", "requires a value"),
        ("--no-such-switch", "requires a value"),
    ],
)
async def test_bad_startup_options_fail_at_once_as_configuration(
    pg_dsn: str, options: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    dsn = f"{_with_password(pg_dsn)}{'&' if '?' in pg_dsn else '?'}options={quote(options)}"
    message, took = await _refused_at_once(dsn)
    assert reason in message, message
    assert "options" in message, message  # what to fix
    assert SECRET not in message + "".join(r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]
    print(f"\noptions={options!r}: StoreConfigurationError after {took * 1000:.0f} ms")


async def _refused_at_once(dsn: str) -> tuple[str, float]:
    """The one-line StoreConfigurationError of opening ``dsn``, and the seconds it took.

    A retried failure would take the 2 s + 4 s of backoff at least; the
    refusal must come well before them, even on a loaded machine.
    """
    store = PostgresStore(dsn, retry=RetryPolicy(attempts=3, timeout=5, backoff=2))
    started = time.monotonic()
    with pytest.raises(StoreConfigurationError) as info:
        await store.open()
    took = time.monotonic() - started
    assert took < 3.0, took
    assert "\n" not in str(info.value)
    assert not store.is_open
    return str(info.value), took


@pytest.mark.postgres
async def test_a_database_that_refuses_connections_is_a_configuration_error(
    pg_dsn: str,
) -> None:
    message, _ = await _refused_at_once(pg_dsn.rsplit("/", 1)[0] + "/template0")
    assert "not currently accepting connections" in message
    assert "ALLOW_CONNECTIONS" in message


@pytest.fixture
def limited_role(pg_dsn: str) -> Iterator[str]:
    """A role that may log in but has no connection slot (CONNECTION LIMIT 0)."""
    name = f"wa_test_limited_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT 0").format(sql.Identifier(name))
        )
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = %s",
            (name,),
        )
        conn.execute(sql.SQL("DROP OWNED BY {0}; DROP ROLE {0}").format(sql.Identifier(name)))


@pytest.mark.postgres
async def test_too_many_connections_at_connect_is_retried(
    pg_dsn: str, pg_schema: str, limited_role: str
) -> None:
    """53300 is a passing condition: the open succeeds once a slot is free."""
    retries: list[RetryDetails] = []

    def on_retry(details: RetryDetails) -> None:
        retries.append(details)
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            role = sql.Identifier(limited_role)
            conn.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT -1").format(role))
            database = sql.Identifier(conn.info.dbname)
            conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(database, role))
            conn.execute(
                sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(sql.Identifier(pg_schema), role)
            )

    dsn = pg_dsn.replace("postgres@", f"{limited_role}@", 1)
    policy = RetryPolicy(attempts=3, timeout=5, backoff=0.3)
    async with PostgresStore(dsn, schema=pg_schema, retry=policy, on_retry=on_retry) as store:
        await store.save_creds("s", {"ok": True})
    assert len(retries) == 1
    assert "too many connections" in str(retries[0].cause)


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.postgres
async def test_a_multi_host_dsn_is_refused_for_good_only_when_every_host_refuses(
    pg_dsn: str,
) -> None:
    """One host that is down may come back: the connect stays transient (issue 21's URLs)."""
    server = psycopg.conninfo.conninfo_to_dict(target_dsn())
    where = f"{server['host']}:{server.get('port', 5432)}"
    both = f"postgresql://postgres@{where},{where}/no_such_db_20"
    with pytest.raises(StoreConfigurationError, match='database "no_such_db_20" does not exist'):
        await PostgresStore(both, retry=RetryPolicy(attempts=2, backoff=2)).open()
    one_down = f"postgresql://postgres@{where},127.0.0.1:{_closed_port()}/no_such_db_20"
    with pytest.raises(StoreUnavailableError) as info:
        await PostgresStore(one_down, retry=RetryPolicy(attempts=2, timeout=3, backoff=0.1)).open()
    assert info.value.attempts == 2


@pytest.mark.postgres
async def test_a_database_pgbouncer_does_not_know_is_a_configuration_error(
    pgbouncer_dsn: str,
) -> None:
    dsn = psycopg.conninfo.make_conninfo(pgbouncer_dsn, dbname="no_such_db_20")
    message, _ = await _refused_at_once(dsn)
    assert "PgBouncer" in message


# -- identifiers, in bytes as the server counts them ------------------------------


@pytest.mark.parametrize(
    "schema",
    ["é" * 40, "é" * 41, "é" * 32, "a" * 64, "€" * 22, "😀" * 16],
)
def test_a_schema_name_over_63_bytes_is_refused(schema: str) -> None:
    with pytest.raises(InvalidInputError, match="63 bytes") as info:
        PostgresStore("postgresql://localhost/db", schema=schema)
    assert f"{len(schema.encode())} bytes long in UTF-8" in str(info.value)


@pytest.mark.parametrize("schema", ["", "a\x00b", "a\ud800b"])
def test_a_schema_name_the_server_cannot_take_is_refused(schema: str) -> None:
    with pytest.raises(InvalidInputError, match="schema name"):
        PostgresStore("postgresql://localhost/db", schema=schema)


@pytest.mark.postgres
def test_the_server_would_have_merged_the_refused_names(pg_dsn: str) -> None:
    """Why the limit is in bytes: PostgreSQL keeps 63 bytes of a name, whatever the characters."""
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute("SELECT %s::name = %s::name", ("é" * 40, "é" * 41)).fetchone()
    assert row == (True,)


@pytest.mark.postgres
async def test_a_schema_name_of_63_bytes_is_kept_whole(pg_dsn: str) -> None:
    name = f"{uuid.uuid4().hex[:8]}_" + "é" * 27  # 9 + 54 bytes
    assert len(name.encode()) == MAX_IDENTIFIER_BYTES
    try:
        async with PostgresStore(pg_dsn, schema=name) as store:
            await store.save_creds("s", {"ok": True})
            assert await store.load_creds("s") == {"ok": True}
        with psycopg.connect(pg_dsn) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (name,)
            ).fetchone()
        assert row == (1,)
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.mark.postgres
async def test_every_name_made_from_the_longest_prefix_is_kept_whole(
    pg_dsn: str, pg_schema: str
) -> None:
    prefix = "p" * 30
    async with PostgresStore(pg_dsn, schema=pg_schema, table_prefix=prefix):
        pass
    expected = {prefix + t for t in ("creds", "keys", "schema_version", "leases")}
    expected |= {name + "_pkey" for name in expected}
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE nspname = %s",
            (pg_schema,),
        ).fetchall()
    assert {r[0] for r in rows} == expected
    assert max(len(n.encode()) for n in expected) <= MAX_IDENTIFIER_BYTES
    assert Schema(None, prefix).describe() == prefix + "*"


@pytest.mark.parametrize("name", ["a" * 64, "bot-é", "tab\there"])
def test_an_application_name_the_server_would_alter_is_refused(name: str) -> None:
    with pytest.raises(InvalidInputError, match="63 printable ASCII"):
        PostgresStore("postgresql://localhost/db", application_name=name)


@pytest.mark.postgres
async def test_an_application_name_of_63_characters_is_shown_whole(
    pg_dsn: str, pg_schema: str
) -> None:
    name = ("wa-bot " + uuid.uuid4().hex) * 3
    name = name[:63]
    async with PostgresStore(pg_dsn, schema=pg_schema, application_name=name) as store:
        await store.save_creds("s", {"ok": True})
        with psycopg.connect(pg_dsn) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
            ).fetchone()
        assert row is not None
        assert row[0] >= 1
