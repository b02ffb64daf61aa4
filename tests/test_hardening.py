"""Issue 13, the API side: what an adversarial review found, class by class.

Each test names its class. CLI behaviour is in test_cli_hardening.py, Baileys
folders in test_baileys_hardening.py.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import stat
import time
from pathlib import Path
from typing import Any

import psycopg_pool
import pytest

from wa_session_store import (
    AESGCMCipher,
    InvalidInputError,
    InvalidTypeError,
    MemoryStore,
    PostgresStore,
    RetryPolicy,
    SessionStoreError,
    SessionWorker,
    SQLiteStore,
    StoreClosedError,
    StoreConfigurationError,
    StoreUnavailableError,
    open_store,
    restore_all,
    use_auth_state,
)
from wa_session_store.backends.open import redact_text, redact_url
from wa_session_store.store.base import BaseStore
from wa_session_store.store.ids import MAX_KEY_ID_BYTES, MAX_SESSION_ID_LENGTH

from .conftest import StoreFactory
from .proxy import Proxy

KEY = os.urandom(32)
KEY_B64 = base64.b64encode(KEY).decode()
HUGE = 10**5000


# -- class 1: secrets in messages ---------------------------------------------


@pytest.mark.parametrize(
    ("keys", "active"),
    [
        ({KEY_B64: KEY}, KEY_B64),  # a key pasted as the id
        ({"k1": KEY}, KEY_B64),  # a key pasted as the active id
        ({"k1": KEY}, KEY.hex()),
        ({KEY.hex() + "!": KEY}, "k1"),
        ({"k1": KEY, KEY_B64[:40]: b"short"}, "k1"),
    ],
)
def test_cipher_messages_never_show_a_refused_id_or_active(
    keys: dict[str, bytes], active: str
) -> None:
    with pytest.raises(InvalidInputError) as info:
        AESGCMCipher(keys, active)
    text = str(info.value)
    for secret in (KEY_B64, KEY_B64[:40], KEY.hex()):
        assert secret not in text


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://bot:hunter2-pw@db/x?sslpassword=ssl-secret-1",
        "postgresql://bot@db/x?sslmode=require&sslpassword=ssl-secret-1&password=hunter2-pw",
        "postgres://bot:hunter2-pw@db?sslpassword=ssl-secret-1",
        "host=db user=bot password=hunter2-pw sslpassword='ssl-secret-1' dbname=x",
        "postgresql://bot:hunter2@pw@db/x",
    ],
)
def test_every_secret_parameter_is_redacted(dsn: str) -> None:
    for text in (redact_url(dsn), redact_text(f"failed on {dsn} and more")):
        assert "hunter2" not in text
        assert "ssl-secret-1" not in text
        assert "pw@db" not in text
        assert "***" in text


async def test_an_unescaped_at_in_the_password_is_refused_before_any_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(InvalidInputError, match="%40") as info:
        PostgresStore("postgresql://bot:pa@ss-fragment@127.0.0.1:5432/test")
    everything = str(info.value) + "".join(r.getMessage() for r in caplog.records)
    assert "ss-fragment" not in everything


# -- class 2: permanent failures look permanent ---------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("change", "reason", "fix"),
    [
        (lambda d: d.replace("postgres@", "no_such_role_13@"), "does not exist", "role"),
        (lambda d: d.rsplit("/", 1)[0] + "/no_such_db_13", "does not exist", "database"),
        (lambda d: d.replace(":5432", ":notaport"), "invalid integer value", "fix"),
        (lambda d: d.replace(":5432", ":99999"), "invalid port", "1 to 65535"),
        (lambda d: d + ("&" if "?" in d else "?") + "sslmode=bogus", "sslmode", "sslmode"),
        (lambda d: d.replace("127.0.0.1", "no-such-host-13.invalid"), "resolve", "host name"),
    ],
)
async def test_a_permanent_refusal_fails_the_first_attempt_with_the_reason(
    pg_dsn: str, change: Any, reason: str, fix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    dsn = change(pg_dsn)
    store = PostgresStore(dsn, retry=RetryPolicy(attempts=3, timeout=5, backoff=2))
    started = time.monotonic()
    with pytest.raises(StoreConfigurationError) as info:
        await store.open()
    took = time.monotonic() - started
    message = str(info.value)
    assert took < 4.0, took  # the first attempt, no backoff (was 36 s)
    assert "\n" not in message
    assert reason in message, message
    assert fix in message, message
    assert not store.is_open
    pool_records = [r for r in caplog.records if r.name.startswith("psycopg")]
    assert pool_records == [], [r.getMessage() for r in pool_records]
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert retries == []
    print(f"\npermanent refusal ({reason}): StoreConfigurationError after {took * 1000:.0f} ms")


@pytest.mark.postgres
async def test_a_refused_connection_is_still_retried(pg_dsn: str, proxy: Proxy) -> None:
    proxy.refuse()
    retries: list[int] = []
    store = PostgresStore(
        proxy.dsn(pg_dsn),
        retry=RetryPolicy(attempts=3, timeout=2, backoff=0.3),
        on_retry=lambda d: retries.append(d.attempt),
    )
    with pytest.raises(StoreUnavailableError):
        await store.open()
    assert retries == [1, 2]
    proxy.restore()
    async with store:  # transient: the same store opens once the path is back
        assert await store.load_creds("nobody") is None


# -- class 4: only the library's errors escape ------------------------------------


def _constructors() -> list[tuple[str, Any]]:
    calls: list[tuple[str, Any]] = []
    for value in (HUGE, -HUGE, float("nan"), 2**100_000):
        for name in ("attempts", "timeout", "backoff", "max_backoff", "jitter", "deadline"):
            calls.append((f"RetryPolicy({name})", lambda n=name, v=value: RetryPolicy(**{n: v})))
        calls += [
            ("MemoryStore(max_value_size)", lambda v=value: MemoryStore(max_value_size=v)),
            ("SQLiteStore(busy_timeout)", lambda v=value: SQLiteStore("x.db", busy_timeout=v)),
            ("SQLiteStore(path)", lambda v=value: SQLiteStore(v)),
            ("PostgresStore(min_size)", lambda v=value: PostgresStore("host=h", min_size=v)),
            ("PostgresStore(max_size)", lambda v=value: PostgresStore("host=h", max_size=v)),
            (
                "PostgresStore(prepare_threshold)",
                lambda v=value: PostgresStore("host=h", prepare_threshold=v),
            ),
            ("AESGCMCipher(id)", lambda v=value: AESGCMCipher({v: KEY}, "k")),
            (
                "SessionWorker(ttl)",
                lambda v=value: SessionWorker(PostgresStore("host=h"), "w", _handler, ttl=v),
            ),
            (
                "SessionWorker(capacity)",
                lambda v=-value if value > 0 else value: SessionWorker(
                    PostgresStore("host=h"), "w", _handler, capacity=v
                ),
            ),
            ("AESGCMCipher(active)", lambda v=value: AESGCMCipher({"k": KEY}, v)),
        ]
    calls += [
        ("SQLiteStore(NUL)", lambda: SQLiteStore("a\x00b.db")),
        ("open_store(sqlite NUL)", lambda: open_store("sqlite:///a%00b.db")),
        ("PostgresStore(NUL)", lambda: PostgresStore("host=a\x00b")),
    ]
    return calls


@pytest.mark.parametrize(("name", "call"), _constructors(), ids=lambda x: str(x)[:40])
def test_constructors_raise_only_library_errors(name: str, call: Any) -> None:
    with pytest.raises(SessionStoreError) as info:
        call()
    assert len(str(info.value)) < 400, name


async def _handler(lease: Any) -> None:
    pass


@pytest.mark.parametrize("value", [HUGE, -HUGE], ids=["10**5000", "-10**5000"])
async def test_auth_state_arguments_raise_only_library_errors(value: int) -> None:
    async with MemoryStore() as store:
        for call in (
            lambda: use_auth_state(store, "s", throttle=value),
            lambda: use_auth_state(store, "s", backup_interval=value),
            lambda: restore_all(store, concurrency=-value if value > 0 else value),
            lambda: use_auth_state(store, "s", key_cache_bytes=-value if value > 0 else value),
            lambda: store.load_categories("s", ["session"], limit=value),
        ):
            with pytest.raises(SessionStoreError):
                await call()


async def test_store_calls_raise_only_library_errors(make_store: StoreFactory) -> None:
    async with make_store() as store:
        calls = [
            lambda: store.get_keys("s", "pre-key", [HUGE]),
            lambda: store.set_keys("s", {"pre-key": {HUGE: {"a": 1}}}),
            lambda: store.set_keys("s", {"pre-key": {-HUGE: {"a": 1}}}),
            lambda: store.save_creds("s", {"n": 2**100_000}),
            lambda: store.reencrypt(batch_size=HUGE),
        ]
        for call in calls:
            with pytest.raises(SessionStoreError):
                await call()
        assert await store.list_sessions() == []


async def test_a_closed_store_opens_again(make_store: StoreFactory) -> None:
    store = make_store()
    for round_ in range(3):
        await store.open()
        await store.save_creds("s", {"round": round_})
        assert await store.load_creds("s") == {"round": round_}
        await store.close()
    assert not store.is_open


@pytest.mark.postgres
async def test_a_closed_shared_pool_is_a_library_error(pg_dsn: str, pg_schema: str) -> None:
    pool: psycopg_pool.AsyncConnectionPool[Any] = psycopg_pool.AsyncConnectionPool(
        pg_dsn, open=False, min_size=1
    )
    await pool.open()
    await pool.close()
    with pytest.raises(StoreClosedError, match="shared pool"):
        await PostgresStore(pool=pool, schema=pg_schema).open()


async def test_concurrent_opens_share_one_open(make_store: StoreFactory, backend: str) -> None:
    store = make_store(retry=RetryPolicy(attempts=1, timeout=10))
    calls = 0
    original = store._open

    async def counting() -> None:
        nonlocal calls
        calls += 1
        await original()

    store._open = counting  # type: ignore[method-assign]  # counts the real open
    await asyncio.gather(*(store.open() for _ in range(5)))
    try:
        assert calls == 1
        assert store.is_open
        if isinstance(store, PostgresStore):
            assert store.pool.get_stats().get("pool_size", 0) <= store.pool.max_size
    finally:
        await store.close()


@pytest.mark.postgres
async def test_close_during_an_open_leaves_the_store_closed(pg_dsn: str, proxy: Proxy) -> None:
    proxy.blackhole()  # the open hangs in its first attempt
    store = PostgresStore(proxy.dsn(pg_dsn), retry=RetryPolicy(attempts=3, timeout=5))
    opening = asyncio.ensure_future(store.open())
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await store.close()
    took = time.monotonic() - started
    with pytest.raises(StoreClosedError, match="closed while it was opening"):
        await opening
    assert not store.is_open
    assert took < 2.0, took
    proxy.restore()
    await asyncio.sleep(0.2)
    assert not store.is_open
    assert store.pool.closed  # nothing left connecting in the background


@pytest.mark.postgres
async def test_a_cancelled_open_leaves_nothing_open(pg_dsn: str, proxy: Proxy) -> None:
    proxy.blackhole()
    store = PostgresStore(proxy.dsn(pg_dsn), retry=RetryPolicy(attempts=3, timeout=5))
    task = asyncio.ensure_future(store.open())
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not store.is_open
    assert store.pool.closed
    proxy.restore()
    await store.open()  # and it can still be opened
    assert await store.load_creds("s") is None
    await store.close()


# -- class 5: no silent loss or mangling ------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        {None: "x", "null": "y"},
        {1: "x", "1": "y"},
        {"outer": [{True: "x"}]},
        {"f": {1.5: "x"}},
    ],
    ids=["None", "int", "bool in a list", "float"],
)
async def test_non_str_dict_keys_are_refused(store: BaseStore, value: dict[Any, Any]) -> None:
    with pytest.raises(InvalidTypeError, match="dict key of type"):
        await store.save_creds("s", value)
    with pytest.raises(InvalidTypeError, match="dict key of type"):
        await store.set_keys("s", {"session": {"a": value}})
    assert await store.list_sessions() == []


async def test_a_huge_int_is_named_as_such(store: BaseStore) -> None:
    with pytest.raises(InvalidInputError, match="int of more than") as info:
        await store.save_creds("s", {"n": 2**100_000})
    assert "NaN" not in str(info.value)


async def test_lone_surrogates_round_trip_losslessly(store: BaseStore) -> None:
    creds = {"me": {"name": "\ud83e", "x": "a\udc00b", "\ud800key": ["\udfff", "ok 😀"]}}
    await store.save_creds("s", creds)
    assert await store.load_creds("s") == creds
    await store.set_keys("s", {"session": {"p": creds}})
    assert await store.get_keys("s", "session", ["p"]) == {"p": creds}
    exported = await store.export_session("s")
    assert exported is not None
    assert exported.creds == creds


async def test_the_same_id_twice_with_different_values_is_refused(store: BaseStore) -> None:
    with pytest.raises(InvalidInputError, match="given twice"):
        await store.set_keys("s", {"pre-key": {7: {"a": 1}, "7": {"a": 2}}})
    await store.set_keys("s", {"pre-key": {7: {"a": 1}, "7": {"a": 1}}})  # the same: fine
    assert await store.get_keys("s", "pre-key", [7]) == {"7": {"a": 1}}


# -- class 7: files at rest -------------------------------------------------------


async def test_sqlite_files_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_path / "sessions.db"
        async with SQLiteStore(path) as store:
            await store.save_creds("s", {"k": b"secret"})
            files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
            modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in files}
    finally:
        os.umask(old)
    assert modes == {f.name: 0o600 for f in files}, {k: oct(v) for k, v in modes.items()}


async def test_an_existing_sqlite_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    path.touch(mode=0o640)
    os.chmod(path, 0o640)
    async with SQLiteStore(path) as store:
        await store.save_creds("s", {"k": 1})
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


# -- class 8: one contract on every backend ---------------------------------------


async def test_the_longest_ids_of_4_byte_characters_work_everywhere(store: BaseStore) -> None:
    sid = "😀" * MAX_SESSION_ID_LENGTH
    category = "😀" * 64
    key_id = "😀" * (MAX_KEY_ID_BYTES // 4)
    await store.set_keys(sid, {category: {key_id: {"v": 1}}})
    assert await store.get_keys(sid, category, [key_id]) == {key_id: {"v": 1}}


async def test_a_key_id_over_the_byte_limit_is_refused_before_writing(store: BaseStore) -> None:
    too_long = "😀" * 1024  # 1,024 characters, 4,096 bytes: PostgreSQL's index refuses it
    with pytest.raises(InvalidInputError, match="bytes long in UTF-8"):
        await store.set_keys("s", {"pre-key": {"1": {"v": 1}, too_long: {"v": 2}}})
    with pytest.raises(InvalidInputError, match="bytes long in UTF-8"):
        await store.get_keys("s", "pre-key", [too_long])
    with pytest.raises(InvalidInputError, match="bytes long in UTF-8"):
        await store.import_session("s", None, {"pre-key": {too_long: {"v": 2}}})
    assert await store.list_sessions() == []


async def test_one_write_carries_the_same_most_bytes_everywhere(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(BaseStore, "MAX_WRITE_SIZE", 10_000)
    async with make_store() as store:
        big = {str(n): {"v": "x" * 1000} for n in range(12)}  # 12 values of ~1 KB
        with pytest.raises(InvalidInputError, match="split the batch"):
            await store.set_keys("s", {"session": big})
        with pytest.raises(InvalidInputError, match="split the batch"):
            await store.import_session(
                "s", {"c": "x" * 9_000}, {"session": {"1": {"v": "y" * 2000}}}
            )
        assert await store.list_sessions() == []
        await store.set_keys("s", {"session": dict(list(big.items())[:8])})  # under the limit


def test_max_value_size_is_capped_the_same_everywhere() -> None:
    for make in (
        MemoryStore,
        lambda **o: SQLiteStore("x.db", **o),
        lambda **o: PostgresStore("host=h", **o),
    ):
        with pytest.raises(InvalidInputError, match="512 MiB"):
            make(max_value_size=2**30)
