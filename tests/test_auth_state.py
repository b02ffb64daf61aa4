"""The client-facing auth state on every backend: throttled saves that lose
nothing, write-through keys, backups, restore_all and graceful shutdown."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from wa_session_store import (
    AuthState,
    DecodeError,
    InvalidInputError,
    PostgresStore,
    RetryPolicy,
    SQLiteStore,
    StoreClosedError,
    StoreUnavailableError,
    prekey_counters_changed,
    restore_all,
    use_auth_state,
)
from wa_session_store.store.base import BaseStore

from .proxy import Proxy
from .support.creds import CREDS


async def _wait_for(predicate: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_new_session_has_no_creds(store: BaseStore) -> None:
    auth = await use_auth_state(store, "s1", backup_interval=None)
    assert auth.creds is None
    assert not auth.pending
    await auth.aclose()


async def test_storm_makes_a_handful_of_writes_and_stores_the_last_update(
    store: BaseStore,
) -> None:
    auth = await use_auth_state(store, "s1", throttle=0.2, backup_interval=None)
    await auth.save_creds(dict(CREDS))
    creds = auth.creds
    assert creds is not None
    loop = asyncio.get_running_loop()
    started = loop.time()
    for n in range(1, 3001):
        creds["accountSyncCounter"] = n
        auth.creds_updated()
        if n % 100 == 0:
            await asyncio.sleep(0.02)
    elapsed = loop.time() - started
    await _wait_for(lambda: not auth.pending)
    writes = auth.throttler.runs
    # The leading save, then at most one per interval, plus the trailing one.
    assert writes <= elapsed / 0.2 + 3, (writes, elapsed)
    assert (await store.load_creds("s1") or {})["accountSyncCounter"] == 3000
    print(f"\nstorm: 3,000 updates in {elapsed:.2f}s -> {writes} writes")
    await auth.aclose()


async def test_aclose_saves_the_pending_update_at_once(store: BaseStore) -> None:
    auth = await use_auth_state(store, "s1", throttle=30.0, backup_interval=None)
    await auth.save_creds(dict(CREDS))
    auth.creds_updated({**CREDS, "accountSyncCounter": 99})
    assert auth.pending
    await asyncio.wait_for(auth.aclose(), 2.0)  # not 30 s
    assert not auth.pending
    assert (await store.load_creds("s1") or {})["accountSyncCounter"] == 99


async def test_prekey_counter_change_bypasses_the_throttle(store: BaseStore) -> None:
    auth = await use_auth_state(store, "s1", throttle=30.0, backup_interval=None)
    await auth.save_creds(dict(CREDS))
    auth.creds_updated({**CREDS, "accountSyncCounter": 1})  # throttled: waits 30 s
    auth.creds_updated({**CREDS, "accountSyncCounter": 1, "nextPreKeyId": 813})  # urgent
    await _wait_for(lambda: not auth.pending, timeout=2.0)
    assert (await store.load_creds("s1") or {})["nextPreKeyId"] == 813
    await auth.aclose()


def test_default_urgent_predicate() -> None:
    assert prekey_counters_changed(None, CREDS)
    assert not prekey_counters_changed(CREDS, {**CREDS, "accountSyncCounter": 5})
    assert prekey_counters_changed(CREDS, {**CREDS, "firstUnuploadedPreKeyId": 30})
    snake = {"next_pre_key_id": 1}
    assert prekey_counters_changed(snake, {"next_pre_key_id": 2})


async def test_keys_are_written_through(store: BaseStore) -> None:
    auth = await use_auth_state(store, "s1", backup_interval=None)
    await auth.keys.set({"session": {"peer.0": b"ratchet"}, "pre-key": {"5": {"k": b"v"}}})
    # Straight in the store, not waiting for any throttle or close.
    assert await store.get_keys("s1", "session", ["peer.0"]) == {"peer.0": b"ratchet"}
    assert await auth.keys.get("pre-key", [5, 6]) == {"5": {"k": b"v"}, "6": None}
    await auth.keys.clear()
    assert await store.get_keys("s1", "session", ["peer.0"]) == {"peer.0": None}
    await auth.aclose()


async def test_backup_saves_what_the_throttle_holds_back(store: BaseStore) -> None:
    auth = await use_auth_state(store, "s1", throttle=30.0, backup_interval=0.2, initial_delay=0.05)
    await auth.save_creds(dict(CREDS))
    auth.creds_updated({**CREDS, "accountSyncCounter": 5})
    await _wait_for(lambda: not auth.pending, timeout=2.0)
    assert (await store.load_creds("s1") or {})["accountSyncCounter"] == 5
    await auth.aclose()


async def test_creds_updated_never_raises(
    store: BaseStore, caplog: pytest.LogCaptureFixture
) -> None:
    auth = await use_auth_state(store, "s1", backup_interval=None)
    auth.creds_updated()  # no creds yet: a warning
    auth.creds_updated(["not", "a", "mapping"])  # type: ignore[arg-type]
    await auth.save_creds(dict(CREDS))
    await auth.aclose()
    auth.creds_updated({**CREDS, "accountSyncCounter": 1})  # after close: an error log
    levels = [r.levelname for r in caplog.records if r.name == "wa_session_store"]
    assert levels.count("ERROR") == 2
    assert "WARNING" in levels
    with pytest.raises(StoreClosedError):
        await auth.save_creds()


async def test_bad_creds_are_refused_and_the_state_is_kept(store: BaseStore) -> None:
    auth = await use_auth_state(store, "s1", backup_interval=None)
    await auth.save_creds(dict(CREDS))
    with pytest.raises(InvalidInputError):
        await auth.save_creds({"bad": float("nan")})
    assert auth.creds == CREDS
    assert not auth.pending
    assert await store.load_creds("s1") == CREDS
    await auth.aclose(deadline=1.0)


@pytest.mark.postgres
async def test_a_store_that_fails_for_a_while_keeps_the_update_pending(
    proxy: Proxy, pg_dsn: str, pg_schema: str
) -> None:
    policy = RetryPolicy(attempts=2, timeout=0.5, backoff=0.1)
    async with PostgresStore(proxy.dsn(pg_dsn), schema=pg_schema, retry=policy) as store:
        auth = await use_auth_state(store, "s1", throttle=0.3, backup_interval=None)
        await auth.save_creds(dict(CREDS))
        proxy.refuse()
        auth.creds_updated({**CREDS, "accountSyncCounter": 42})
        with pytest.raises(StoreUnavailableError):
            await auth.flush()
        assert auth.pending
        proxy.restore()
        # Retried by the throttle on its own, without another update.
        await _wait_for(lambda: not auth.pending, timeout=10.0)
        assert (await store.load_creds("s1") or {})["accountSyncCounter"] == 42
        await auth.aclose()


async def _corrupt(store: BaseStore, session_id: str) -> None:
    if isinstance(store, SQLiteStore):
        import sqlite3

        with sqlite3.connect(store.path) as conn:
            conn.execute(
                "UPDATE wa_creds SET value = ? WHERE session_id = ?", (b"\xffnot json", session_id)
            )
    elif isinstance(store, PostgresStore):
        dsn = os.environ.get(
            "WA_SESSION_STORE_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/test"
        )
        assert store.schema.schema is not None
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(
                sql.SQL("UPDATE {} SET value = %s WHERE session_id = %s").format(
                    sql.Identifier(store.schema.schema, "wa_creds")
                ),
                (b"\xffnot json", session_id),
            )
    else:
        store._sessions[session_id].creds = b"\xffnot json"  # type: ignore[attr-defined]


async def test_restore_all_reports_failures_and_restores_the_rest(store: BaseStore) -> None:
    for n in range(40):
        await store.save_creds(f"bot-{n:02d}", {**CREDS, "registrationId": n})
        await store.set_keys(f"bot-{n:02d}", {"pre-key": {"1": n}})
    for n in (3, 17):
        await _corrupt(store, f"bot-{n:02d}")
    result = await restore_all(store, concurrency=4, backup_interval=None)
    assert sorted(result.failed) == ["bot-03", "bot-17"]
    assert all(isinstance(e, DecodeError) for e in result.failed.values())
    assert len(result.states) == 38
    for session_id, auth in result.states.items():
        assert isinstance(auth, AuthState)
        assert auth.creds is not None
        assert auth.creds["registrationId"] == int(session_id[-2:])
        assert await auth.keys.get("pre-key", ["1"]) == {"1": int(session_id[-2:])}
    for auth in result.states.values():
        await auth.aclose()


def test_restore_all_checks_concurrency() -> None:
    with pytest.raises(InvalidInputError, match="concurrency"):
        asyncio.run(restore_all(BaseStore.__new__(SQLiteStore), concurrency=0))


@pytest.mark.postgres
async def test_restore_all_stays_within_the_pool(pg_dsn: str, pg_schema: str) -> None:
    async with PostgresStore(pg_dsn, schema=pg_schema, max_size=3) as store:
        await asyncio.gather(
            *(store.save_creds(f"bot-{n}", {**CREDS, "registrationId": n}) for n in range(300))
        )
        with psycopg.connect(pg_dsn) as conn:
            before = _backends(conn)
            peak = 0

            async def sample() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, _backends(conn) - before)
                    await asyncio.sleep(0.005)

            sampler = asyncio.ensure_future(sample())
            result = await restore_all(store, concurrency=64, backup_interval=None)
            sampler.cancel()
        assert len(result.states) == 300
        assert not result.failed
        assert store.pool.get_stats()["pool_size"] <= 3
        assert peak <= 3
        for auth in result.states.values():
            await auth.aclose()


def _backends(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'wa_session_store'"
    ).fetchone()
    return int(row[0]) if row else 0


BOT = textwrap.dedent(
    """
    import asyncio, json, sys
    from wa_session_store import SQLiteStore, install_shutdown_handler, use_auth_state

    async def main() -> None:
        async with SQLiteStore(sys.argv[1]) as store:
            auth = await use_auth_state(store, "bot", throttle=30.0, backup_interval=None)
            await auth.save_creds({"counter": 0, "nextPreKeyId": 1})
            stopped = install_shutdown_handler()
            for n in range(1, 501):
                auth.creds["counter"] = n
                auth.creds_updated()          # throttled: held back for 30 s
            print(json.dumps({"pending": auth.pending}), flush=True)
            await stopped.wait()

    asyncio.run(main())
    """
)


async def test_sigterm_saves_the_pending_update_before_exit(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    bot = await asyncio.create_subprocess_exec(
        sys.executable, "-c", BOT, str(db), stdout=asyncio.subprocess.PIPE
    )
    assert bot.stdout is not None
    line = await asyncio.wait_for(bot.stdout.readline(), 20)
    assert json.loads(line) == {"pending": True}
    started = asyncio.get_running_loop().time()
    bot.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(bot.wait(), 10) == 0
    took = asyncio.get_running_loop().time() - started
    async with SQLiteStore(db) as store:
        assert await store.load_creds("bot") == {"counter": 500, "nextPreKeyId": 1}
    print(f"\nSIGTERM to exit with the last update saved: {took * 1000:.0f} ms")


async def test_logs_name_the_session(store: BaseStore, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="wa_session_store")
    auth = await use_auth_state(store, "user_123", backup_interval=None)
    await auth.save_creds({"secret": b"\x99" * 8})
    await auth.aclose()
    assert any("user_123" in r.getMessage() for r in caplog.records)
