"""Options are checked before any I/O: use_auth_state, restore_all (and their
sync twins) and the pyaileys integration refuse a bad option before the first
statement, so nothing is read, opened or leased."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from wa_session_store import (
    InvalidInputError,
    InvalidTypeError,
    MemoryStore,
    PostgresStore,
    SQLiteStore,
    restore_all,
    use_auth_state,
)
from wa_session_store.auth.state import SessionOptions
from wa_session_store.metrics import open_auth_states
from wa_session_store.store.base import BaseStore
from wa_session_store.sync import SyncStore, restore_all_sync, use_sync_auth_state

from .conftest import DSN

CREDS: dict[str, Any] = {"registrationId": 7, "noiseKey": {"public": b"\x05" * 32}}
SESSIONS = [f"bot-{n}" for n in range(5)]

# Each refused, with the error and a word its message must hold (what is allowed).
BAD_OPTIONS = [
    pytest.param({"key_writes": "bogus"}, InvalidInputError, "'barrier'", id="key_writes"),
    pytest.param({"key_writes": None}, InvalidInputError, "'barrier'", id="key_writes-none"),
    pytest.param({"throttle": -1}, InvalidInputError, ">= 0", id="throttle-negative"),
    pytest.param({"throttle": math.nan}, InvalidInputError, "finite", id="throttle-nan"),
    pytest.param({"throttle": "30"}, InvalidTypeError, "seconds", id="throttle-str"),
    pytest.param({"throttle": True}, InvalidTypeError, "seconds", id="throttle-bool"),
    pytest.param({"backup_interval": -5}, InvalidInputError, "None or 0", id="backup-negative"),
    pytest.param({"backup_interval": math.inf}, InvalidInputError, "finite", id="backup-inf"),
    pytest.param({"initial_delay": -1}, InvalidInputError, ">= 0", id="initial_delay"),
    pytest.param(
        {"initial_delay": -1, "backup_interval": None},
        InvalidInputError,
        ">= 0",
        id="initial_delay-without-backups",
    ),
    pytest.param({"backup_jitter": -1}, InvalidInputError, ">= 0", id="jitter-negative"),
    pytest.param(
        {"backup_interval": 60, "backup_jitter": 60},
        InvalidInputError,
        "less than backup_interval",
        id="jitter-not-below-interval",
    ),
    pytest.param({"key_cache_bytes": -1}, InvalidInputError, "int >= 0", id="cache-negative"),
    pytest.param({"key_cache_bytes": True}, InvalidInputError, "int >= 0", id="cache-bool"),
    pytest.param({"key_cache_bytes": 1.5}, InvalidInputError, "int >= 0", id="cache-float"),
    pytest.param({"urgent": 5}, InvalidTypeError, "callable", id="urgent"),
    pytest.param({"on_lost": 5}, InvalidTypeError, "callable", id="on_lost"),
    pytest.param({"preload": "session"}, InvalidTypeError, "iterable", id="preload-str"),
    pytest.param(
        {"preload": ["session", "bad\x00"]}, InvalidInputError, "control", id="preload-name"
    ),
    pytest.param({"preload": [5]}, InvalidTypeError, "str", id="preload-not-str"),
]


def _lease_rows(schema: str) -> int:
    """The rows of the lease table, read with a connection of its own."""
    with psycopg.connect(DSN, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (f"{schema}.wa_leases",)).fetchone()
        if exists is None or exists[0] is None:
            return 0
        query = sql.SQL("SELECT count(*) FROM {}.wa_leases").format(sql.Identifier(schema))
        row = conn.execute(query).fetchone()
        return 0 if row is None else int(row[0])


@pytest.fixture
async def pg(pg_schema: str) -> AsyncIterator[PostgresStore]:
    async with PostgresStore(DSN, schema=pg_schema, max_size=2) as store:
        for sid in SESSIONS:
            await store.save_creds(sid, CREDS)
        yield store


@pytest.mark.postgres
@pytest.mark.parametrize(("options", "error", "allowed"), BAD_OPTIONS)
async def test_restore_all_with_owner_leases_nothing_before_refusing(
    pg: PostgresStore, pg_schema: str, options: dict[str, Any], error: type, allowed: str
) -> None:
    with pytest.raises(error, match=allowed):
        await restore_all(pg, owner="w", **options)
    assert _lease_rows(pg_schema) == 0
    assert await pg.list_leases() == []
    assert await pg.lease_holder(SESSIONS[0]) is None
    # And the sessions are free for the next owner at once, not after the ttl.
    result = await restore_all(pg, owner="w2", backup_interval=None)
    try:
        assert sorted(result.states) == SESSIONS
        assert not result.held
    finally:
        for state in result.states.values():
            await state.aclose()


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("arguments", "allowed"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"owner": ""}, "owner"),
        ({"ttl": 0}, "ttl"),
        ({"lease": "not a lease"}, "lease must be"),
    ],
)
async def test_restore_all_checks_its_own_arguments_first(
    pg: PostgresStore, pg_schema: str, arguments: dict[str, Any], allowed: str
) -> None:
    arguments = {"owner": "w", **arguments}
    with pytest.raises(InvalidInputError, match=allowed):
        await restore_all(pg, **arguments)
    assert _lease_rows(pg_schema) == 0


@pytest.mark.postgres
def test_restore_all_sync_with_owner_leases_nothing_before_refusing(pg_schema: str) -> None:
    with SyncStore(PostgresStore(DSN, schema=pg_schema, max_size=2)) as store:
        for sid in SESSIONS:
            store.save_creds(sid, CREDS)
        with pytest.raises(InvalidInputError, match="key_writes"):
            restore_all_sync(store, owner="w", key_writes="bogus")
        with pytest.raises(InvalidInputError, match="throttle"):
            restore_all_sync(store, owner="w", throttle=-1)
        assert store.list_leases() == []
    assert _lease_rows(pg_schema) == 0


@pytest.fixture(params=["memory", "sqlite"])
def unopened(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BaseStore]:
    """A store never opened: any I/O on it raises StoreClosedError, so a bad
    option refused with InvalidInputError was refused before any I/O."""
    yield MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "s.db")
    assert not (tmp_path / "s.db").exists()


@pytest.mark.parametrize(("options", "error", "allowed"), BAD_OPTIONS)
async def test_use_auth_state_and_restore_all_refuse_before_any_io(
    unopened: BaseStore, options: dict[str, Any], error: type, allowed: str
) -> None:
    with pytest.raises(error, match=allowed):
        await use_auth_state(unopened, "bot-0", **options)
    with pytest.raises(error, match=allowed):
        await restore_all(unopened, **options)


@pytest.mark.parametrize(("options", "error", "allowed"), BAD_OPTIONS)
async def test_pyaileys_refuses_before_any_io(
    unopened: BaseStore, options: dict[str, Any], error: type, allowed: str
) -> None:
    pytest.importorskip("pyaileys", minversion="0.1.5")
    from wa_session_store.integrations.pyaileys import use_pyaileys_auth_state

    with pytest.raises(error, match=allowed):
        await use_pyaileys_auth_state(unopened, "bot-0", **options)


async def test_a_lease_of_another_session_is_refused_before_the_read(
    pg: PostgresStore,
) -> None:
    lease = await pg.acquire_lease("bot-1", owner="w", ttl=30)
    try:
        with pytest.raises(InvalidInputError, match="the lease is for session 'bot-1'"):
            await use_auth_state(MemoryStore(), "bot-0", lease=lease)  # never opened
        with pytest.raises(InvalidTypeError, match="lease must be a Lease"):
            await use_auth_state(MemoryStore(), "bot-0", lease="bot-0")  # type: ignore[arg-type]
    finally:
        await lease.release()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_refused_restore_opens_no_auth_state(kind: str, tmp_path: Path) -> None:
    store = MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "s.db")
    async with store:
        for sid in SESSIONS:
            await store.save_creds(sid, CREDS)
        before = len(open_auth_states)
        with pytest.raises(InvalidInputError, match="key_writes"):
            await restore_all(store, key_writes="bogus")
        with pytest.raises(InvalidInputError, match="throttle"):
            await restore_all(store, throttle=-1)
        assert len(open_auth_states) == before


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_the_sync_twins_refuse_before_any_io(kind: str, tmp_path: Path) -> None:
    store = MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "s.db")
    with SyncStore(store) as sync_store:
        sync_store.save_creds("bot-0", CREDS)
        with pytest.raises(InvalidInputError, match="key_cache_bytes"):
            use_sync_auth_state(sync_store, "bot-0", key_cache_bytes=-1)
        with pytest.raises(InvalidInputError, match="key_writes"):
            restore_all_sync(sync_store, key_writes="bogus")
        assert not sync_store._states


def test_good_options_are_kept() -> None:
    options = SessionOptions(
        throttle=0, backup_interval=0, initial_delay=0, backup_jitter=0, key_cache_bytes=0
    )
    assert (options.throttle, options.backup_interval) == (0, 0)
    assert SessionOptions(backup_interval=None, backup_jitter=1000).backup_jitter == 1000
    # A generator is read once, when checked, and its categories kept.
    once = SessionOptions(preload=(c for c in ["session", "sender-key"]))
    assert once.categories() == ["session", "sender-key"]
    assert once.categories() == ["session", "sender-key"]
    assert once.replace(throttle=1).categories() == ["session", "sender-key"]
    assert SessionOptions(preload=True).preload is True
    with pytest.raises(InvalidInputError, match="key_writes"):
        once.replace(key_writes="bogus")  # type: ignore[typeddict-item]
