"""The bad-input matrix: every public entry point, every kind of bad input.

Each case must raise a documented error — a SessionStoreError that is also the
matching builtin (ValueError, or TypeError for wrong types) — whose message says
what was wrong and what is allowed, and must leave the stored data exactly as
it was (compared byte for byte, on every backend).
"""

from __future__ import annotations

import array
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wa_session_store import (
    AESGCMCipher,
    BackupScheduler,
    InvalidInputError,
    InvalidTypeError,
    PostgresStore,
    RetryPolicy,
    SessionStoreError,
    SQLiteStore,
    Throttler,
    open_store,
    restore_all,
    use_auth_state,
)
from wa_session_store.store.base import BaseStore

from .support.values import read_back

ALLOWED = re.compile(r"must|allowed|expected|limit|use |flatten|needs|not a ", re.I)


def _deep(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = [value]
    return value


class _Odd:
    pass


LONG = "x" * 256
BAD_IDS: dict[str, Any] = {
    "int": 5,
    "bytes": b"s1",
    "none": None,
    "empty": "",
    "too long": LONG,
    "NUL": "s\x001",
    "newline": "s\n1",
    "C1 control": "s\x851",
    "lone surrogate": "s\ud8001",
}
BAD_VALUES: dict[str, Any] = {
    "set": {1, 2},
    "object": _Odd(),
    "NaN": float("nan"),
    "+Infinity": float("inf"),
    "-Infinity": float("-inf"),
    "non-str dict key": {None: "x", "null": "y"},
    "int dict key": {"inner": [{1: "x"}]},
    "int past the digit limit": 2**100_000,
    "deep": _deep(50_000),
    "nested past 100 levels": _deep(101),
    "oversized": "x" * 2048,
    # Dicts the decoder would read as bytes: never stored, nothing replaced.
    "Buffer with bad base64": {"type": "Buffer", "data": "@@"},
    "Buffer with a stray key": {"type": "Buffer", "data": "AAA=", "x": 1},
    "Buffer with non-canonical base64": {"type": "Buffer", "data": "QR=="},
    "Buffer of ints": {"type": "Buffer", "data": [1, 2, 300]},
    "flagged Buffer": {"buffer": True, "value": "AA=="},
    "memoryview of ints": memoryview(array.array("i", [1])),
}
# The same, as they come through an auth state (creds, and keys in both modes).
BUFFER_SHAPED = [v for k, v in BAD_VALUES.items() if "Buffer" in k]

Case = Callable[[BaseStore], Awaitable[Any]]
CASES: list[tuple[str, Case, type[Exception]]] = []


def case(name: str, error: type[Exception]) -> Callable[[Case], Case]:
    def register(fn: Case) -> Case:
        CASES.append((name, fn, error))
        return fn

    return register


def _type_for(value: Any) -> type[Exception]:
    return InvalidTypeError if not isinstance(value, str) else InvalidInputError


for label, bad in BAD_IDS.items():
    err = _type_for(bad)
    case(f"load_creds session id {label}", err)(lambda s, b=bad: s.load_creds(b))
    case(f"save_creds session id {label}", err)(lambda s, b=bad: s.save_creds(b, {"a": 1}))
    case(f"get_keys session id {label}", err)(lambda s, b=bad: s.get_keys(b, "pre-key", ["1"]))
    case(f"get_keys category {label}", err)(lambda s, b=bad: s.get_keys("s1", b, ["1"]))
    case(f"set_keys session id {label}", err)(lambda s, b=bad: s.set_keys(b, {"pre-key": {"9": 1}}))
    case(f"set_keys category {label}", err)(lambda s, b=bad: s.set_keys("s1", {b: {"9": 1}}))
    case(f"clear_keys session id {label}", err)(lambda s, b=bad: s.clear_keys(b))
    case(f"delete_session session id {label}", err)(lambda s, b=bad: s.delete_session(b))
    case(f"use_auth_state session id {label}", err)(lambda s, b=bad: use_auth_state(s, b))
    if bad is not None and not isinstance(bad, int):
        kerr = InvalidTypeError if isinstance(bad, bytes) else InvalidInputError
        key = "k" * 1025 if label == "too long" else bad
        case(f"get_keys key id {label}", kerr)(lambda s, k=key: s.get_keys("s1", "pre-key", [k]))
        case(f"set_keys key id {label}", kerr)(
            lambda s, k=key: s.set_keys("s1", {"pre-key": {"9": 1, k: 1}})
        )

case("category too long", InvalidInputError)(lambda s: s.get_keys("s1", "c" * 65, ["1"]))
case("key id bool", InvalidTypeError)(lambda s: s.get_keys("s1", "pre-key", [True]))
case("get_keys ids a str", InvalidTypeError)(lambda s: s.get_keys("s1", "pre-key", "123"))
case("get_keys ids None", InvalidTypeError)(lambda s: s.get_keys("s1", "pre-key", None))

for label, bad in BAD_VALUES.items():
    err = (
        InvalidTypeError
        if label in ("set", "object") or "dict key" in label or "memoryview" in label
        else InvalidInputError
    )
    case(f"save_creds value {label}", err)(lambda s, b=bad: s.save_creds("s1", {"ok": 1, "x": b}))
    case(f"set_keys value {label}", err)(
        lambda s, b=bad: s.set_keys("s1", {"pre-key": {"9": 1}, "session": {"x": b}})
    )


async def _auth_save(store: BaseStore, creds: Any) -> None:
    auth = await use_auth_state(store, "s1", backup_interval=None)
    try:
        await auth.save_creds(creds)
    finally:
        await auth.aclose()


async def _auth_keys_set(store: BaseStore, data: Any) -> None:
    auth = await use_auth_state(store, "s1", backup_interval=None)
    try:
        await auth.keys.set(data)
    finally:
        await auth.aclose()


for label, bad in {"list": [("a", 1)], "str": "creds", "int": 3, "bytes": b"{}"}.items():
    case(f"save_creds creds a {label}", InvalidTypeError)(lambda s, b=bad: s.save_creds("s1", b))
    case(f"AuthState.save_creds creds a {label}", InvalidTypeError)(
        lambda s, b=bad: _auth_save(s, b)
    )
case("AuthState.save_creds NaN", InvalidInputError)(lambda s: _auth_save(s, {"x": float("nan")}))
for n, bad in enumerate(BUFFER_SHAPED):
    case(f"AuthState.save_creds Buffer-shaped {n}", InvalidInputError)(
        lambda s, b=bad: _auth_save(s, {"ok": 1, "x": {"y": b}})
    )
case("set_keys data a list", InvalidTypeError)(lambda s: s.set_keys("s1", [("pre-key", {})]))
case("set_keys entries a list", InvalidTypeError)(lambda s: s.set_keys("s1", {"pre-key": [1]}))
case("keys.set data a str", InvalidTypeError)(lambda s: _auth_keys_set(s, "pre-key"))
case("restore_all concurrency 0", InvalidInputError)(lambda s: restore_all(s, concurrency=0))
case("reencrypt without cipher", InvalidInputError)(lambda s: s.reencrypt())


async def _snapshot(store: BaseStore) -> list[Any]:
    return [
        await store._scan("creds", None, 10_000, 5.0),
        await store._scan("keys", None, 10_000, 5.0),
        [(i.session_id, i.key_count, i.has_creds, i.size) for i in await store.list_sessions()],
    ]


@pytest.fixture
async def seeded(make_store: Any) -> Any:
    async with make_store(max_value_size=1024) as store:
        await store.save_creds("s1", {"registrationId": 1, "noise": b"\x01" * 32})
        await store.set_keys("s1", {"pre-key": {"1": b"a", "2": {"k": b"b"}}, "session": {"x": 1}})
        await store.save_creds("s2", {"registrationId": 2})
        yield store


async def test_matrix(seeded: BaseStore) -> None:
    before = await _snapshot(seeded)
    for name, call, error in CASES:
        with pytest.raises(error) as info:
            await call(seeded)
        exc = info.value
        assert isinstance(exc, SessionStoreError), name
        assert isinstance(exc, TypeError if error is InvalidTypeError else ValueError), name
        assert ALLOWED.search(str(exc)), f"{name}: {exc}"
        assert await _snapshot(seeded) == before, f"{name} changed the stored data"
    print(f"\nbad-input matrix: {len(CASES)} cases on {type(seeded).__name__}, data unchanged")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("foo://x", "unknown store URL scheme"),
        ("mysql://root@localhost/db", "unknown store URL scheme"),
        ("wa_sessions.db", r"no '://'"),
        ("sqlite://", "needs a path"),
        ("sqlite:///", "needs a path"),
        ("memory://extra", "takes nothing"),
        ("postgresql://user:pw-s3cr3t@[::1/db", "malformed PostgreSQL conninfo"),
        ("postgresql://user:pw-s3cr3t@host/db?bogus=1", "malformed PostgreSQL conninfo"),
    ],
)
def test_open_store_refuses_bad_urls(url: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message) as info:
        open_store(url)
    assert "s3cr3t" not in str(info.value)
    assert ALLOWED.search(str(info.value))


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: open_store(b"memory://"), InvalidTypeError),
        (lambda: SQLiteStore(""), InvalidInputError),
        (lambda: SQLiteStore(5), InvalidInputError),
        (lambda: SQLiteStore("x.db", busy_timeout=-1), InvalidInputError),
        (lambda: SQLiteStore("x.db", max_value_size=0), InvalidInputError),
        (lambda: SQLiteStore("x.db", retry=3), InvalidInputError),
        (lambda: SQLiteStore("x.db", cipher="k"), InvalidTypeError),
        (lambda: PostgresStore(5), InvalidTypeError),
        (lambda: PostgresStore("postgresql://h/d", table_prefix="a-b"), InvalidInputError),
        (lambda: PostgresStore("postgresql://h/d", schema=""), InvalidInputError),
        (lambda: PostgresStore("postgresql://h/d", min_size=-1), InvalidInputError),
        (lambda: RetryPolicy(attempts=1.5), InvalidInputError),
        (lambda: RetryPolicy(timeout=float("nan")), InvalidInputError),
        (lambda: RetryPolicy(backoff=-1), InvalidInputError),
        (lambda: RetryPolicy(deadline=0), InvalidInputError),
        (lambda: AESGCMCipher({"k": b"x" * 16}, "k"), InvalidInputError),
        (lambda: Throttler(lambda: None, interval=-1), InvalidInputError),
        (lambda: Throttler(5), InvalidTypeError),  # type: ignore[arg-type]
        (lambda: BackupScheduler(lambda: None, interval=0), InvalidInputError),
    ],
)
def test_constructors_refuse_bad_arguments(build: Callable[[], Any], error: type) -> None:
    with pytest.raises(error) as info:
        build()
    assert isinstance(info.value, SessionStoreError)
    assert ALLOWED.search(str(info.value)) or "not" in str(info.value)


json_leaf = st.none() | st.booleans() | st.integers() | st.text() | st.binary() | st.floats()
fuzz_values = st.recursive(
    json_leaf | st.sets(st.integers(), max_size=2),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=12,
)
fuzz_ids = st.one_of(st.text(max_size=300), st.integers(), st.binary(max_size=5), st.none())


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    batch=st.dictionaries(fuzz_ids, st.dictionaries(fuzz_ids, fuzz_values, max_size=4), max_size=3)
)
async def test_fuzzed_batches_land_whole_or_not_at_all(seeded: BaseStore, batch: Any) -> None:
    before = await _snapshot(seeded)
    try:
        await seeded.set_keys("fuzz", batch)
    except InvalidInputError:
        assert await _snapshot(seeded) == before
        return
    for category, entries in batch.items():
        ids = [str(k) if isinstance(k, int) else k for k in entries]
        got = await seeded.get_keys("fuzz", category, ids)
        expected = {}
        for key_id, value in entries.items():
            expected[str(key_id) if isinstance(key_id, int) else key_id] = value
        for key_id, value in expected.items():
            stored = got[key_id]
            assert stored == read_back(value)
    await seeded.clear_keys("fuzz")


async def test_a_value_that_would_not_read_back_never_replaces_good_creds(store: BaseStore) -> None:
    good = {"registrationId": 1, "noiseKey": {"private": b"\x01" * 32}}
    await store.save_creds("s1", good)
    for bad in BUFFER_SHAPED:
        with pytest.raises(InvalidInputError, match="BufferJSON Buffer"):
            await store.save_creds("s1", {**good, "noiseKey": {"private": bad}})
    assert await store.load_creds("s1") == good


@pytest.mark.parametrize("key_writes", ["write-through", "barrier"])
async def test_keys_set_refuses_what_would_not_read_back_before_queueing_it(
    store: BaseStore, key_writes: Any
) -> None:
    # In barrier mode such a value used to be queued: every flush then failed,
    # so no frame could be sent and the good writes beside it were never stored.
    auth = await use_auth_state(store, "s1", backup_interval=None, key_writes=key_writes)
    try:
        await auth.keys.set({"session": {"good": b"\x01"}})
        pending = auth.keys.pending
        for bad in BUFFER_SHAPED:
            with pytest.raises(InvalidInputError, match="BufferJSON Buffer"):
                await auth.keys.set({"session": {"a": b"\x02", "b": {"record": bad}}})
            assert auth.keys.pending == pending
        await auth.keys.set({"session": {"later": b"\x03"}})
        await auth.keys.flush()
        assert auth.keys.pending == 0
    finally:
        await auth.aclose()
    stored = await store.get_keys("s1", "session", ["good", "a", "b", "later"])
    assert stored == {"good": b"\x01", "a": None, "b": None, "later": b"\x03"}
