"""The synchronous facade: the whole contract suite through it, then what only it has,
then the staleness check of its generated methods (``tools/sync_twins.py``).

The contract suite runs here a second time, unchanged, through the facade:
this module subclasses the kit's :class:`StoreContract` and overrides the
``make_store`` fixture (pytest resolves fixtures from the test's module first)
with one that wraps each store of the current
backend in a :class:`SyncStore` behind :class:`ThreadedSyncStore`, an async
adapter that calls the *blocking* methods in worker threads
(``asyncio.to_thread``); what a contract test reaches beyond the protocol (a
backend's private primitives) is the wrapped store's, also run on the facade's
loop thread. So each contract test drives the sync path end to
end — worker thread, blocking call, hop onto the facade's loop thread, the
async core — on memory, SQLite and PostgreSQL, and the suite picks up new
contract tests by itself. Neither the kit nor ``conftest.py`` knows about it.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import inspect
import logging
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from wa_session_store import (
    AuthStateStore,
    InvalidInputError,
    InvalidTypeError,
    Lease,
    LeaseLostError,
    LeaseUnavailableError,
    MemoryStore,
    PostgresStore,
    SessionExistsError,
    SessionStoreError,
    SessionWorker,
    SQLiteStore,
    StoreClosedError,
    StoreOperationError,
    restore_all,
    sync,
)
from wa_session_store.auth.state import AuthState
from wa_session_store.store.base import BaseStore
from wa_session_store.sync import (
    THREAD_NAME,
    BlockingCallInLoopError,
    SyncAuthKeys,
    SyncAuthState,
    SyncSessionWorker,
    SyncStore,
    open_sync_store,
)
from wa_session_store.testing import StoreContract

from .conftest import StoreFactory
from .support.creds import CREDS

# -- the contract suite, through the facade ------------------------------------


class TestContractThroughTheFacade(StoreContract):
    """The kit's every test, on this module's ``make_store``: stores behind the facade."""


def _in_worker_thread(name: str) -> Callable[..., Any]:
    async def call(self: ThreadedSyncStore, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self.sync, name), *args, **kwargs)

    call.__name__ = name
    return call


class ThreadedSyncStore:
    """An AuthStateStore whose every call is a blocking SyncStore call in a worker thread."""

    def __init__(self, sync: SyncStore) -> None:
        self.sync = sync

    open = _in_worker_thread("open")
    close = _in_worker_thread("close")
    load_creds = _in_worker_thread("load_creds")
    save_creds = _in_worker_thread("save_creds")
    get_keys = _in_worker_thread("get_keys")
    set_keys = _in_worker_thread("set_keys")
    clear_keys = _in_worker_thread("clear_keys")
    list_sessions = _in_worker_thread("list_sessions")
    delete_session = _in_worker_thread("delete_session")
    import_session = _in_worker_thread("import_session")
    export_session = _in_worker_thread("export_session")
    reencrypt = _in_worker_thread("reencrypt")

    def __getattr__(self, name: str) -> Any:
        # What a contract test reaches beyond the protocol (a backend's private
        # primitives, its version clock) is the wrapped store's, run on the
        # facade's loop thread like everything else.
        value = getattr(self.sync.store, name)
        if not inspect.iscoroutinefunction(value):
            return value

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(self.sync._run, name, lambda: value(*args, **kwargs))

        return call

    async def __aenter__(self) -> ThreadedSyncStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


@pytest.fixture
def make_store(make_store: StoreFactory) -> Iterator[Callable[..., Any]]:
    """The backend's stores, each behind a SyncStore driven from worker threads."""
    made: list[SyncStore] = []

    def make(**options: Any) -> ThreadedSyncStore:
        sync = SyncStore(make_store(**options))
        made.append(sync)
        return ThreadedSyncStore(sync)

    yield make
    for facade in made:  # a test that failed half-way leaves no loop thread behind
        facade.close()


@pytest.fixture
async def store(make_store: Callable[..., Any]) -> AsyncIterator[Any]:
    async with make_store() as opened:
        yield opened


# -- what only the facade has -----------------------------------------------------


def _loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sessions.db'}"


@pytest.fixture
def no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while (leaked := set(threading.enumerate()) - before) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not leaked, leaked


def test_every_protocol_method_has_a_blocking_twin_with_its_signature() -> None:
    names = [
        name
        for name, member in inspect.getmembers(AuthStateStore, inspect.iscoroutinefunction)
        if not name.startswith("_")
    ]
    assert len(names) >= 11
    for name in [*names, "reencrypt"]:
        twin = getattr(SyncStore, name)
        assert not inspect.iscoroutinefunction(twin), name
        assert inspect.signature(twin) == inspect.signature(getattr(BaseStore, name)), name
        if name not in ("open", "close"):  # the life cycle is the facade's own
            assert f"BaseStore.{name}" in (twin.__doc__ or ""), name
    for name in ("get", "set", "clear"):
        assert not inspect.iscoroutinefunction(getattr(SyncAuthKeys, name))
    assert "deadline" in inspect.signature(SyncAuthState.close).parameters
    assert list(inspect.signature(sync.use_sync_auth_state).parameters)[:3] == [
        "store",
        "session_id",
        "throttle",
    ]


def test_open_sync_store_round_trip(sqlite_url: str, no_leaked_threads: None) -> None:
    with open_sync_store(sqlite_url) as store:
        assert store.is_open
        assert len(_loop_threads()) == 1
        assert store.load_creds("s1") is None
        store.save_creds("s1", CREDS)
        store.set_keys("s1", {"pre-key": {"1": b"k", "2": {"x": 1}}})
        assert store.load_creds("s1") == CREDS
        assert store.get_keys("s1", "pre-key", ["1", 2, "3"]) == {
            "1": b"k",
            "2": {"x": 1},
            "3": None,
        }
        assert [s.session_id for s in store.list_sessions()] == ["s1"]
        assert "SQLiteStore" in repr(store)
    assert not store.is_open
    assert _loop_threads() == []
    with open_sync_store(sqlite_url) as again:  # persisted, and the loop thread restarts
        assert again.load_creds("s1") == CREDS


def test_closing_stops_the_loop_thread_only_after_the_last_facade(
    sqlite_url: str, no_leaked_threads: None
) -> None:
    first = open_sync_store(sqlite_url)
    second = SyncStore(MemoryStore())
    first.open()
    second.open()
    assert len(_loop_threads()) == 1  # one loop thread serves every open facade
    first.close()
    second.save_creds("s1", CREDS)  # still served
    assert len(_loop_threads()) == 1
    second.close()
    assert _loop_threads() == []
    first.close()  # closing twice does nothing
    # SQLiteStore's own I/O thread is gone too (checked by no_leaked_threads).


def test_exceptions_reach_the_caller_with_their_types(sqlite_url: str) -> None:
    store = open_sync_store(sqlite_url)
    with pytest.raises(StoreClosedError, match="not open"):
        store.load_creds("s1")  # not opened: the core says so, not the facade
    with store:
        with pytest.raises(InvalidTypeError) as caught:
            store.set_keys("s1", {"pre-key": {"1": {1, 2}}})
        assert isinstance(caught.value, TypeError)  # InvalidTypeError is a TypeError too
        with pytest.raises(InvalidInputError, match="session"):
            store.load_creds("")
        store.import_session("s1", CREDS, {})
        with pytest.raises(SessionExistsError, match="overwrite=True"):
            store.import_session("s1", CREDS, {})
        with pytest.raises(InvalidInputError, match="cipher"):
            store.reencrypt()
    with pytest.raises(StoreClosedError):
        store.save_creds("s1", CREDS)
    with pytest.raises(InvalidTypeError, match="AuthStateStore"):
        SyncStore("sqlite:///x.db")  # type: ignore[arg-type]


def test_driver_errors_keep_their_cause(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    with SyncStore(SQLiteStore(path)) as store:
        store.save_creds("s1", CREDS)
        import sqlite3

        with sqlite3.connect(path) as conn:
            conn.execute("DROP TABLE wa_keys")
        with pytest.raises(StoreOperationError) as caught:
            store.get_keys("s1", "pre-key", ["1"])
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)


async def test_a_blocking_call_in_a_running_loop_is_refused(sqlite_url: str) -> None:
    store = open_sync_store(sqlite_url)
    await asyncio.to_thread(store.open)
    try:
        with pytest.raises(BlockingCallInLoopError, match=r"load_creds\(\).*to_thread") as caught:
            store.load_creds("s1")
        assert isinstance(caught.value, RuntimeError)
        assert isinstance(caught.value, SessionStoreError)
        with pytest.raises(BlockingCallInLoopError):
            store.close()
        assert await asyncio.to_thread(store.load_creds, "s1") is None  # the way out
    finally:
        await asyncio.to_thread(store.close)


def test_a_hook_calling_back_into_the_facade_is_refused_not_deadlocked(tmp_path: Path) -> None:
    from wa_session_store import AESGCMCipher

    pytest.importorskip("cryptography")
    errors: list[BaseException] = []
    facades: list[SyncStore] = []

    def progress(_: object) -> None:  # runs on the loop thread
        try:
            facades[0].list_sessions()
        except BaseException as exc:
            errors.append(exc)

    cipher = AESGCMCipher({"k1": AESGCMCipher.generate_key()}, active="k1")
    url = f"sqlite:///{tmp_path / 's.db'}"
    with open_sync_store(url) as plain:
        plain.save_creds("s1", CREDS)
    with open_sync_store(url, cipher=cipher, allow_plaintext=True) as facade:
        facades.append(facade)
        counts = facade.reencrypt(progress=progress)
    assert counts.rewritten == 1
    assert errors
    assert all(type(e) is BlockingCallInLoopError for e in errors)


def test_calls_from_many_threads_at_once(sqlite_url: str) -> None:
    with open_sync_store(sqlite_url) as store:

        def writer(n: int) -> None:
            for i in range(20):
                store.set_keys("shared", {"pre-key": {f"{n}-{i}": i}})

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ids = [f"{n}-{i}" for n in range(8) for i in range(20)]
        assert store.get_keys("shared", "pre-key", ids) == {
            f"{n}-{i}": i for n in range(8) for i in range(20)
        }


# -- the sync auth state ------------------------------------------------------------


def test_sync_auth_state_round_trip(sqlite_url: str, no_leaked_threads: None) -> None:
    with open_sync_store(sqlite_url) as store:
        with sync.use_sync_auth_state(store, "bot", backup_interval=None) as auth:
            assert auth.creds is None
            assert isinstance(auth.keys, SyncAuthKeys)
            auth.save_creds(dict(CREDS))
            assert auth.creds == CREDS
            auth.keys.set({"pre-key": {"1": b"k"}, "session": {"a": b"s"}})
            assert auth.keys.get("pre-key", ["1", "2"]) == {"1": b"k", "2": None}
            auth.keys.clear()
            assert auth.keys.get("session", ["a"]) == {"a": None}
        assert auth.closed
        assert store.load_creds("bot") == CREDS
        with pytest.raises(StoreClosedError):
            auth.save_creds()
        again = sync.use_sync_auth_state(store, "bot")
        assert again.creds == CREDS


def test_barrier_mode_and_transactions_through_the_facade(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, no_leaked_threads: None
) -> None:
    from wa_session_store import AuthKeys

    monkeypatch.setattr(AuthKeys, "FLUSH_DELAY", 3600.0)  # only barriers store
    with open_sync_store(sqlite_url) as store:
        store.set_keys("bot", {"session": {"old": b"0"}})
        auth = sync.use_sync_auth_state(
            store, "bot", key_writes="barrier", preload=True, backup_interval=None
        )
        auth.keys.set({"session": {"a": b"1"}})
        assert auth.keys.get("session", ["a", "old"]) == {"a": b"1", "old": b"0"}
        assert store.get_keys("bot", "session", ["a"]) == {"a": None}  # pending
        auth.keys.flush()
        assert store.get_keys("bot", "session", ["a"]) == {"a": b"1"}

        with auth.keys.transaction():
            auth.keys.set({"session": {"b": b"2"}})
            with auth.keys.transaction():  # joins the outer one
                auth.keys.set({"session": {"c": b"3"}})
            assert auth.keys.get("session", ["b", "c"]) == {"b": b"2", "c": b"3"}
            assert store.get_keys("bot", "session", ["b"]) == {"b": None}
        assert store.get_keys("bot", "session", ["b", "c"]) == {"b": b"2", "c": b"3"}

        def abandoned() -> None:
            with auth.keys.transaction():
                auth.keys.set({"session": {"a": b"discarded"}})
                raise RuntimeError("abandon")

        with pytest.raises(RuntimeError, match="abandon"):
            abandoned()
        assert auth.keys.get("session", ["a"]) == {"a": b"1"}
        auth.keys.set({"session": {"d": b"4"}})
        auth.creds_updated({"nextPreKeyId": 2})  # urgent: the barrier waits for it
        auth.barrier()
        assert store.get_keys("bot", "session", ["d"]) == {"d": b"4"}
        auth.close()
        assert store.load_creds("bot") == {"nextPreKeyId": 2}


def test_creds_updated_from_foreign_threads_is_saved_on_the_loop(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen_threads: set[str] = set()
    original = AuthState.creds_updated

    def spy(self: AuthState, creds: Any = None) -> None:
        seen_threads.add(threading.current_thread().name)
        original(self, creds)

    monkeypatch.setattr(AuthState, "creds_updated", spy)
    with open_sync_store(sqlite_url) as store:
        auth = sync.use_sync_auth_state(store, "bot", throttle=0.05, backup_interval=None)
        auth.save_creds(dict(CREDS))
        counter = 0
        lock = threading.Lock()

        def client_thread() -> None:
            nonlocal counter
            for _ in range(200):
                with lock:
                    counter += 1
                    auth.creds_updated({**CREDS, "accountSyncCounter": counter})

        threads = [threading.Thread(target=client_thread) for _ in range(4)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        hooked = time.perf_counter() - started
        auth.flush()
        assert not auth.pending
        assert store.load_creds("bot") == {**CREDS, "accountSyncCounter": 800}
        assert auth.state.throttler.runs < 100  # throttled, not one save per update
        assert hooked < 2.0  # 800 non-blocking calls
    assert seen_threads == {THREAD_NAME}


def test_creds_updated_in_place_and_never_raising(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with open_sync_store(sqlite_url) as store:
        auth = sync.use_sync_auth_state(store, "bot", throttle=0, backup_interval=None)
        auth.creds_updated()  # no creds yet: logged, not raised
        auth.save_creds(dict(CREDS))
        assert auth.creds is not None
        auth.creds["accountSyncCounter"] = 5  # changed in place by the client
        auth.creds_updated()
        auth.creds["accountSyncCounter"] = 6  # the loop saves its own copy, taken above
        auth.flush()
        assert store.load_creds("bot") == {**CREDS, "accountSyncCounter": 5}
        with caplog.at_level(logging.ERROR, logger="wa_session_store"):
            auth.creds_updated(42)  # type: ignore[arg-type]  # refused on the loop, logged
            auth.flush()
        assert any("must be a mapping" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="wa_session_store"):
        auth.creds_updated({**CREDS, "accountSyncCounter": 7})  # the store is closed
    assert any("not saved" in r.getMessage() for r in caplog.records)


def test_save_creds_refused_puts_the_previous_document_back(sqlite_url: str) -> None:
    with open_sync_store(sqlite_url) as store:
        auth = sync.use_sync_auth_state(store, "bot", backup_interval=None)
        auth.save_creds(dict(CREDS))
        with pytest.raises(InvalidTypeError):
            auth.save_creds({"bad": {1, 2}})
        assert auth.creds == CREDS
        assert store.load_creds("bot") == CREDS
        with pytest.raises(InvalidTypeError):
            sync.use_sync_auth_state(store.store, "bot")  # type: ignore[arg-type]


def test_closing_the_store_saves_pending_creds_of_its_auth_states(sqlite_url: str) -> None:
    with open_sync_store(sqlite_url) as store:
        auth = sync.use_sync_auth_state(
            store, "bot", throttle=60, backup_interval=None, urgent=None
        )
        auth.save_creds(dict(CREDS))
        auth.creds_updated({**CREDS, "accountSyncCounter": 99})  # held back by the throttle
        deadline = time.monotonic() + 5
        while not auth.pending and time.monotonic() < deadline:
            time.sleep(0.005)
        assert auth.pending
    assert auth.closed
    with open_sync_store(sqlite_url) as store:
        assert (store.load_creds("bot") or {})["accountSyncCounter"] == 99


def test_an_unclosed_auth_state_does_not_outlive_the_loop(
    sqlite_url: str, no_leaked_threads: None
) -> None:
    store = open_sync_store(sqlite_url)
    store.open()
    sync.use_sync_auth_state(store, "bot", backup_interval=0.05, initial_delay=0.01)
    time.sleep(0.1)
    store.close()
    gc.collect()
    assert _loop_threads() == []


def test_a_store_left_open_is_closed_at_exit_saving_pending_creds(sqlite_url: str) -> None:
    script = f"""
from wa_session_store.sync import open_sync_store, use_sync_auth_state

store = open_sync_store({sqlite_url!r})
store.open()

def bot():
    auth = use_sync_auth_state(store, "bot", throttle=60, backup_interval=None, urgent=None)
    auth.save_creds({{"n": 0}})
    auth.creds_updated({{"n": 1}})  # held back by the throttle

bot()  # the facade of the auth state is gone, its pending save is not; no close()
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    with open_sync_store(sqlite_url) as store:
        assert store.load_creds("bot") == {"n": 1}


async def test_the_contract_suite_here_runs_through_the_facade(store: Any) -> None:
    assert isinstance(store, ThreadedSyncStore)
    assert store.sync.is_open
    assert len(_loop_threads()) == 1


# -- leases, bulk restore and the session worker (PostgreSQL) --------------------------


@pytest.fixture(params=["direct", pytest.param("pgbouncer", marks=pytest.mark.pgbouncer)])
def pg_sync(request: pytest.FixtureRequest, pg_schema: str) -> Iterator[SyncStore]:
    """An open SyncStore over a PostgresStore, directly or through PgBouncer."""
    dsn, options = request.getfixturevalue("pg_dsn"), {}
    if request.param == "pgbouncer":
        dsn, options = request.getfixturevalue("pgbouncer_dsn"), {"prepare_threshold": None}
    with SyncStore(PostgresStore(dsn, schema=pg_schema, **options)) as store:
        yield store


def test_every_lease_primitive_has_a_blocking_twin_with_its_signature() -> None:
    names = ["acquire_lease", "claim_sessions", "lease_holder", "list_leases"]
    for name in [*names, "renew_leases", "release_leases"]:
        twin = getattr(SyncStore, name)
        assert not inspect.iscoroutinefunction(twin), name
        assert inspect.signature(twin) == inspect.signature(getattr(PostgresStore, name)), name
        assert f"PostgresStore.{name}" in (twin.__doc__ or ""), name
    restore = inspect.signature(sync.restore_all_sync).parameters
    assert list(restore) == list(inspect.signature(restore_all).parameters)
    worker = inspect.signature(SyncSessionWorker).parameters
    assert list(worker) == list(inspect.signature(SessionWorker).parameters)


def test_leases_need_postgres(sqlite_url: str) -> None:
    with open_sync_store(sqlite_url) as store:
        with pytest.raises(InvalidTypeError, match="PostgresStore"):
            store.acquire_lease("s1", owner="a")
        with pytest.raises(InvalidTypeError, match="PostgresStore"):
            SyncSessionWorker(store, "w", lambda lease, stopping: None)


def test_a_lease_fences_a_sync_auth_state(pg_sync: SyncStore, no_leaked_threads: None) -> None:
    store = pg_sync
    lease = store.acquire_lease("s1", owner="a", ttl=2.0)
    assert isinstance(lease, Lease)
    with pytest.raises(LeaseUnavailableError, match="'a'"):
        store.acquire_lease("s1", owner="b")  # wait=0: refused at once
    assert store.lease_holder("s1") == ("a", lease.token, lease.expires_at)
    store.keep_alive(lease, every=0.2)
    auth = sync.use_sync_auth_state(store, "s1", lease=lease, backup_interval=None)
    auth.save_creds(dict(CREDS))
    time.sleep(2.5)  # past the ttl: renewed by the keep-alive on the loop thread
    assert not lease.lost
    with pytest.raises(LeaseUnavailableError):
        store.acquire_lease("s1", owner="b")
    store.release_lease(lease)
    newer = store.acquire_lease("s1", owner="b")
    assert newer.token > lease.token
    assert auth.state.lost  # given up: this process no longer owns the session
    with pytest.raises(LeaseLostError):
        store.save_creds("s1", {"stale": True}, fence=lease)  # fenced out
    auth.save_creds({**CREDS, "accountSyncCounter": 1})  # dropped, as by the async core
    assert store.load_creds("s1") == CREDS
    assert [(info.owner, info.expired) for info in store.list_leases()] == [("b", False)]
    assert store.renew_leases([newer]) == []
    assert store.release_leases([newer]) == 1
    auth.close()


def test_claim_sessions_and_restore_all_through_the_facade(pg_sync: SyncStore) -> None:
    store = pg_sync
    for n in range(3):
        store.save_creds(f"s{n}", {**CREDS, "accountSyncCounter": n})
    first = store.claim_sessions("w1", limit=2, ttl=5.0)
    second = store.claim_sessions("w2", limit=5, ttl=5.0)
    assert len(first) == 2
    assert len(second) == 1
    assert {lease.session_id for lease in first + second} == {"s0", "s1", "s2"}
    assert store.release_leases(first + second) == 3

    restored = sync.restore_all_sync(store, throttle=60, backup_interval=None, urgent=None)
    assert isinstance(restored, sync.SyncRestoreResult)
    assert restored.failed == {}
    assert sorted(restored.states) == ["s0", "s1", "s2"]
    auth = restored.states["s2"]
    assert isinstance(auth, SyncAuthState)
    assert auth.creds == {**CREDS, "accountSyncCounter": 2}
    auth.creds_updated({**CREDS, "accountSyncCounter": 20})  # held back by the throttle
    store.close()  # closes the restored auth states first, saving what is pending
    assert auth.closed
    store.open()
    assert store.load_creds("s2") == {**CREDS, "accountSyncCounter": 20}


def test_a_sync_session_worker_runs_each_session_in_a_thread(
    pg_sync: SyncStore, no_leaked_threads: None
) -> None:
    store = pg_sync
    for n in range(3):
        store.save_creds(f"s{n}", dict(CREDS))
    served: dict[str, str] = {}
    lock = threading.Lock()

    def handler(lease: Lease, stopping: threading.Event) -> None:
        with sync.use_sync_auth_state(
            store, lease.session_id, lease=lease, backup_interval=None
        ) as auth:
            auth.save_creds({**CREDS, "accountSyncCounter": lease.token})
            with lock:
                served[lease.session_id] = threading.current_thread().name
            stopping.wait(30)

    worker = SyncSessionWorker(store, "w1", handler, ttl=3.0, claim_every=0.05)
    runner = threading.Thread(target=worker.run)
    runner.start()
    deadline = time.monotonic() + 10
    while len(served) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sorted(served) == ["s0", "s1", "s2"]
    assert worker.sessions == ["s0", "s1", "s2"]
    assert len(set(served.values())) == 3  # a thread each, none of them the loop thread
    assert THREAD_NAME not in served.values()
    started = time.monotonic()
    worker.stop()
    runner.join(10)
    assert not runner.is_alive()
    assert time.monotonic() - started < 5  # the handlers saw `stopping` and returned
    assert worker.sessions == []
    assert all(info.expired for info in store.list_leases())  # released in one statement
    tokens = {sid: (store.load_creds(sid) or {})["accountSyncCounter"] for sid in served}
    assert all(token >= 1 for token in tokens.values())


# -- the generated methods ----------------------------------------------------------
#
# The thin blocking methods of wa_session_store/sync/ are generated from the
# coroutines they mirror by tools/sync_twins.py (psycopg-style); CI runs its
# --check in the lint step, and this test runs it too, so a stale twin fails
# the suite. Neither skips: without ruff, the tool exits with status 2.

SYNC_TWINS = Path(__file__).resolve().parents[1] / "tools" / "sync_twins.py"


def test_generated_methods_are_current() -> None:
    done = subprocess.run(
        [sys.executable, str(SYNC_TWINS), "--check"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_a_region_of_an_unknown_source_names_its_module() -> None:
    """Any module of sync/ may hold regions; a bad one is reported with its
    module's name, even after a good region of the same module."""
    spec = importlib.util.spec_from_file_location("sync_twins", SYNC_TWINS)
    assert spec is not None
    assert spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    keys = SYNC_TWINS.parents[1] / "src" / "wa_session_store" / "sync" / "keys.py"
    text = keys.read_text() + "\n# -- generated from Nowhere\n# -- end of generated code\n"
    with pytest.raises(tool.ToolError, match=r"keys\.py: unknown source 'Nowhere'"):
        tool.generate(text, keys)


if __name__ == "__main__":  # the former entry point: `python -m tests.test_sync --write`
    sys.exit(subprocess.call([sys.executable, str(SYNC_TWINS), *sys.argv[1:]]))
