"""The key store a client is handed: cache, preload, write barrier, transactions,
the durability rule through pyaileys, and round trips counted at the proxy."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

from wa_session_store import (
    AuthKeys,
    InvalidInputError,
    InvalidTypeError,
    LeaseLostError,
    PostgresStore,
    RetryPolicy,
    SQLiteStore,
    StoreUnavailableError,
    install_shutdown_handler,
    use_auth_state,
)
from wa_session_store.store.base import BaseStore

from .proxy import Proxy

pytest.importorskip("pyaileys", minversion="0.1.5")

from pyaileys import WhatsAppClient
from pyaileys.signal import SignalRepository

from wa_session_store.integrations.pyaileys import use_pyaileys_auth_state

from .fanout import device_jids, fan_out, make_bundles, open_sessions, wire

SID = "keys-bot"

Route = tuple[Proxy, str, dict[str, Any]]
"""A counting proxy, the DSN through it, and the store options that path needs."""


class Counted:
    """A real store, with its key calls counted (each is one round trip)."""

    COUNTED = frozenset({"get_keys", "set_keys", "load_categories", "clear_keys"})

    def __init__(self, store: BaseStore) -> None:
        self.store = store
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if name not in self.COUNTED:
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return await attr(*args, **kwargs)

        return call


class SlowCreds(Counted):
    """A real store whose creds saves take a while (a slow statement, a busy
    server): what a barrier must wait for, and a frame must not overtake."""

    def __getattr__(self, name: str) -> Any:
        attr = super().__getattr__(name)
        if name != "save_creds":
            return attr

        async def slow(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0.3)
            return await attr(*args, **kwargs)

        return slow


@pytest.fixture
def no_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pending writes wait for an explicit barrier (no flush on a timer)."""
    monkeypatch.setattr(AuthKeys, "FLUSH_DELAY", 3600.0)


def record(n: int) -> bytes:
    return n.to_bytes(4, "big") * 64


# -- the cache --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["write-through", "barrier"])
async def test_reads_come_from_memory_after_the_first(
    store: BaseStore, mode: str, no_timer: None
) -> None:
    await store.set_keys(SID, {"session": {"a": record(1), "b": record(2)}})
    counted = Counted(store)
    auth = await use_auth_state(counted, SID, key_writes=mode, backup_interval=None)  # type: ignore[arg-type]  # a wrapped real store
    assert await auth.keys.get("session", ["a", "b", "c"]) == {
        "a": record(1),
        "b": record(2),
        "c": None,
    }
    for _ in range(3):  # hits, absent keys included
        assert (await auth.keys.get("session", ["c", "b", "a"]))["b"] == record(2)
    assert counted.calls["get_keys"] == 1
    await auth.keys.set({"session": {"a": record(3)}, "pre-key": {7: {"public": b"k"}}})
    assert (await auth.keys.get("session", ["a"]))["a"] == record(3)
    pre_key = (await auth.keys.get("pre-key", ["7"]))["7"]
    pre_key["public"] = b"changed by the caller"  # a copy: the cache is not touched
    assert (await auth.keys.get("pre-key", [7]))["7"] == {"public": b"k"}
    assert counted.calls["get_keys"] == 1
    await auth.aclose()
    assert (await store.get_keys(SID, "session", ["a"]))["a"] == record(3)


async def test_bad_options_and_input_are_refused(store: BaseStore) -> None:
    with pytest.raises(InvalidInputError, match="'write-through' or 'barrier'"):
        await use_auth_state(store, SID, key_writes="later")  # type: ignore[arg-type]  # the point
    with pytest.raises(InvalidInputError, match="key_cache_bytes must be an int >= 0"):
        await use_auth_state(store, SID, key_cache_bytes=-1)
    with pytest.raises(InvalidTypeError, match="preload must be True, False or an iterable"):
        await use_auth_state(store, SID, preload="session")
    auth = await use_auth_state(store, SID, key_writes="barrier", backup_interval=None)
    with pytest.raises(InvalidTypeError, match="holds a set object"):
        await auth.keys.set({"session": {"ok": b"1"}, "pre-key": {"1": {1, 2}}})
    assert auth.keys.pending == 0  # nothing of the refused batch was kept
    with pytest.raises(InvalidInputError, match="given twice"):
        await auth.keys.set({"pre-key": {7: {"public": b"a"}, "7": {"public": b"b"}}})
    await auth.keys.set({"pre-key": {7: b"same", "7": b"same"}})  # the same value: one key
    assert auth.keys.pending == 1
    assert (await auth.keys.get("session", ["ok"]))["ok"] is None
    await auth.aclose()


async def test_the_cache_bound_holds_measured_with_tracemalloc(tmp_path: Path) -> None:
    budget = 1024 * 1024
    async with SQLiteStore(tmp_path / "big.db") as store:  # the rows stay on disk
        auth = await use_auth_state(store, SID, key_cache_bytes=budget, backup_interval=None)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for batch in range(40):  # 4,000 records of 1 KiB: 4x the budget
                await auth.keys.set(
                    {"session": {f"{batch}.{i}": os.urandom(1024) for i in range(100)}}
                )
                await auth.keys.get("session", [f"{batch}.{i}" for i in range(0, 100, 7)])
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert auth.keys.cached_bytes <= budget
        # The cache's values and its bookkeeping; well below the 4 MiB written.
        assert grown < budget * 1.5 + 256 * 1024, grown
        print(f"key cache: {grown / 1024:.0f} KiB traced for a {budget // 1024} KiB budget")
        assert (await auth.keys.get("session", ["0.0"]))["0.0"] is not None  # evicted, not lost
        await auth.aclose()


# -- preload ------------------------------------------------------------------------


async def test_preload_pages_through_a_large_session(
    store: BaseStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(AuthKeys, "PRELOAD_PAGE", 7)
    await store.set_keys(
        SID,
        {
            "session": {f"{i}.0": record(i) for i in range(50)},
            "sender-key": {f"group{i}": record(i) for i in range(5)},
            "pre-key": {i: {"public": record(i)} for i in range(10)},
        },
    )
    counted = Counted(store)
    auth = await use_auth_state(counted, SID, preload=True, backup_interval=None)  # type: ignore[arg-type]  # a wrapped real store
    assert counted.calls["load_categories"] == math.ceil(55 / 7)
    sessions = await auth.keys.get("session", [f"{i}.0" for i in range(50)])
    assert sessions == {f"{i}.0": record(i) for i in range(50)}
    assert (await auth.keys.get("sender-key", ["group3"]))["group3"] == record(3)
    assert counted.calls["get_keys"] == 0
    assert (await auth.keys.get("pre-key", [1]))["1"] == {"public": record(1)}  # not preloaded
    assert counted.calls["get_keys"] == 1
    await auth.aclose()


async def test_load_categories_pages_in_key_order(store: BaseStore) -> None:
    await store.set_keys(SID, {"b": {"2": 2, "1": 1}, "a": {"x": "x"}, "c": {"skipped": True}})
    first = await store.load_categories(SID, ["b", "a"], limit=2)
    assert first == [("a", "x", "x"), ("b", "1", 1)]
    rest = await store.load_categories(SID, ["a", "b"], after=first[-1][:2], limit=2)
    assert rest == [("b", "2", 2)]
    assert await store.load_categories("nobody", ["a"]) == []
    with pytest.raises(InvalidInputError, match="limit must be an int from 1"):
        await store.load_categories(SID, ["a"], limit=0)
    with pytest.raises(InvalidTypeError, match="categories must be an iterable"):
        await store.load_categories(SID, "a")


# -- the write barrier ---------------------------------------------------------------


async def test_barrier_writes_land_at_flush_in_one_set_keys(
    store: BaseStore, no_timer: None
) -> None:
    counted = Counted(store)
    auth = await use_auth_state(counted, SID, key_writes="barrier", backup_interval=None)  # type: ignore[arg-type]  # a wrapped real store
    for i in range(100):
        await auth.keys.set({"session": {f"{i}.0": record(i)}})
    await auth.keys.set({"session": {"5.0": record(500), "6.0": None}})  # last write wins
    assert auth.keys.pending == 100
    assert counted.calls["set_keys"] == 0
    assert (await store.get_keys(SID, "session", ["1.0"]))["1.0"] is None  # not stored yet
    assert (await auth.keys.get("session", ["5.0", "6.0"])) == {"5.0": record(500), "6.0": None}
    await auth.keys.flush()
    assert counted.calls["set_keys"] == 1
    assert auth.keys.pending == 0
    stored = await store.get_keys(SID, "session", [f"{i}.0" for i in range(100)])
    assert stored["5.0"] == record(500)
    assert stored["6.0"] is None
    assert stored["99.0"] == record(99)
    await auth.keys.flush()  # nothing pending: no round trip
    assert counted.calls["set_keys"] == 1
    await auth.aclose()


async def test_pending_writes_flush_on_their_own(
    store: BaseStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(AuthKeys, "FLUSH_DELAY", 0.01)
    monkeypatch.setattr(AuthKeys, "MAX_PENDING", 10)
    auth = await use_auth_state(store, SID, key_writes="barrier", backup_interval=None)

    async def stored(key_id: str) -> bool:
        for _ in range(1000):
            if (await store.get_keys(SID, "session", [key_id]))[key_id] is not None:
                return True
            await asyncio.sleep(0.01)
        return False

    await auth.keys.set({"session": {"timer": b"1"}})  # the delay passes
    assert await stored("timer")
    monkeypatch.setattr(AuthKeys, "FLUSH_DELAY", 3600.0)
    await auth.keys.set({"session": {f"size{i}": b"1" for i in range(10)}})  # the size limit
    assert await stored("size9")
    await auth.keys.set({"session": {"flush": b"1"}})
    await auth.flush()  # auth.flush()
    assert (await store.get_keys(SID, "session", ["flush"]))["flush"] == b"1"
    await auth.keys.set({"session": {"close": b"1"}})
    await auth.aclose()  # auth.aclose()
    assert (await store.get_keys(SID, "session", ["close"]))["close"] == b"1"
    await auth.keys.set({"session": {"after": b"1"}})  # closed: written through
    assert (await store.get_keys(SID, "session", ["after"]))["after"] == b"1"


async def test_the_flush_tunables_are_read_when_used(
    store: BaseStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer reads FLUSH_DELAY and MAX_PENDING from AuthKeys each time,
    so a change made after the auth state was built takes effect."""
    auth = await use_auth_state(store, SID, key_writes="barrier", backup_interval=None)
    monkeypatch.setattr(AuthKeys, "FLUSH_DELAY", 3600.0)
    await auth.keys.set({"session": {"held": b"1"}})
    await asyncio.sleep(0.3)  # six times the default delay
    assert auth.keys.pending == 1
    assert (await store.get_keys(SID, "session", ["held"]))["held"] is None
    monkeypatch.setattr(AuthKeys, "MAX_PENDING", 2)
    await auth.keys.set({"session": {"full": b"1"}})  # the size limit: a flush at once
    for _ in range(1000):
        if not auth.keys.pending:
            break
        await asyncio.sleep(0.01)
    assert (await store.get_keys(SID, "session", ["held", "full"])) == {
        "held": b"1",
        "full": b"1",
    }
    await auth.aclose()


async def test_the_sigterm_handler_stores_pending_key_writes(
    store: BaseStore, no_timer: None
) -> None:
    auth = await use_auth_state(store, SID, key_writes="barrier", backup_interval=None)
    await auth.keys.set({"session": {"a": b"1"}})
    stopped = install_shutdown_handler(signals=(signal.SIGUSR1,))
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.wait_for(stopped.wait(), 30)
    finally:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR1)
    assert auth.closed
    assert (await store.get_keys(SID, "session", ["a"]))["a"] == b"1"


async def test_barrier_waits_for_an_urgent_creds_save(store: BaseStore, no_timer: None) -> None:
    slow = SlowCreds(store)
    auth = await use_auth_state(slow, SID, key_writes="barrier", backup_interval=None)  # type: ignore[arg-type]  # a wrapped real store
    await auth.save_creds({"nextPreKeyId": 1, "name": "bot"})
    auth.creds_updated({"nextPreKeyId": 1, "name": "throttled"})  # not urgent: throttled
    await auth.keys.set({"pre-key": {str(i): {"public": b"p"} for i in range(1, 31)}})
    auth.creds_updated({"nextPreKeyId": 31, "name": "throttled"})  # urgent: counters moved
    await auth.barrier()
    assert (await store.load_creds(SID)) == {"nextPreKeyId": 31, "name": "throttled"}
    assert (await store.get_keys(SID, "pre-key", ["30"]))["30"] == {"public": b"p"}
    await auth.aclose()


async def test_the_pre_key_upload_leaves_after_its_keys_and_counters(
    store: BaseStore, no_timer: None
) -> None:
    """pyaileys' own upload: keys.set(pre-keys), counters moved (urgent creds),
    then the frame. What the database holds when the frame leaves is checked."""
    slow = SlowCreds(store)
    auth = await use_pyaileys_auth_state(slow, SID, backup_interval=None)  # type: ignore[arg-type]  # a wrapped real store
    client = WhatsAppClient(auth=auth.state)
    auth.attach(client)
    first = auth.creds.next_pre_key_id
    seen: list[tuple[Any, dict[str, Any]]] = []

    class Checking:
        async def send(self, frame: bytes) -> None:
            creds = await store.load_creds(SID)
            ids = [str(first + i) for i in range(5)]
            seen.append((creds, await store.get_keys(SID, "pre-key", ids)))

    wire(client)
    client.socket._transport = Checking()  # type: ignore[assignment]  # checks, then drops
    upload = asyncio.create_task(client.socket._upload_prekeys(5))  # waits for a reply
    for _ in range(1000):
        if seen:
            break
        await asyncio.sleep(0.01)
    upload.cancel()
    with pytest.raises(asyncio.CancelledError):
        await upload
    creds, pre_keys = seen[0]
    assert creds is not None
    assert creds["nextPreKeyId"] == first + 5
    assert all(value is not None for value in pre_keys.values())
    await auth.aclose()


# -- transactions ------------------------------------------------------------------


async def _abandoned(keys: AuthKeys, sessions: dict[str, bytes]) -> None:
    async with keys.transaction():
        await keys.set({"session": sessions})
        raise RuntimeError("abandon this block")


@pytest.mark.parametrize("mode", ["write-through", "barrier"])
async def test_transactions_commit_once_nest_and_roll_back(
    store: BaseStore, mode: str, no_timer: None
) -> None:
    counted = Counted(store)
    auth = await use_auth_state(counted, SID, key_writes=mode, backup_interval=None)  # type: ignore[arg-type]  # a wrapped real store
    await auth.keys.set({"session": {"kept": b"old"}})
    await auth.keys.flush()
    writes = counted.calls["set_keys"]
    async with auth.keys.transaction():
        await auth.keys.set({"session": {"a": b"1"}})
        async with auth.keys.transaction():  # joins the outer one
            await auth.keys.set({"session": {"b": b"2"}})
            assert (await auth.keys.get("session", ["a", "b"])) == {"a": b"1", "b": b"2"}
        with pytest.raises(RuntimeError, match="abandon"):
            await _abandoned(auth.keys, {"kept": b"discarded", "c": b"3"})
        assert (await auth.keys.get("session", ["kept", "c"])) == {"kept": b"old", "c": None}
        assert counted.calls["set_keys"] == writes  # nothing written yet
    assert counted.calls["set_keys"] == writes + 1  # one batch at the end
    stored = await store.get_keys(SID, "session", ["a", "b", "c", "kept"])
    assert stored == {"a": b"1", "b": b"2", "c": None, "kept": b"old"}

    with pytest.raises(RuntimeError, match="abandon"):
        await _abandoned(auth.keys, {"kept": b"rolled back"})
    assert (await auth.keys.get("session", ["kept"]))["kept"] == b"old"  # the cache too
    assert counted.calls["set_keys"] == writes + 1
    await auth.aclose()


@pytest.mark.parametrize("mode", ["write-through", "barrier"])
async def test_concurrent_tasks_see_their_writes_and_match_a_reference(
    store: BaseStore, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(AuthKeys, "FLUSH_DELAY", 0.002)
    monkeypatch.setattr(AuthKeys, "MAX_PENDING", 40)
    auth = await use_auth_state(
        store, SID, key_writes=mode, key_cache_bytes=20_000, backup_interval=None
    )
    reference: dict[str, bytes | None] = {}
    shared = [f"shared{i}" for i in range(20)]
    locks = {key: asyncio.Lock() for key in shared}  # as pyaileys locks a device's session

    async def client(n: int) -> None:
        rng = random.Random(n)
        own = [f"own{n}.{i}" for i in range(5)]
        for step in range(30):
            key = rng.choice(own)
            value = None if rng.random() < 0.1 else f"{n}.{step}".encode() * 20
            await auth.keys.set({"session": {key: value}})
            reference[key] = value
            assert (await auth.keys.get("session", [key]))[key] == value  # its own write
            key = rng.choice(shared)
            async with locks[key]:
                value = f"{n}.{step}".encode() * rng.randrange(1, 40)
                await auth.keys.set({"session": {key: value}})
                reference[key] = value
                assert (await auth.keys.get("session", [key]))[key] == value
            await auth.keys.get("session", rng.sample(shared, 5))

    await asyncio.gather(*(client(n) for n in range(50)))
    assert await auth.keys.get("session", list(reference)) == reference
    await auth.aclose()
    assert await store.get_keys(SID, "session", list(reference)) == reference


# -- leases and outages (PostgreSQL) ------------------------------------------------


@pytest.fixture(params=["postgres", pytest.param("pgbouncer", marks=pytest.mark.pgbouncer)])
def pg_store(request: pytest.FixtureRequest, pg_schema: str) -> Callable[..., PostgresStore]:
    if request.param == "pgbouncer":
        dsn = request.getfixturevalue("pgbouncer_dsn")
        return lambda **options: PostgresStore(
            dsn, schema=pg_schema, prepare_threshold=None, **options
        )
    dsn = request.getfixturevalue("pg_dsn")
    return lambda **options: PostgresStore(dsn, schema=pg_schema, **options)


async def test_a_lost_lease_empties_the_cache_and_drops_pending_writes(
    pg_store: Callable[..., PostgresStore], caplog: pytest.LogCaptureFixture, no_timer: None
) -> None:
    async with pg_store() as store:
        lease = await store.acquire_lease(SID, owner="old", ttl=30)
        auth = await use_auth_state(
            store, SID, lease=lease, key_writes="barrier", backup_interval=None
        )
        await auth.keys.set({"session": {"stored": b"1"}})
        await auth.keys.flush()
        await auth.keys.set({"session": {"a": b"2", "b": b"3"}})
        assert auth.keys.cached_bytes > 0
        await store.acquire_lease(SID, owner="old", ttl=30)  # a newer grant replaces it
        with (
            caplog.at_level(logging.ERROR, logger="wa_session_store"),
            pytest.raises(LeaseLostError),
        ):
            await auth.keys.flush()
        assert auth.lost
        assert "dropping 2 unsaved key writes" in caplog.text
        assert auth.keys.pending == 0
        assert auth.keys.cached_bytes == 0
        with pytest.raises(LeaseLostError):
            await auth.keys.set({"session": {"c": b"4"}})
        with pytest.raises(LeaseLostError):
            await auth.barrier()
        stored = await store.get_keys(SID, "session", ["stored", "a", "b", "c"])
        assert stored == {"stored": b"1", "a": None, "b": None, "c": None}
        await auth.aclose()


async def test_a_frame_is_refused_during_an_outage_and_its_writes_land_after(
    path: Route, pg_schema: str, no_timer: None
) -> None:
    proxy, dsn, options = path
    retry = RetryPolicy(attempts=2, timeout=1.0, backoff=0.1)
    async with PostgresStore(dsn, schema=pg_schema, retry=retry, **options) as store:
        auth = await use_pyaileys_auth_state(store, SID, backup_interval=None)
        client = WhatsAppClient(auth=auth.state)
        auth.attach(client)
        recorder = wire(client)
        await auth.keys.set({"session": {"peer.1": b"ratchet step"}})
        proxy.refuse()
        with pytest.raises(StoreUnavailableError):
            await client.socket.send_raw(b"the message that depends on it")
        assert recorder.frames == []  # not sent
        assert auth.keys.pending == 1  # kept
        proxy.restore()
        await client.socket.send_raw(b"the message that depends on it")
        assert recorder.frames == [b"the message that depends on it"]
        assert (await store.get_keys(SID, "session", ["peer.1"]))["peer.1"] == b"ratchet step"
        await auth.aclose()


# -- pyaileys: round trips of a fan-out, counted at the proxy --------------------------


@pytest.fixture(
    params=[
        pytest.param("postgres", marks=pytest.mark.proxy),
        pytest.param("pgbouncer", marks=[pytest.mark.proxy, pytest.mark.pgbouncer]),
    ]
)
def path(request: pytest.FixtureRequest, pg_dsn: str) -> Iterator[Route]:
    """A counting proxy in front of PostgreSQL, or of a PgBouncer in front of it:
    the proxy, the DSN through it, and the store options the path needs."""
    if request.param == "postgres":
        target, options = pg_dsn, {}
    else:
        target, options = request.getfixturevalue("pgbouncer_dsn"), {"prepare_threshold": None}
    params = conninfo_to_dict(target)
    counting = Proxy(str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432))
    counting.start()
    try:
        yield counting, counting.dsn(target), options
    finally:
        counting.stop()


@pytest.fixture
async def proxied(path: Route, pg_schema: str) -> AsyncIterator[PostgresStore]:
    _, dsn, options = path
    async with PostgresStore(dsn, schema=pg_schema, **options) as store:
        yield store


async def test_a_fan_out_send_costs_one_round_trip_however_many_devices(
    proxied: PostgresStore, path: Route, no_timer: None
) -> None:
    proxy = path[0]
    jids = device_jids(150)
    auth = await use_pyaileys_auth_state(proxied, SID, backup_interval=None)
    client = WhatsAppClient(auth=auth.state)
    auth.attach(client)
    recorder = wire(client)
    repo = SignalRepository(auth.state)
    await open_sessions(repo, make_bundles(jids))
    await client.socket.send_raw(b"sessions opened")

    trips = []
    for devices in (10, 150):
        before = proxy.round_trips
        await fan_out(repo, jids[:devices], "hello group")
        await client.socket.send_raw(b"message")  # waits for the barrier
        trips.append(proxy.round_trips - before)
    assert trips[0] <= 3
    assert trips[1] == trips[0]  # does not grow with the devices
    assert len(recorder.frames) == 3
    await auth.aclose()

    # After a restart, with preload: the first send costs what a warm one does.
    before = proxy.round_trips
    auth = await use_pyaileys_auth_state(proxied, SID, backup_interval=None)
    loading = proxy.round_trips - before
    client = WhatsAppClient(auth=auth.state)
    auth.attach(client)
    wire(client)
    repo = SignalRepository(auth.state)
    before = proxy.round_trips
    await fan_out(repo, jids, "after the restart")
    await client.socket.send_raw(b"message")
    first = proxy.round_trips - before
    assert first <= trips[1] + 2
    await auth.aclose()
    print(
        f"pyaileys fan-out over PostgreSQL: {trips[0]} round trip(s) for 10 devices, "
        f"{trips[1]} for 150; first send after a restart {first} (loading: {loading})"
    )


async def test_write_through_is_still_one_round_trip_per_set(
    proxied: PostgresStore, path: Route
) -> None:
    proxy = path[0]
    auth = await use_auth_state(proxied, SID, backup_interval=None)
    assert auth.keys.mode == "write-through"
    for _ in range(20):  # past psycopg's prepare threshold (an extra round trip, once)
        await auth.keys.set({"session": {"warm": b"0"}})
    before = proxy.round_trips
    for i in range(20):
        await auth.keys.set({"session": {f"{i}.0": record(i)}})
    assert proxy.round_trips - before == 20
    await auth.aclose()


# -- crash tests: a real child process, SIGKILLed ------------------------------------

CHILD = Path(__file__).with_name("barrier_child.py")
ROOT = CHILD.parents[1]


def _open_child_store(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> dict[str, str]:
    if backend == "sqlite":
        return {"url": f"sqlite:///{tmp_path / 'crash.db'}"}
    schema = request.getfixturevalue("pg_schema")
    if backend == "pgbouncer":
        return {"url": request.getfixturevalue("pgbouncer_dsn"), "schema": schema}
    return {"url": request.getfixturevalue("pg_dsn"), "schema": schema}


def _reopen(config: dict[str, str]) -> BaseStore:
    if config["url"].startswith("sqlite:"):
        return SQLiteStore(config["url"].removeprefix("sqlite:///"))
    return PostgresStore(config["url"], schema=config["schema"], prepare_threshold=None)


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend", ["sqlite", "postgres", pytest.param("pgbouncer", marks=pytest.mark.pgbouncer)]
)
@pytest.mark.parametrize("killed", ["before the barrier", "after the barrier"])
async def test_a_sigkilled_client_never_sent_what_it_did_not_store(
    backend: str, killed: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    config = _open_child_store(backend, request, tmp_path)
    frames = tmp_path / "frames.bin"
    config |= {"frames": str(frames), "devices": "30", "stop": killed}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHILD),
        json.dumps(config),
        stdout=subprocess.PIPE,
        cwd=ROOT,
        limit=2**24,
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 120)
        said = json.loads(line)
        assert said["event"] == "ready to die", said
    finally:
        child.send_signal(signal.SIGKILL)
        await asyncio.wait_for(child.wait(), 30)
    sent = frames.read_bytes().splitlines() if frames.exists() else []
    async with _reopen(config) as store:
        stored = await store.get_keys("crash", "session", said["changed"])
    before = said["before"]
    if killed == "before the barrier":
        # The ratchet steps of the fan-out are not stored, and no frame carried them.
        assert sent == [b"sessions opened"]
        assert stored == {key: before[key].encode("latin-1") for key in said["changed"]}
    else:
        assert sent == [b"sessions opened", b"the fan-out"]
        after = said["after"]
        assert stored == {key: after[key].encode("latin-1") for key in said["changed"]}
