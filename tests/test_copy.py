"""copy_sessions and ``wa-session-store copy``: every backend pair, collisions,
leases, cipher changes, verification, and a copy SIGKILLed halfway then resumed."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from wa_session_store import (
    AESGCMCipher,
    CopyProgress,
    InvalidInputError,
    MemoryStore,
    PostgresStore,
    SQLiteStore,
    copy_sessions,
)
from wa_session_store.store.base import BaseStore
from wa_session_store.store.crypto import sealed_key_id
from wa_session_store.store.transfer import describe_difference, exactly_equal

from .proxy import Proxy

SECRET = b"COPY-SECRET-BYTES-0123456789abcd"
KEY_A, KEY_B = os.urandom(32), os.urandom(32)
BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def creds_of(n: int) -> dict[str, Any]:
    return {
        "registrationId": n,
        "me": {"id": f"1555000{n:04d}:1@s.whatsapp.net"},
        "noiseKey": {"private": SECRET, "public": os.urandom(32)},
    }


def keys_of(n: int, count: int = 20) -> dict[str, dict[str, Any]]:
    return {
        "pre-key": {str(i): {"private": SECRET, "public": os.urandom(33)} for i in range(count)},
        "session": {f"1555{n}.0": {"record": os.urandom(64)}},
        "app-state-sync-version": {"critical_block": {"version": n, "hash": [1, 2, 3]}},
    }


async def seed(store: BaseStore, sessions: int = 3, keys: int = 20) -> None:
    for n in range(sessions):
        await store.import_session(f"bot-{n}", creds_of(n), keys_of(n, keys))
    await store.set_keys("keys-only", {"pre-key": {"1": {"private": SECRET}}})


async def same_sessions(source: BaseStore, target: BaseStore) -> bool:
    ids = [info.session_id for info in await source.list_sessions()]
    if ids != [info.session_id for info in await target.list_sessions()]:
        return False
    for sid in ids:
        exported = await source.export_session(sid)
        assert exported is not None
        if describe_difference(exported, await target.export_session(sid)) is not None:
            return False
    return True


@pytest.fixture
def pg_schemas(pg_dsn: str) -> Iterator[Callable[[], str]]:
    """Fresh schema names on the test server, dropped afterwards."""
    made: list[str] = []

    def make() -> str:
        made.append(f"wa_test_copy_{uuid.uuid4().hex[:12]}")
        return made[-1]

    yield make
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for name in made:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def rewrite_keys_on_insert(dsn: str, schema: str, stored: str, when: str = "true") -> None:
    """Make a faulty target: a trigger stores the JSON ``stored`` for every key
    inserted in ``schema`` where ``when`` holds."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE FUNCTION {schema}.corrupt() RETURNS trigger LANGUAGE plpgsql AS $$"
                " BEGIN NEW.value := convert_to({stored}, 'UTF8'); RETURN NEW; END $$;"
                " CREATE TRIGGER corrupt BEFORE INSERT ON {schema}.wa_keys FOR EACH ROW"
                " WHEN ({when}) EXECUTE FUNCTION {schema}.corrupt()"
            ).format(schema=sql.Identifier(schema), stored=sql.Literal(stored), when=sql.SQL(when))
        )


@pytest.fixture
def make_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., BaseStore]:
    """``make_backend(kind, role, **options)``: a store of a database of its own per role."""
    databases: dict[str, Any] = {}

    def make(kind: str, role: str, **options: Any) -> BaseStore:
        if kind == "memory":
            store = MemoryStore(**options)
            if role in databases:
                store._sessions = databases[role]
            databases[role] = store._sessions
            return store
        if kind == "sqlite":
            return SQLiteStore(tmp_path / f"{role}.db", **options)
        dsn = request.getfixturevalue("pg_dsn")
        schema = databases.setdefault(role, request.getfixturevalue("pg_schemas")())
        return PostgresStore(dsn, schema=schema, **options)

    return make


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as opened:
        yield opened


@pytest.mark.parametrize("source_kind", BACKENDS)
@pytest.mark.parametrize("target_kind", BACKENDS)
async def test_every_backend_pair(
    source_kind: str,
    target_kind: str,
    make_backend: Callable[..., BaseStore],
    stack: AsyncExitStack,
) -> None:
    source = await stack.enter_async_context(make_backend(source_kind, "source"))
    target = await stack.enter_async_context(make_backend(target_kind, "target"))
    await seed(source)
    seen: list[tuple[int, int, int]] = []

    def progress(p: CopyProgress) -> None:
        seen.append((p.sessions_done, p.sessions_total, p.keys_done))

    report = await copy_sessions(source, target, progress=progress)
    assert report.ok
    assert report.count("copied") == 4
    assert report.keys == 3 * 22 + 1
    assert report.bytes == sum(info.size for info in await source.list_sessions())
    assert await same_sessions(source, target)
    assert [done for done, _, _ in seen] == [1, 2, 3, 4]
    assert seen[-1] == (4, 4, 3 * 22 + 1)
    # Again: everything is there already, so nothing is written.
    again = await copy_sessions(source, target)
    assert again.ok
    assert again.count("skipped") == 4
    assert again.keys == 0
    assert "copied 0, skipped 4, failed 0 of 4 sessions" in again.summary()


async def test_named_sessions_and_unknown_ones(tmp_path: Path, stack: AsyncExitStack) -> None:
    source = await stack.enter_async_context(SQLiteStore(tmp_path / "a.db"))
    target = await stack.enter_async_context(MemoryStore())
    await seed(source)
    report = await copy_sessions(source, target, ["bot-1", "nobody", "bot-1"])
    assert [(s.session_id, s.status) for s in report.sessions] == [
        ("bot-1", "copied"),
        ("nobody", "failed"),
    ]
    assert not report.ok
    assert report.sessions[1].detail == "not stored in the source"
    assert [info.session_id for info in await target.list_sessions()] == ["bot-1"]
    with pytest.raises(InvalidInputError):
        await copy_sessions(source, target, ["bad\x00id"])
    with pytest.raises(InvalidInputError, match="same store"):
        await copy_sessions(source, source)


async def test_collisions_are_skipped_unless_overwrite(
    tmp_path: Path, stack: AsyncExitStack
) -> None:
    source = await stack.enter_async_context(SQLiteStore(tmp_path / "a.db"))
    target = await stack.enter_async_context(SQLiteStore(tmp_path / "b.db"))
    await seed(source)
    other = {"registrationId": 999}
    await target.import_session("bot-0", other, {"pre-key": {"1": {"private": b"other"}}})
    await target.import_session("bot-1", creds_of(1), {})  # same creds, keys missing

    report = await copy_sessions(source, target)
    statuses = {s.session_id: s for s in report.sessions}
    assert not report.ok
    assert statuses["bot-0"].status == "conflict"
    assert "creds differ" in statuses["bot-0"].detail
    assert "overwrite" in statuses["bot-0"].detail
    assert statuses["bot-1"].status == "conflict"
    assert "missing on the target" in statuses["bot-1"].detail
    assert statuses["bot-2"].status == "copied"
    assert (await target.load_creds("bot-0")) == other  # left alone
    assert "in conflict 2" in report.summary()
    assert SECRET.decode() not in json.dumps(report.to_json())

    replaced = await copy_sessions(source, target, overwrite=True)
    assert replaced.ok
    assert {s.session_id: s.status for s in replaced.sessions} == {
        "bot-0": "copied",
        "bot-1": "copied",
        "bot-2": "skipped",
        "keys-only": "skipped",
    }
    assert await same_sessions(source, target)


@pytest.mark.postgres
async def test_a_session_held_by_a_live_lease_is_refused_unless_force(
    pg_dsn: str, pg_schemas: Callable[[], str], tmp_path: Path, stack: AsyncExitStack
) -> None:
    source = await stack.enter_async_context(PostgresStore(pg_dsn, schema=pg_schemas()))
    target = await stack.enter_async_context(SQLiteStore(tmp_path / "b.db"))
    await seed(source)
    held = await source.acquire_lease("bot-0", owner="worker-7", ttl=300)
    released = await source.acquire_lease("bot-1", owner="worker-8", ttl=300)
    await released.release()

    report = await copy_sessions(source, target)
    statuses = {s.session_id: s for s in report.sessions}
    assert statuses["bot-0"].status == "refused"
    assert "worker-7" in statuses["bot-0"].detail
    assert statuses["bot-1"].status == "copied"  # its lease was released
    assert await target.export_session("bot-0") is None
    assert not report.ok

    forced = await copy_sessions(source, target, ["bot-0"], force=True)
    assert [s.status for s in forced.sessions] == ["copied"]
    assert await source.export_session("bot-0") == await target.export_session("bot-0")
    await held.release()


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (True, 1),
        (False, 0),
        (1.0, 1),
        (0.0, -0.0),
        (b"abc", "abc"),
        ([1, 2], (1, 2)),
        ({"x": [{"y": True}]}, {"x": [{"y": 1}]}),
        ({"x": 1}, {"x": 1, "z": None}),
        ([1, [2.0]], [1, [2]]),
        (None, 0),
    ],
)
def test_exactly_equal_tells_apart_what_double_equals_does_not(a: object, b: object) -> None:
    assert not exactly_equal(a, b)
    assert not exactly_equal(b, a)
    assert exactly_equal(a, a)
    assert exactly_equal(b, b)


def test_exactly_equal_on_equal_documents() -> None:
    document = {"me": {"id": "x"}, "n": [1, 2.5, True, None, b"\x00", "s"], "e": {}, "l": []}
    assert exactly_equal(document, copy.deepcopy(document))
    assert exactly_equal(-0.0, -0.0)
    deep: list[Any] = []
    deeper: list[Any] = []
    for _ in range(5000):  # deeper than the recursion limit
        deep, deeper = [deep], [deeper]
    assert exactly_equal(deep, deeper)


# Python's == calls each pair equal; a store keeps them apart, and so must a copy.
LOOSE = {"registered": True, "ratio": 1.0, "zero": -0.0, "flags": [True, False]}
LOOSER = {"registered": 1, "ratio": 1, "zero": 0.0, "flags": [1, 0]}


@pytest.mark.parametrize("target_kind", BACKENDS)
@pytest.mark.parametrize("where", ["creds", "key"])
async def test_a_copy_compares_type_for_type(
    target_kind: str, where: str, make_backend: Callable[..., BaseStore], stack: AsyncExitStack
) -> None:
    source = await stack.enter_async_context(make_backend("sqlite", "source"))
    target = await stack.enter_async_context(make_backend(target_kind, "target"))
    base = creds_of(0)
    for name, value in LOOSE.items():
        exact = {**base, name: value}
        loose = {**base, name: LOOSER[name]} if where == "creds" else exact
        keys = {"app-state-sync-version": {"v": {name: value}}}
        loose_keys = {"app-state-sync-version": {"v": {name: LOOSER[name]}}}
        await source.import_session(name, exact, keys)
        await target.import_session(name, loose, keys if where == "creds" else loose_keys)
    expected = "creds differ" if where == "creds" else "1 key differs (app-state-sync-version 'v')"

    checked = await copy_sessions(source, target, verify_only=True)
    assert {(s.status, s.detail) for s in checked.sessions} == {("failed", expected)}

    resumed = await copy_sessions(source, target)
    assert {s.status for s in resumed.sessions} == {"conflict"}
    assert all(expected in s.detail for s in resumed.sessions)

    replaced = await copy_sessions(source, target, overwrite=True)
    assert {s.status for s in replaced.sessions} == {"copied"}
    for name in LOOSE:
        got = await target.export_session(name)
        assert got is not None
        held = got.creds if where == "creds" else got.keys["app-state-sync-version"]["v"]
        assert held is not None
        assert exactly_equal(held[name], LOOSE[name])
    assert (await copy_sessions(source, target, verify_only=True)).ok


@pytest.mark.postgres
async def test_verification_after_writing_is_type_for_type(
    pg_dsn: str, pg_schemas: Callable[[], str], tmp_path: Path, stack: AsyncExitStack
) -> None:
    source = await stack.enter_async_context(SQLiteStore(tmp_path / "a.db"))
    await source.import_session("bot", creds_of(0), {"pre-key": {"7": {"flag": True}}})
    schema = pg_schemas()
    target = await stack.enter_async_context(PostgresStore(pg_dsn, schema=schema))
    # A faulty target: it stores 1 where true was written (equal to ==).
    rewrite_keys_on_insert(pg_dsn, schema, '{"flag": 1}')
    report = await copy_sessions(source, target)
    assert [(s.status, s.detail) for s in report.sessions] == [
        ("failed", "the target's copy differs from the source: 1 key differs (pre-key '7')")
    ]


async def _leased_target(
    pg_dsn: str, schema: str, stack: AsyncExitStack, owner: str = "worker-9"
) -> tuple[PostgresStore, Any]:
    """A target holding a different bot-0 and a leased, empty bot-2, both leased to ``owner``."""
    target = await stack.enter_async_context(PostgresStore(pg_dsn, schema=schema))
    await target.import_session("bot-0", {"registrationId": 999}, {"pre-key": {"1": {"x": 1}}})
    lease = await target.acquire_lease("bot-0", owner=owner, ttl=300)
    empty = await target.acquire_lease("bot-2", owner=owner, ttl=300)
    stack.push_async_callback(lease.release)
    stack.push_async_callback(empty.release)
    return target, lease


@pytest.mark.postgres
@pytest.mark.parametrize("force", [False, True], ids=["", "force"])
async def test_a_session_leased_on_the_target_is_refused(
    pg_dsn: str, pg_schemas: Callable[[], str], tmp_path: Path, stack: AsyncExitStack, force: bool
) -> None:
    source = await stack.enter_async_context(SQLiteStore(tmp_path / "a.db"))
    await seed(source)
    target, lease = await _leased_target(pg_dsn, pg_schemas(), stack)
    before = await target.export_session("bot-0")

    report = await copy_sessions(source, target, overwrite=True, force=force)
    statuses = {s.session_id: s for s in report.sessions}
    assert not report.ok
    for sid in (
        "bot-0",
        "bot-2",
    ):  # replaced, or written for the first time: the owner's either way
        assert statuses[sid].status == "refused"
        assert statuses[sid].error == "LeaseUnavailableError"
        assert "'worker-9'" in statuses[sid].detail
        assert "on the target" in statuses[sid].detail
    assert statuses["bot-1"].status == "copied"
    assert statuses["keys-only"].status == "copied"
    assert "refused 2" in report.summary()
    assert await target.export_session("bot-0") == before
    assert await target.export_session("bot-2") is None
    # The owner goes on writing under its lease, and its writes land alone.
    await target.save_creds("bot-0", {"registrationId": 1000}, fence=lease)
    assert await target.load_creds("bot-0") == {"registrationId": 1000}

    await lease.release()
    again = await copy_sessions(source, target, ["bot-0"], overwrite=True)
    assert [s.status for s in again.sessions] == ["copied"]
    assert await target.export_session("bot-2") is None  # still leased: still refused
    assert (await copy_sessions(source, target, ["bot-0"], verify_only=True)).ok


async def test_plaintext_to_sealed_then_key_a_to_key_b(
    tmp_path: Path, stack: AsyncExitStack
) -> None:
    plain = await stack.enter_async_context(SQLiteStore(tmp_path / "plain.db"))
    await seed(plain)
    sealed_a = await stack.enter_async_context(
        SQLiteStore(tmp_path / "a.db", cipher=AESGCMCipher({"a": KEY_A}, "a"))
    )
    assert (await copy_sessions(plain, sealed_a)).ok
    sealed_b = await stack.enter_async_context(
        SQLiteStore(tmp_path / "b.db", cipher=AESGCMCipher({"b": KEY_B}, "b"))
    )
    assert (await copy_sessions(sealed_a, sealed_b)).ok
    assert await same_sessions(plain, sealed_b)
    for name, key_id in (("a.db", "a"), ("b.db", "b")):
        with sqlite3.connect(tmp_path / name) as conn:
            rows = conn.execute("SELECT value FROM wa_keys UNION ALL SELECT value FROM wa_creds")
            assert {sealed_key_id(bytes(value)) for (value,) in rows} == {key_id}
    # The target's copy does not open without its key: the source's does not work there.
    wrong = await stack.enter_async_context(
        SQLiteStore(tmp_path / "b.db", cipher=AESGCMCipher({"b": KEY_A}, "b"))
    )
    report = await copy_sessions(wrong, await stack.enter_async_context(MemoryStore()), ["bot-0"])
    assert report.sessions[0].status == "failed"
    assert report.sessions[0].error == "DecryptionError"


@pytest.mark.postgres
async def test_verification_catches_a_row_corrupted_on_write(
    pg_dsn: str, pg_schemas: Callable[[], str], tmp_path: Path, stack: AsyncExitStack
) -> None:
    source = await stack.enter_async_context(SQLiteStore(tmp_path / "a.db"))
    await seed(source)
    schema = pg_schemas()
    target = await stack.enter_async_context(PostgresStore(pg_dsn, schema=schema))
    # A faulty target: a trigger rewrites one key as it is inserted.
    rewrite_keys_on_insert(
        pg_dsn, schema, '{"private": 1}', "NEW.session_id = 'bot-1' AND NEW.key_id = '7'"
    )
    report = await copy_sessions(source, target)
    statuses = {s.session_id: s for s in report.sessions}
    assert statuses["bot-1"].status == "failed"
    assert statuses["bot-1"].detail == (
        "the target's copy differs from the source: 1 key differs (pre-key '7')"
    )
    assert [s.status for s in report.sessions if s.session_id != "bot-1"] == ["copied"] * 3
    assert not report.ok
    # --verify-only finds it too; and a resumed copy does not take it for done.
    checked = await copy_sessions(source, target, verify_only=True)
    assert {s.session_id: s.status for s in checked.sessions}["bot-1"] == "failed"
    assert checked.count("verified") == 3
    resumed = await copy_sessions(source, target)
    assert {s.session_id: s.status for s in resumed.sessions}["bot-1"] == "conflict"


async def test_verify_only_writes_nothing(tmp_path: Path, stack: AsyncExitStack) -> None:
    source = await stack.enter_async_context(SQLiteStore(tmp_path / "a.db"))
    target = await stack.enter_async_context(SQLiteStore(tmp_path / "b.db"))
    await seed(source)
    await copy_sessions(source, target, ["bot-0", "bot-1"])
    with sqlite3.connect(tmp_path / "b.db") as conn:
        conn.execute(
            "UPDATE wa_creds SET value = CAST(? AS BLOB) WHERE session_id = 'bot-0'",
            (json.dumps({"registrationId": 0}).encode(),),
        )
    report = await copy_sessions(source, target, verify_only=True)
    assert {s.session_id: (s.status, s.detail) for s in report.sessions} == {
        "bot-0": ("failed", "creds differ"),
        "bot-1": ("verified", ""),
        "bot-2": ("failed", "not on the target"),
        "keys-only": ("failed", "not on the target"),
    }
    assert report.summary().startswith("verified 1, failed 3 of 4 sessions")
    assert [info.session_id for info in await target.list_sessions()] == ["bot-0", "bot-1"]


# -- the command line, as a subprocess --------------------------------------------


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("WA_SESSION_STORE_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "wa_session_store", "copy", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def search_path_url(pg_dsn: str, schema: str, password: str | None = None) -> str:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    dsn = pg_dsn + ("&" if "?" in pg_dsn else "?") + f"options=-csearch_path%3D{schema}"
    return dsn if password is None else dsn.replace("postgres@", f"postgres:{password}@")


def test_cli_help(tmp_path: Path) -> None:
    result = cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for option in ("--from URL", "--to URL", "--overwrite", "--force", "--verify-only", "--json"):
        assert option in result.stdout
    assert "WA_SESSION_STORE_SOURCE_KEYS" in result.stdout
    assert not list(tmp_path.iterdir())


@pytest.mark.postgres
async def test_cli_sqlite_to_postgres_with_a_cipher_change(
    tmp_path: Path, pg_dsn: str, pg_schemas: Callable[[], str]
) -> None:
    async with SQLiteStore(
        tmp_path / "wa_sessions.db", cipher=AESGCMCipher({"a": KEY_A}, "a")
    ) as s:
        await seed(s)
    url = search_path_url(pg_dsn, pg_schemas(), password="cli-pw-s3cr3t")
    env = {
        "WA_SESSION_STORE_SOURCE_KEYS": f"a={b64(KEY_A)}",
        "WA_SESSION_STORE_KEYS": f"b={b64(KEY_B)}",
    }
    source = "sqlite:///wa_sessions.db"

    copied = cli("--from", source, "--to", url, "--json", cwd=tmp_path, env=env)
    assert copied.returncode == 0, copied.stderr
    report = json.loads(copied.stdout)
    assert (report["ok"], report["copied"], report["keys"]) == (True, 4, 3 * 22 + 1)
    assert copied.stderr == ""  # no progress when stderr is not a terminal

    checked = cli("--from", source, "--to", url, "--verify-only", cwd=tmp_path, env=env)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("verified 4, failed 0 of 4 sessions")

    # Without the source's keys every session fails to decode, and the hint names the variable.
    no_keys = cli(
        "--from",
        source,
        "--to",
        url,
        cwd=tmp_path,
        env={"WA_SESSION_STORE_KEYS": env["WA_SESSION_STORE_KEYS"]},
    )
    assert no_keys.returncode == 1
    assert "WA_SESSION_STORE_SOURCE_KEYS" in no_keys.stderr
    for result in (copied, checked, no_keys):
        output = result.stdout + result.stderr
        assert "cli-pw-s3cr3t" not in output
        assert b64(KEY_A) not in output
        assert b64(KEY_B) not in output
        assert SECRET.decode() not in output
    async with (
        SQLiteStore(tmp_path / "wa_sessions.db", cipher=AESGCMCipher({"a": KEY_A}, "a")) as s,
        PostgresStore(url, cipher=AESGCMCipher({"b": KEY_B}, "b")) as target,
    ):
        assert await same_sessions(s, target)
        rows = await target._scan("keys", None, 500, 5)
        assert {sealed_key_id(bytes(b)) for _, b in rows} == {"b"}


def test_cli_exit_codes(tmp_path: Path) -> None:
    same = cli("--from", "sqlite:///a.db", "--to", "sqlite:///a.db", cwd=tmp_path)
    assert same.returncode == 2
    assert same.stderr.startswith("error: --from and --to name the same store")
    missing = cli("--from", "sqlite:///nothing.db", "--to", "sqlite:///b.db", cwd=tmp_path)
    assert missing.returncode == 3  # not found
    assert "no SQLite database" in missing.stderr
    assert not (tmp_path / "nothing.db").exists()  # the source is never created
    usage = cli("--from", "sqlite:///a.db", cwd=tmp_path)
    assert usage.returncode == 2
    bad_keys = cli(
        "--from",
        "sqlite:///a.db",
        "--to",
        "sqlite:///b.db",
        cwd=tmp_path,
        env={"WA_SESSION_STORE_SOURCE_KEYS": "not-a-key-list"},
    )
    assert bad_keys.returncode == 2
    assert "WA_SESSION_STORE_SOURCE_KEYS must look like" in bad_keys.stderr


async def test_cli_conflict_then_overwrite(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "a.db") as source:
        await seed(source)
    async with SQLiteStore(tmp_path / "b.db") as target:
        await target.import_session("bot-0", {"registrationId": 999}, {})
    conflict = cli("--from", "sqlite:///a.db", "--to", "sqlite:///b.db", cwd=tmp_path)
    assert conflict.returncode == 5  # refused: in conflict
    assert "bot-0: conflict: the target holds a different session" in conflict.stdout
    assert "copied 3, skipped 0, in conflict 1, failed 0 of 4 sessions" in conflict.stdout
    overwrite = cli(
        "--from", "sqlite:///a.db", "--to", "sqlite:///b.db", "--overwrite", "bot-0", cwd=tmp_path
    )
    assert overwrite.returncode == 0, overwrite.stderr
    assert overwrite.stdout.startswith("copied 1, skipped 0, failed 0 of 1 session;")


async def test_cli_verify_only_and_overwrite_compare_type_for_type(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "a.db") as source, SQLiteStore(tmp_path / "b.db") as target:
        base = creds_of(0)
        await source.import_session("bot", {**base, "registered": True}, {})
        await target.import_session("bot", {**base, "registered": 1}, {})
    checked = cli(
        "--from", "sqlite:///a.db", "--to", "sqlite:///b.db", "--verify-only", cwd=tmp_path
    )
    assert checked.returncode == 1, checked.stdout
    assert "bot: failed: creds differ" in checked.stdout
    replaced = cli(
        "--from", "sqlite:///a.db", "--to", "sqlite:///b.db", "--overwrite", cwd=tmp_path
    )
    assert replaced.returncode == 0, replaced.stderr
    assert replaced.stdout.startswith("copied 1, skipped 0, failed 0 of 1 session;")
    async with SQLiteStore(tmp_path / "b.db") as target:
        creds = await target.load_creds("bot")
    assert creds is not None
    assert creds["registered"] is True


@pytest.mark.postgres
async def test_cli_refuses_a_session_leased_on_the_target(
    tmp_path: Path, pg_dsn: str, pg_schemas: Callable[[], str]
) -> None:
    await _seed_file(tmp_path / "a.db", 3, 5)
    schema = pg_schemas()
    url = search_path_url(pg_dsn, schema)
    async with AsyncExitStack() as stack:
        target, _ = await _leased_target(pg_dsn, schema, stack)
        before = await target.export_session("bot-0")
        argv = ["--from", "sqlite:///a.db", "--to", url, "--overwrite", "--force"]
        shown = await asyncio.to_thread(cli, *argv, cwd=tmp_path)
        as_json = await asyncio.to_thread(cli, *argv, "--json", cwd=tmp_path)
        assert await target.export_session("bot-0") == before
        assert await target.export_session("bot-2") is None
    assert shown.returncode == 5, shown.stderr
    assert "bot-0: refused: held by a live lease of 'worker-9' until " in shown.stdout
    assert "on the target: stop that owner" in shown.stdout
    assert "refused 2, failed 0 of 4 sessions" in shown.stdout
    assert as_json.returncode == 5, as_json.stderr
    report = json.loads(as_json.stdout)
    assert (report["ok"], report["refused"]) == (False, 2)
    refused = [s for s in report["sessions"] if s["status"] == "refused"]
    assert {s["session"] for s in refused} == {"bot-0", "bot-2"}
    assert {s["error"] for s in refused} == {"LeaseUnavailableError"}


async def _seed_file(path: Path, sessions: int, keys: int) -> None:
    async with SQLiteStore(path) as source:
        await seed(source, sessions=sessions, keys=keys)


async def _same_stores(path: Path, url: str) -> bool:
    async with SQLiteStore(path) as source, PostgresStore(url) as target:
        return await same_sessions(source, target)


@pytest.mark.postgres
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_a_copy_stopped_halfway_resumes(
    tmp_path: Path, pg_dsn: str, pg_schemas: Callable[[], str], proxy: Proxy, signum: int
) -> None:
    sessions = 40
    asyncio.run(_seed_file(tmp_path / "a.db", sessions, 200))
    schema = pg_schemas()
    url = search_path_url(pg_dsn, schema)
    # Through the proxy at 5 ms each way, each session's transaction takes tens of ms.
    proxy.delay(0.005)
    slow = search_path_url(proxy.dsn(pg_dsn), schema)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("WA_SESSION_STORE_")}
    argv = [sys.executable, "-m", "wa_session_store", "copy", "--from", "sqlite:///a.db"]
    child = subprocess.Popen(
        [*argv, "--to", slow],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    count = 0
    try:
        deadline = time.monotonic() + 60
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            while time.monotonic() < deadline and child.poll() is None:
                try:
                    row = conn.execute(
                        sql.SQL("SELECT count(*) FROM {}.wa_creds").format(sql.Identifier(schema))
                    ).fetchone()
                    count = row[0] if row else 0
                except psycopg.errors.UndefinedTable:
                    count = 0  # the child has not created the tables yet
                if count >= 3:
                    break
                time.sleep(0.02)
        assert child.poll() is None, "the copy finished before it could be killed"
        assert count >= 3
        child.send_signal(signum)
        _, stderr = child.communicate(timeout=60)
    finally:
        child.kill()
        child.wait(timeout=30)
    if signum == signal.SIGKILL:
        assert child.returncode == -signal.SIGKILL
    else:  # Ctrl-C: the status of the CLI, and how to go on
        assert child.returncode == 130, stderr
        assert "run the same command again" in stderr
    proxy.delay(0)

    resumed = cli("--from", "sqlite:///a.db", "--to", url, "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["skipped"] >= 3
    assert report["copied"] >= 1
    assert report["skipped"] + report["copied"] == sessions + 1
    assert asyncio.run(_same_stores(tmp_path / "a.db", url))
