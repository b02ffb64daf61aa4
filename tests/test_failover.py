"""Riding through a PostgreSQL failover, against a real primary and standby.

One pair (``tests/pg_pair.py``) serves the module: each test heals it first
(a primary and a streaming standby, rebuilt with ``pg_basebackup`` only when
the last test promoted or demoted a node). The faults are real: ``pg_ctl
stop`` (fast, immediate), ``pg_ctl promote``, an old primary restarted
read-only, a database whose sessions open read-only. Timing is asserted
against the policy's own step, never as absolute seconds.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry

from wa_session_store import (
    AuthKeys,
    CredsConflictError,
    PostgresStore,
    RetryPolicy,
    StoreUnavailableError,
    open_store,
    use_auth_state,
)
from wa_session_store.metrics import OpenTelemetryMetrics, PrometheusMetrics
from wa_session_store.store.redaction import redact_text, redact_url

from .pg_pair import PgPair, pg_pair  # noqa: F401  # the session's pair
from .proxy import Proxy

pytestmark = [pytest.mark.postgres, pytest.mark.faults, pytest.mark.slow]

#: Short steps and a deadline that outlasts every outage these tests make.
RIDE = RetryPolicy(attempts=1000, timeout=2.0, backoff=0.2, max_backoff=0.5, deadline=60.0)
#: Gives up quickly: for the calls that must fail while the primary is gone.
SHORT = RetryPolicy(attempts=3, timeout=1.0, backoff=0.1, max_backoff=0.2)
#: The most one backoff step of RIDE may be, and one attempt (its timeout).
STEP = RIDE.max_backoff + RIDE.jitter + RIDE.timeout


@pytest.fixture
def schema() -> str:
    return f"wa_fo_{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def pair(pg_pair: PgPair) -> AsyncIterator[PgPair]:  # noqa: F811  # the fixture
    """The session's pair, healed (asynchronous unless the test switches it)."""
    await asyncio.to_thread(pg_pair.heal, synchronous=False)
    return pg_pair


def _stored_creds(pair: PgPair, schema: str, session: str) -> Any:
    rows = pair.query(
        pair.primary, f"SELECT version FROM {schema}.wa_creds WHERE session_id = '{session}'"
    )
    return rows[0][0] if rows else None


class Bot:
    """Saves creds and key batches in a loop, noting each round it was told is stored.

    The outage as it saw it is the longest wait between two acknowledged
    rounds: a call may fail and be retried, or simply wait in the pool for
    a connection to the promoted server.
    """

    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self.acked: list[tuple[int, float]] = []  # (n, when) of each acknowledged round
        self.stop = asyncio.Event()
        self.progress = asyncio.Event()  # set at each acknowledged round

    async def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                await self.store.save_creds("bot", {"n": n})
                await self.store.set_keys("bot", {"session": {f"peer{n}": {"n": n}}})
            except StoreUnavailableError:
                continue
            self.acked.append((n, time.monotonic()))
            self.progress.set()
            await asyncio.sleep(0.005)

    async def acked_after(self, moment: float, count: int) -> None:
        while sum(when > moment for _, when in self.acked) < count:
            self.progress.clear()
            await self.progress.wait()

    @property
    def outage(self) -> float:
        times = [when for _, when in self.acked]
        return max(b - a for a, b in itertools.pairwise(times))


@pytest.mark.parametrize(
    ("synchronous", "mode"),
    [(True, "fast"), (True, "immediate"), (False, "fast")],
    ids=["sync-fast", "sync-immediate", "async-fast"],
)
async def test_a_failover_loses_no_acknowledged_write(
    pair: PgPair, schema: str, synchronous: bool, mode: str
) -> None:
    await asyncio.to_thread(pair.set_synchronous, synchronous)
    retries: list[object] = []
    async with PostgresStore(
        pair.dsn(), schema=schema, retry=RIDE, on_retry=retries.append
    ) as store:
        bot = Bot(store)
        task = asyncio.create_task(bot.run())
        await asyncio.wait_for(bot.acked_after(0.0, 20), 30)
        stopped = time.monotonic()
        await asyncio.to_thread(pair.stop_primary, mode)
        await asyncio.sleep(0.5)  # the bot meets a primary that is gone
        await asyncio.to_thread(pair.promote)
        promoted = time.monotonic()
        # It goes on writing, on the new primary.
        await asyncio.wait_for(bot.acked_after(promoted, 10), 30)
        bot.stop.set()
        await task
        assert (await store.health()).server == pair.primary.address
    rows = pair.query(pair.primary, f"SELECT key_id FROM {schema}.wa_keys")
    found = {int(str(key_id).removeprefix("peer")) for (key_id,) in rows}
    lost = sorted({n for n, _ in bot.acked} - found)
    seen = bot.outage
    window = promoted - stopped
    print(
        f"{'sync' if synchronous else 'async'} {mode}: {len(bot.acked)} acked, {len(lost)} lost, "
        f"{len(retries)} retries; outage seen {seen:.2f} s, stop to promoted {window:.2f} s"
    )
    if synchronous or mode == "fast":
        # Synchronous: every commit was on the standby before it returned. A
        # fast shutdown sends the standby all WAL before the primary stops.
        assert lost == []
    # The creds, too: the newest acknowledged save is the one stored.
    assert _stored_creds(pair, schema, "bot") is not None
    # Back within one step of RIDE (and one attempt) once the standby took writes.
    assert seen <= window + STEP, (seen, window)


async def test_a_switchover_leaves_a_read_only_server_that_is_reported_and_never_written(
    pair: PgPair, schema: str
) -> None:
    async with PostgresStore(pair.dsn(), schema=schema, retry=RIDE) as store:
        await store.save_creds("s", {"v": 1})
    old = pair.primary
    await asyncio.to_thread(pair.stop_primary, "fast")
    await asyncio.to_thread(pair.promote)
    await asyncio.to_thread(pair.start_read_only, old)
    registry = CollectorRegistry()
    reader = InMemoryMetricReader()
    metrics = [PrometheusMetrics(registry), OpenTelemetryMetrics(MeterProvider([reader]))]
    # A store that names the old primary alone, as a single-host DSN would.
    stores = [
        PostgresStore(old.dsn(), schema=schema, retry=SHORT, metrics=m, min_size=3) for m in metrics
    ]
    for store in stores:
        async with store:
            health = await store.health()
            assert (health.ok, health.role, health.server) == (False, "read-only", old.address)
            assert health.error is not None
            assert "refuses writes" in health.error
            with pytest.raises(StoreUnavailableError) as info:
                await store.save_creds("s", {"v": 2})
            assert isinstance(info.value.__cause__, psycopg.errors.ReadOnlySqlTransaction)
    up = "wa_session_store_store_up"
    assert registry.get_sample_value(up, {"backend": "postgresql"}) is None  # closed: gone
    # Nothing of the refused write reached either server.
    assert pair.query(old, f"SELECT value IS NOT NULL FROM {schema}.wa_creds")  # still v1
    # The multi-host URL skips the read-only server for the promoted one.
    async with open_store(pair.dsn(), schema=schema, retry=RIDE) as store:
        health = await store.health()
        assert (health.ok, health.role, health.server) == (True, "primary", pair.primary.address)
        await store.save_creds("s", {"v": 3})
        assert await store.load_creds("s") == {"v": 3}
    assert [r[0] for r in pair.query(old, f"SELECT count(*) FROM {schema}.wa_creds")] == [1]


async def test_connections_opened_read_only_are_dropped_once_writes_are_accepted_again(
    pair: PgPair, schema: str
) -> None:
    """The outside attack: a database turned read-only, then writable again."""
    registry = CollectorRegistry()
    up = ("wa_session_store_store_up", {"backend": "postgresql"})
    single = pair.primary.dsn()
    async with PostgresStore(
        single, schema=schema, retry=SHORT, min_size=3, metrics=PrometheusMetrics(registry)
    ) as store:
        await store.save_creds("s", {"v": 1})
        assert registry.get_sample_value(*up) == 1
        try:
            # New sessions of the database open read-only (a managed service's
            # "disk full" mode does this); the pool's are replaced by ones that do.
            pair.query(
                pair.primary,
                "ALTER DATABASE failover SET default_transaction_read_only = on",
                "postgres",
            )
            pair.query(
                pair.primary,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'wa_session_store'",
            )
            with pytest.raises(StoreUnavailableError):
                await store.save_creds("s", {"v": 2})
            assert registry.get_sample_value(*up) == 0  # the alert fires
            health = await store.health()
            assert (health.ok, health.role) == (False, "read-only")
        finally:
            pair.query(
                pair.primary,
                "ALTER DATABASE failover RESET default_transaction_read_only",
                "postgres",
            )
        # Writes are accepted again: the read-only connections are not reused.
        await store.save_creds("s", {"v": 3})
        assert registry.get_sample_value(*up) == 1  # and it clears
        assert (await store.health()).ok
        assert await store.load_creds("s") == {"v": 3}


async def test_a_call_that_outlasts_the_outage_loses_nothing(
    pair: PgPair, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creds stay pending and a barrier holds its frame; both land after the promotion."""
    monkeypatch.setattr(AuthKeys, "FLUSH_DELAY", 3600.0)  # only a barrier stores keys
    await asyncio.to_thread(pair.set_synchronous, True)
    reader = InMemoryMetricReader()
    metrics = OpenTelemetryMetrics(MeterProvider([reader]))
    async with PostgresStore(pair.dsn(), schema=schema, retry=SHORT, metrics=metrics) as store:
        auth = await use_auth_state(store, "bot", key_writes="barrier", backup_interval=None)
        await auth.save_creds({"me": "paired", "n": 0})
        await asyncio.to_thread(pair.stop_primary, "immediate")
        sent: list[str] = []

        async def send(frame: str) -> None:  # how the integration sends: after the barrier
            await auth.barrier()
            sent.append(frame)

        await auth.keys.set({"session": {"peer": b"ratchet 1"}})
        with pytest.raises(StoreUnavailableError):
            await send("message 1")
        with pytest.raises(StoreUnavailableError):
            await auth.save_creds({"me": "paired", "n": 1})
        assert sent == []
        assert auth.pending
        assert auth.keys.pending == 1
        assert _gauge(reader) == 0
        await asyncio.to_thread(pair.promote)
        await _healthy(store)
        await send("message 1")
        await auth.flush()
        assert sent == ["message 1"]
        assert not auth.pending
        assert auth.keys.pending == 0
        assert _gauge(reader) == 1
        await auth.aclose()
    async with PostgresStore(pair.primary.dsn(), schema=schema) as fresh:
        assert await fresh.load_creds("bot") == {"me": "paired", "n": 1}
        assert await fresh.get_keys("bot", "session", ["peer"]) == {"peer": b"ratchet 1"}


async def _healthy(store: PostgresStore) -> None:
    """Wait until the store reaches a server that takes writes (one health check at a time)."""
    for _ in range(300):
        if (await store.health()).ok:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the store never reached the promoted server")


def _gauge(reader: InMemoryMetricReader) -> Any:
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "wa_session_store_store_up":
                    (point,) = metric.data.data_points
                    return point.value
    return None


async def test_a_restart_in_place_is_ridden_through(pair: PgPair, schema: str) -> None:
    async with PostgresStore(pair.dsn(), schema=schema, retry=RIDE) as store:
        await store.save_creds("s", {"v": 1})
        await asyncio.to_thread(pair.stop_primary, "fast")
        save = asyncio.create_task(store.save_creds("s", {"v": 2}))
        await asyncio.sleep(1.0)
        assert not save.done()  # the standby refuses it; it waits for the primary
        await asyncio.to_thread(pair.start_node, pair.primary)
        await asyncio.wait_for(save, 30)
        assert await store.load_creds("s") == {"v": 2}
        assert (await store.health()).server == pair.primary.address


# -- a commit whose outcome the client never learnt -------------------------------


async def _wait_stored(dsn: str, schema: str, query: str, wanted: object) -> None:
    """Poll the server directly (not through the proxy) until ``query`` returns ``wanted``."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for _ in range(500):
            cur = await conn.execute(query.format(schema=schema))  # type: ignore[arg-type]  # test SQL
            row = await cur.fetchone()
            if row is not None and row[0] == wanted:
                return
            await asyncio.sleep(0.01)
    raise AssertionError(f"{query} never returned {wanted!r}")


async def test_a_retried_commit_of_unknown_outcome_never_overwrites_a_newer_write(
    proxy: Proxy, pg_dsn: str, pg_schema: str
) -> None:
    """The statement reaches the server and commits; its answer is lost; it is retried
    after a newer save landed: the newer one stays, and the late caller is told its
    save does not stand."""
    slow = RetryPolicy(attempts=5, timeout=10.0, backoff=1.0)
    async with (
        PostgresStore(proxy.dsn(pg_dsn), schema=pg_schema, retry=slow) as late,
        PostgresStore(pg_dsn, schema=pg_schema) as other,
    ):
        await late.save_creds("s", {"v": 0})
        proxy.delay(1.0)  # the statement reaches the server after 1 s, its answer 1 s later
        await asyncio.sleep(1.1)
        first = asyncio.create_task(late.save_creds("s", {"v": "first"}))
        query = "SELECT position('first'::bytea in value) > 0 FROM {schema}.wa_creds"
        await _wait_stored(pg_dsn, pg_schema, query, True)  # committed on the server...
        proxy.cut()  # ...and the answer never comes: the outcome is unknown to the client
        proxy.delay(0)
        await other.save_creds("s", {"v": "newer"})  # called later: a higher version
        # Its retry (same version) changes nothing. From here, "landed, then replaced
        # by another process" and "never landed" look alike: it says it did not stand.
        with pytest.raises(CredsConflictError, match="nothing it wrote stands"):
            await first
        assert await other.load_creds("s") == {"v": "newer"}
        assert await late.load_creds("s") == {"v": "newer"}


# -- multi-host URLs: the API, open_store, the CLI -------------------------------------


def test_a_multi_host_url_is_described_whole_and_never_with_its_password() -> None:
    url = "postgresql://bot:s3cret-pw@db1.internal:5432,db2.internal:5433/bots?sslmode=disable"
    store = open_store(url)
    assert isinstance(store, PostgresStore)
    assert "bot@db1.internal:5432,db2.internal:5433/bots" in repr(store)
    # A store writes: without target_session_attrs it asks libpq for the primary.
    assert store.pool.kwargs["target_session_attrs"] == "read-write"
    assert "s3cret" not in repr(store)
    assert redact_url(url) == (
        "postgresql://bot:***@db1.internal:5432,db2.internal:5433/bots?sslmode=disable"
    )
    conninfo = "host=db1,db2 port=5432,5433 user=bot password=s3cret-pw dbname=bots"
    assert "s3cret" not in redact_text(f"cannot open {conninfo}")
    assert "bot@db1:5432,db2:5433/bots" in repr(PostgresStore(conninfo))
    # A port per host, or one for every host, as libpq reads them; an explicit choice is kept.
    shared = PostgresStore("postgresql://bot@db1,db2:6432/bots?target_session_attrs=any")
    assert "bot@db1,db2:6432/bots" in repr(shared)
    assert "bot@db1:6432,db2:6432/bots" in repr(
        PostgresStore("host=db1,db2 port=6432 user=bot dbname=bots")
    )
    assert "target_session_attrs" not in shared.pool.kwargs
    assert "target_session_attrs" not in PostgresStore("postgresql://bot@db1/bots").pool.kwargs


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wa_session_store", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_check_and_status_name_the_server_that_answered(pair: PgPair) -> None:
    # trust authentication ignores the password; it must show nowhere.
    url = pair.dsn().replace("postgres@", "postgres:s3cret-pw@")
    primary = pair.primary.address
    checked = await asyncio.to_thread(_cli, "check", "--dsn", url)
    assert checked.returncode == 0, checked.stderr
    assert f"server:       {primary} (primary, PostgreSQL " in checked.stdout
    status = await asyncio.to_thread(_cli, "status", "--dsn", url)
    assert status.returncode == 0, status.stderr
    assert f"server:   {primary} (primary)" in status.stdout
    # The standby alone: not healthy, and check stops before writing.
    standby = pair.standby.dsn().replace("postgres@", "postgres:s3cret-pw@")
    status = await asyncio.to_thread(_cli, "status", "--dsn", standby, "--json")
    assert status.returncode == 4
    report = json.loads(status.stdout)
    assert report["health"]["role"] == "replica"
    assert report["health"]["server"] == pair.standby.address
    assert "refuses writes: a standby in recovery" in report["health"]["error"]
    checked = await asyncio.to_thread(_cli, "check", "--dsn", standby)
    assert checked.returncode == 4
    assert "refuses writes" in checked.stderr
    assert "target_session_attrs" in checked.stderr
    for done in (checked, status):
        assert "s3cret" not in done.stdout + done.stderr
