"""The reliability fault suite: real faults, and a ledger of every write.

Each test breaks something for real (the PostgreSQL server restarted or its
backends terminated, the network cut, refused, black-holed or slowed through
the TCP proxy, a writer process SIGKILLed) while it records which writes were
*acknowledged* (the call returned). Afterwards it reads the database directly,
bypassing the store and the proxy, and checks that no acknowledged write was
lost: each stored value is the acknowledged one or one issued after it.
Writes that raised :class:`StoreUnavailableError` were not acknowledged; they
may or may not have landed.

Each test prints one line with its figures (operations, faults, losses), and
an autouse fixture checks that no connection, task or file descriptor leaks.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import logging
import os
import random
import signal
import sqlite3
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg import sql

from wa_session_store import (
    AuthState,
    PostgresStore,
    RetryDetails,
    RetryPolicy,
    SQLiteStore,
    StoreUnavailableError,
    use_auth_state,
)

from . import fault_writer
from .conftest import DSN
from .proxy import Proxy
from .support.creds import CREDS
from .support.faults import need_cluster

pytestmark = [pytest.mark.faults]

T = TypeVar("T")

#: The store's connections in pg_stat_activity (PostgresStore's default name).
STORE_APP = "wa_session_store"
#: This suite's own inspection connections, never terminated by it.
ADMIN_APP = "wa_fault_suite"
WRITER = Path(__file__).with_name("fault_writer.py")


# -- helpers -----------------------------------------------------------------------


async def _bounded(aw: Awaitable[T], seconds: float, what: str) -> T:
    """Await ``aw`` for at most ``seconds``; running out is reported as a hang."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        return await asyncio.wait_for(aw, seconds)
    except asyncio.TimeoutError:
        if loop.time() - started >= seconds:
            raise AssertionError(f"hang: {what} did not finish within {seconds:.1f}s") from None
        raise


def _fds() -> dict[str, str]:
    """This process's open file descriptors and what they point at."""
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            found[fd] = os.readlink(f"/proc/self/fd/{fd}")
    return found


def _fd_count() -> int:
    return len(_fds())


def _buffers(obj: dict[str, Any]) -> Any:
    if obj.get("type") == "Buffer" and isinstance(obj.get("data"), str) and len(obj) == 2:
        return base64.b64decode(obj["data"])
    return obj


def _decode(blob: bytes | memoryview) -> Any:
    """A stored value, read independently of the library's codec (BufferJSON)."""
    return json.loads(bytes(blob), object_hook=_buffers)


def _admin(dsn: str) -> Awaitable[psycopg.AsyncConnection[Any]]:
    return psycopg.AsyncConnection.connect(
        dsn, autocommit=True, application_name=ADMIN_APP, connect_timeout=5
    )


def _own_tcp_ports() -> set[int]:
    """Local ports of this process's TCP sockets (the proxies' upstream ones included)."""
    inodes = {target[8:-1] for target in _fds().values() if target.startswith("socket:[")}
    ports = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _store_backends(dsn: str) -> int:
    """Server connections of this process's stores.

    Those named ``wa_session_store`` whose client socket belongs to this
    process: other processes may use the same server (and the name) meanwhile.
    """
    with psycopg.connect(dsn, connect_timeout=5, application_name=ADMIN_APP) as conn:
        rows = conn.execute(
            "SELECT client_port FROM pg_stat_activity WHERE application_name = %s", (STORE_APP,)
        ).fetchall()
    ours = _own_tcp_ports()
    return sum(1 for (port,) in rows if port in ours)


async def _wait_no_backends(dsn: str, within: float = 5.0) -> int:
    """Wait until the server has no store connection left; return how many remain."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        left = await asyncio.to_thread(_store_backends, dsn)
        if left == 0 or loop.time() >= deadline:
            return left
        await asyncio.sleep(0.1)


async def _stored_keys(
    admin: psycopg.AsyncConnection[Any], schema: str
) -> dict[tuple[str, str, str], Any]:
    cur = await admin.execute(
        sql.SQL("SELECT session_id, category, key_id, value FROM {}").format(
            sql.Identifier(schema, "wa_keys")
        )
    )
    return {(s, c, k): _decode(v) for s, c, k, v in await cur.fetchall()}


async def _stored_creds(admin: psycopg.AsyncConnection[Any], schema: str) -> dict[str, Any]:
    cur = await admin.execute(
        sql.SQL("SELECT session_id, value FROM {}").format(sql.Identifier(schema, "wa_creds"))
    )
    return {s: _decode(v) for s, v in await cur.fetchall()}


async def _stored_creds_of(
    admin: psycopg.AsyncConnection[Any], schema: str, session_id: str
) -> Any:
    cur = await admin.execute(
        sql.SQL("SELECT value FROM {} WHERE session_id = %s").format(
            sql.Identifier(schema, "wa_creds")
        ),
        (session_id,),
    )
    row = await cur.fetchone()
    return None if row is None else _decode(row[0])


@contextlib.asynccontextmanager
async def _opened(store: PostgresStore, seconds: float) -> AsyncIterator[PostgresStore]:
    """``async with store``, with its open and close bounded too."""
    await _bounded(store.open(), seconds, "opening the store")
    try:
        yield store
    finally:
        await _bounded(store.close(), seconds, "closing the store")


def _proxy_for(dsn: str) -> Proxy:
    """A proxy in front of the test server (the ``proxy`` fixture's target rule)."""
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    host = str(params.get("hostaddr") or params.get("host") or "127.0.0.1").split(",")[0]
    if host.startswith("/"):
        pytest.skip("the proxy needs a TCP PostgreSQL DSN, not a Unix socket")
    return Proxy(host, int(str(params.get("port") or 5432).split(",")[0]))


def _pool_is_released(store: PostgresStore) -> list[str]:
    stats = store.pool.get_stats()
    problems = []
    if not store.pool.closed:
        problems.append("pool still open")
    # pool_size is not reset by close(); what matters is that none is held or awaited.
    if stats.get("pool_available", 0) or stats.get("requests_waiting", 0):
        problems.append(f"pool stats after close: {stats}")
    return problems


class KeyLedger:
    """What ``set_keys``/``clear_keys`` were asked to do, and what was acknowledged.

    Ops are numbered in issue order; ops on one session are issued one after
    another, so for every key "newer" is well defined. A stored key is fine when
    it holds the value of its last acknowledged op or of an op issued after that
    one (which may have landed although it failed); absent counts as ``None``.
    """

    def __init__(self) -> None:
        self.issued: dict[tuple[str, str, str], list[tuple[int, Any]]] = defaultdict(list)
        self.acked: dict[tuple[str, str, str], int] = {}
        self.ops = 0
        self.acked_ops = 0
        self.failed_ops = 0

    def issue(
        self, session_id: str, data: Mapping[str, Mapping[str, Any]]
    ) -> tuple[int, list[Any]]:
        self.ops += 1
        refs = []
        for category, items in data.items():
            for key_id, value in items.items():
                ref = (session_id, category, str(key_id))
                self.issued[ref].append((self.ops, value))
                refs.append(ref)
        return self.ops, refs

    def issue_clear(self, session_id: str) -> tuple[int, list[Any]]:
        self.ops += 1
        refs = [ref for ref in self.issued if ref[0] == session_id]
        for ref in refs:
            self.issued[ref].append((self.ops, None))
        return self.ops, refs

    def ack(self, op: int, refs: list[Any]) -> None:
        self.acked_ops += 1
        for ref in refs:
            self.acked[ref] = max(self.acked.get(ref, 0), op)

    def fail(self) -> None:
        self.failed_ops += 1

    def lost(self, stored: Mapping[tuple[str, str, str], Any]) -> list[str]:
        """One line per key whose stored value contradicts an acknowledged write."""
        problems = []
        for ref, history in self.issued.items():
            floor = self.acked.get(ref)
            allowed = [v for op, v in history if floor is None or op >= floor]
            if floor is None:
                allowed.append(None)
            actual = stored.get(ref)
            if actual not in allowed:
                acked_value = dict(history)[floor] if floor is not None else None
                problems.append(
                    f"{ref}: stored {actual!r}, but op {floor} acknowledged {acked_value!r}"
                )
        for ref in stored:
            if ref not in self.issued:
                problems.append(f"{ref}: stored but never written")
        return problems


@dataclass
class CredsLedger:
    """Sequential direct ``save_creds`` calls of one session, values ``{"n": n}``."""

    issued: int = 0
    acked: int = 0
    failed: int = 0

    def check(self, stored: Any) -> str | None:
        n = stored.get("n") if isinstance(stored, dict) else None
        if self.acked == 0 and n is None:
            return None
        if n is None or not self.acked <= n <= self.issued:
            return f"stored creds n={n}, acknowledged up to {self.acked}, issued {self.issued}"
        return None


# -- hygiene around every test -------------------------------------------------------


class _TextOnlyRecords(logging.Filter):
    """Render a log record's message now and drop the objects it referred to."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        return True


@pytest.fixture(autouse=True)
def _no_leaked_fds_or_connections(request: pytest.FixtureRequest) -> Iterator[None]:
    """No file descriptor and no server connection may outlive a test.

    Set up before the event loop and the proxy and torn down after both, so the
    count compares like with like: tolerance 0.
    """
    # pytest keeps the log records of a test until its teardown is over, and a
    # record keeps its arguments alive: psycopg.pool logs "discarding closed
    # connection: %s" with the connection object, whose socket is only closed
    # when the object is collected. Rendering each record's message at once
    # keeps the text and lets the object go, as any handler that does not
    # hoard records would.
    text_only = _TextOnlyRecords()
    loggers = [logging.getLogger(name) for name in ("psycopg", "psycopg.pool", STORE_APP)]
    for logger in loggers:
        logger.addFilter(text_only)
    gc.collect()
    before = _fds()
    yield
    for logger in loggers:
        logger.removeFilter(text_only)
    problems = []
    if request.node.get_closest_marker("postgres") is not None and _server_up():
        deadline = time.monotonic() + 5.0
        left = _store_backends(DSN)
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = _store_backends(DSN)
        if left:
            problems.append(f"{left} store connections still open on the server")
    gc.collect()
    after = _fds()
    if len(after) != len(before):
        new = sorted(set(after.values()) - set(before.values()))
        problems.append(
            f"{len(after) - len(before):+d} file descriptors ({len(before)} before, "
            f"{len(after)} after; new: {new})"
        )
    assert not problems, "leak after the test: " + "; ".join(problems)


@pytest.fixture(autouse=True)
async def _no_leaked_tasks() -> AsyncIterator[None]:
    """Only the fixture's own task may be left on the test's loop."""
    yield
    for _ in range(5):  # let tasks finishing right now run their last step
        await asyncio.sleep(0)
    current = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert not left, f"{len(left)} asyncio tasks leaked: {left}"


def _server_up() -> bool:
    try:
        with psycopg.connect(DSN, connect_timeout=3, application_name=ADMIN_APP):
            return True
    except psycopg.Error:
        return False


# -- 1. server restarts and terminated backends during a burst -------------------------

BURST_POLICY = RetryPolicy(attempts=8, timeout=2.0, backoff=0.3, max_backoff=1.0)
BURST_AUTH_SESSIONS = 10
BURST_DIRECT_SESSIONS = 10
BURST_KEYSPACE = 48
BURST_RESTARTS = 3
BURST_TERMINATIONS = 3


async def _run(argv: list[str], timeout: float) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.communicate()
        raise AssertionError(f"hang: {' '.join(argv)} did not finish in {timeout}s") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def _server_ready(dsn: str, within: float) -> bool:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    host = str(params.get("host") or "127.0.0.1")
    port = str(params.get("port") or 5432)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        code, _ = await _run(["pg_isready", "-q", "-h", host, "-p", port, "-t", "2"], 10)
        if code == 0:
            return True
        await asyncio.sleep(0.2)
    return False


async def _ensure_server_up(dsn: str, cluster: tuple[str, str]) -> None:
    """Whatever happened, leave the server running for the tests that follow."""
    if await _server_ready(dsn, 30):
        return
    await _run(["pg_ctlcluster", "--skip-systemctl-redirect", *cluster, "start"], 60)
    assert await _server_ready(dsn, 60), "PostgreSQL did not come back up"


async def _restart_server(dsn: str, cluster: tuple[str, str]) -> None:
    """``pg_ctlcluster restart -m fast``, and wait until the server accepts connections."""
    argv = ["pg_ctlcluster", "--skip-systemctl-redirect", *cluster, "restart", "-m", "fast"]
    for _ in range(3):
        code, out = await _run(argv, 60)
        if code == 0:
            break
        # Someone else (another test run on this server) may be restarting it too.
        await _server_ready(dsn, 30)
    assert code == 0, out
    assert await _server_ready(dsn, 30), "PostgreSQL did not come back after the restart"


async def _terminate_store_backends(dsn: str) -> int:
    """pg_terminate_backend() every server connection of this process's stores."""
    for _ in range(50):
        try:
            async with await _admin(dsn) as admin:
                cur = await admin.execute(
                    "SELECT pid, client_port FROM pg_stat_activity WHERE application_name = %s",
                    (STORE_APP,),
                )
                ours = _own_tcp_ports()
                pids = [pid for pid, port in await cur.fetchall() if port in ours]
                cur = await admin.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))"
                    " FROM unnest(%s::int[]) AS pid",
                    (pids,),
                )
                row = await cur.fetchone()
                return int(row[0]) if row else 0
        except psycopg.OperationalError:
            await asyncio.sleep(0.1)  # the server is still starting up
    raise AssertionError("could not connect to terminate backends")


@dataclass
class BurstTally:
    acked: Counter[str] = field(default_factory=Counter)
    unavailable: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)


KeyBatch = dict[str, dict[str, Any]]


async def _burst_keys(
    write: Callable[[KeyBatch], Awaitable[None]],
    session_id: str,
    stop: asyncio.Event,
    ledger: KeyLedger,
    tally: BurstTally,
) -> None:
    rng = random.Random(session_id)
    while not stop.is_set():
        data: KeyBatch = {}
        op = ledger.ops + 1
        for category in ("session", "pre-key"):
            ids = rng.sample(range(BURST_KEYSPACE), 8)
            data[category] = {
                str(k): None if rng.random() < 0.1 else {"op": op, "k": k} for k in ids
            }
        op, refs = ledger.issue(session_id, data)
        try:
            await write(data)
        except StoreUnavailableError:
            ledger.fail()
            tally.unavailable["set_keys"] += 1
        except Exception as exc:
            tally.unexpected.append(f"set_keys {session_id}: {exc!r}")
            return
        else:
            ledger.ack(op, refs)
            tally.acked["set_keys"] += 1
        await asyncio.sleep(0.02)


async def _burst_direct_creds(
    store: PostgresStore,
    session_id: str,
    stop: asyncio.Event,
    ledger: CredsLedger,
    tally: BurstTally,
) -> None:
    while not stop.is_set():
        ledger.issued += 1
        n = ledger.issued
        try:
            await store.save_creds(session_id, {"n": n, "session": session_id})
        except StoreUnavailableError:
            ledger.failed += 1
            tally.unavailable["save_creds"] += 1
        except Exception as exc:
            tally.unexpected.append(f"save_creds {session_id}: {exc!r}")
            return
        else:
            ledger.acked = max(ledger.acked, n)
            tally.acked["save_creds"] += 1
        await asyncio.sleep(0.02)


async def _burst_auth_creds(auth: AuthState, stop: asyncio.Event, tally: BurstTally) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        creds = {**CREDS, "accountSyncCounter": n, "nextPreKeyId": 1 + n // 25}
        if n % 20 == 0:
            try:
                await auth.save_creds(creds)
            except StoreUnavailableError:
                tally.unavailable["auth.save_creds"] += 1
            except Exception as exc:
                tally.unexpected.append(f"auth.save_creds {auth.session_id}: {exc!r}")
                return
            else:
                tally.acked["auth.save_creds"] += 1
        else:
            auth.creds_updated(creds)  # throttled; urgent when nextPreKeyId moves
        await asyncio.sleep(0.02)


@pytest.mark.postgres
@pytest.mark.slow
async def test_restart_burst_loses_no_acknowledged_write(pg_dsn: str, pg_schema: str) -> None:
    cluster = need_cluster()
    ledger = KeyLedger()
    direct = {f"direct-{i:02d}": CredsLedger() for i in range(BURST_DIRECT_SESSIONS)}
    tally = BurstTally()
    retries: list[RetryDetails] = []
    faults: Counter[str] = Counter()
    loop = asyncio.get_running_loop()
    try:
        async with PostgresStore(
            pg_dsn,
            schema=pg_schema,
            retry=BURST_POLICY,
            min_size=2,
            max_size=10,
            on_retry=retries.append,
        ) as store:
            auths = [
                await use_auth_state(
                    store, f"auth-{i:02d}", throttle=0.1, backup_interval=0.5, initial_delay=0.2
                )
                for i in range(BURST_AUTH_SESSIONS)
            ]
            for auth in auths:
                await auth.save_creds(dict(CREDS))
            stop = asyncio.Event()
            writers = [
                asyncio.ensure_future(_burst_auth_creds(auth, stop, tally)) for auth in auths
            ]
            writers += [
                asyncio.ensure_future(
                    _burst_keys(auth.keys.set, auth.session_id, stop, ledger, tally)
                )
                for auth in auths
            ]
            for session_id, creds_ledger in direct.items():
                writers.append(
                    asyncio.ensure_future(
                        _burst_direct_creds(store, session_id, stop, creds_ledger, tally)
                    )
                )
                write = partial(store.set_keys, session_id)
                writers.append(
                    asyncio.ensure_future(_burst_keys(write, session_id, stop, ledger, tally))
                )
            started = loop.time()
            try:
                await asyncio.sleep(1.0)
                for step in range(max(BURST_RESTARTS, BURST_TERMINATIONS)):
                    if step < BURST_TERMINATIONS:
                        faults["backends terminated"] += await _terminate_store_backends(pg_dsn)
                        faults["terminations"] += 1
                        await asyncio.sleep(1.0)
                    if step < BURST_RESTARTS:
                        await _restart_server(pg_dsn, cluster)
                        faults["restarts"] += 1
                        await asyncio.sleep(1.5)
            finally:
                stop.set()
                # A writer finishes its current call, bounded by the retry budget.
                await _bounded(
                    asyncio.gather(*writers, return_exceptions=True),
                    BURST_POLICY.budget + 10,
                    "stopping the writers",
                )
                await _ensure_server_up(pg_dsn, cluster)
            burst = loop.time() - started
            throttled_runs = sum(auth.throttler.runs for auth in auths)
            for auth in auths:
                await _bounded(
                    auth.aclose(deadline=BURST_POLICY.budget),
                    BURST_POLICY.budget + 5,
                    f"aclose of {auth.session_id}",
                )
    finally:
        await _ensure_server_up(pg_dsn, cluster)

    assert not tally.unexpected, tally.unexpected[:5]
    async with await _admin(pg_dsn) as admin:
        stored_keys = await _stored_keys(admin, pg_schema)
        stored_creds = await _stored_creds(admin, pg_schema)
    lost = ledger.lost(stored_keys)
    for auth in auths:
        if auth.pending or stored_creds.get(auth.session_id) != auth.creds:
            lost.append(
                f"{auth.session_id}: stored creds {stored_creds.get(auth.session_id)!r} are not "
                f"the last ones set {auth.creds!r} (pending={auth.pending})"
            )
    for session_id, creds_ledger in direct.items():
        problem = creds_ledger.check(stored_creds.get(session_id))
        if problem:
            lost.append(f"{session_id}: {problem}")
    acked = sum(tally.acked.values()) + throttled_runs
    print(
        f"\nrestart burst: {acked:,} writes acknowledged ({ledger.acked_ops:,} key batches, "
        f"{tally.acked['save_creds']:,} creds saves, {tally.acked['auth.save_creds']:,} auth "
        f"saves, {throttled_runs:,} throttled saves) in {burst:.1f}s across "
        f"{BURST_AUTH_SESSIONS + BURST_DIRECT_SESSIONS} sessions, "
        f"{sum(tally.unavailable.values())} unavailable, {faults['restarts']} restarts, "
        f"{faults['terminations']} terminations ({faults['backends terminated']} backends), "
        f"{len(retries)} retries, {len(lost)} lost"
    )
    assert faults["restarts"] == BURST_RESTARTS
    assert faults["backends terminated"] >= BURST_TERMINATIONS
    assert retries, "the faults should have cost retries"
    assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"


# -- 2. network faults through the proxy, with an outage longer than the budget ----------

NET_POLICY = RetryPolicy(attempts=3, timeout=0.5, backoff=0.2, max_backoff=0.5)
NET_MARGIN = 1.0
NET_THROTTLE = 0.3
#: Far longer than one call may block: several calls give up during it.
NET_OUTAGE = 3 * NET_POLICY.budget
#: Once the path is healthy, the save in flight may still fail, but the
#: throttle's next automatic retry (at least 1 s later) must land.
NET_RECOVERY = NET_POLICY.budget + max(NET_THROTTLE, 1.0) + NET_MARGIN
#: The one-way latency of the "slow" outage: every attempt times out.
NET_SLOW_DELAY = 1.5


@dataclass
class NetResult:
    mode: str
    calls: int = 0
    acked: int = 0
    unavailable: int = 0
    slowest: float = 0.0
    faults: int = 0
    lag: float | None = None
    lost: int = 0
    problems: list[str] = field(default_factory=list)


async def _network_scenario(mode: str, dsn: str, schema: str) -> NetResult:
    res = NetResult(mode)
    bound = NET_POLICY.budget + NET_MARGIN
    dead = mode != "cut"  # refuse, black hole and the slow outage let nothing through
    sid, direct = f"net-{mode}", f"net-{mode}-direct"
    ledger, direct_ledger = KeyLedger(), CredsLedger()
    loop = asyncio.get_running_loop()

    async def timed(name: str, aw: Awaitable[Any], *, expect: str) -> bool:
        res.calls += 1
        started = loop.time()
        try:
            await _bounded(aw, bound + 5, f"{mode}: {name}")
        except StoreUnavailableError:
            ok = False
            res.unavailable += 1
        else:
            ok = True
            res.acked += 1
        elapsed = loop.time() - started
        res.slowest = max(res.slowest, elapsed)
        if elapsed > bound:
            res.problems.append(f"{name} took {elapsed:.2f}s, bound {bound:.2f}s")
        if expect == "fail" and ok:
            res.problems.append(f"{name} succeeded through a dead path")
        if expect == "ok" and not ok:
            res.problems.append(f"{name} failed on a working path")
        return ok

    async def write_keys(k: int, *, expect: str, after: bool = False) -> None:
        data: dict[str, dict[str, Any]] = (
            {"sender-key": {f"group-{k % 3}": {"k": k}}}
            if after
            else {"session": {f"peer-{k % 6}.0": {"k": k}}, "pre-key": {str(k % 4): {"k": k}}}
        )
        op, refs = ledger.issue(sid, data)
        if await timed("set_keys", auth.keys.set(data), expect=expect):
            ledger.ack(op, refs)
        else:
            ledger.fail()

    async def save_direct(*, expect: str) -> None:
        direct_ledger.issued += 1
        n = direct_ledger.issued
        if await timed("save_creds", store.save_creds(direct, {"n": n}), expect=expect):
            direct_ledger.acked = n
        else:
            direct_ledger.failed += 1

    with _proxy_for(dsn) as proxy:
        store = PostgresStore(proxy.dsn(dsn), schema=schema, retry=NET_POLICY, max_size=4)
        async with _opened(store, bound + 5):
            auth = await _bounded(
                use_auth_state(store, sid, throttle=NET_THROTTLE, backup_interval=None),
                bound,
                "use_auth_state",
            )
            creds = dict(CREDS)
            await _bounded(auth.save_creds(creds), bound, "first save")
            await write_keys(0, expect="ok")
            await save_direct(expect="ok")
            k = 0

            if mode == "slow":
                # Slower than usual but within the timeout: everything still works.
                proxy.delay(0.05)
                res.faults += 1
                for _ in range(4):
                    k += 1
                    await write_keys(k, expect="ok")
                    await save_direct(expect="ok")
                    await timed("load_creds", store.load_creds(sid), expect="ok")

            cutter: asyncio.Future[None] | None = None
            if mode == "cut":

                async def cut_storm() -> None:
                    while True:
                        proxy.cut()
                        res.faults += 1
                        await asyncio.sleep(0.05)

                cutter = asyncio.ensure_future(cut_storm())
            elif mode == "refuse":
                proxy.refuse()
                res.faults += 1
            elif mode == "blackhole":
                proxy.blackhole()
                res.faults += 1
            else:
                proxy.delay(NET_SLOW_DELAY)
                res.faults += 1
            outage_started = loop.time()
            expect = "fail" if dead else "either"
            flushed = False
            try:
                while loop.time() - outage_started < NET_OUTAGE:
                    k += 1
                    creds = {**creds, "accountSyncCounter": k}
                    auth.creds_updated(creds)  # throttled, fails in the background
                    await asyncio.gather(
                        write_keys(k, expect=expect),
                        save_direct(expect=expect),
                        timed(
                            "get_keys", store.get_keys(sid, "pre-key", ["0", "1"]), expect=expect
                        ),
                    )
                    if dead and not flushed and loop.time() - outage_started > NET_POLICY.budget:
                        flushed = True
                        await timed("auth.flush", auth.flush(), expect="fail")
                        if not auth.pending:
                            res.problems.append("the unsaved creds are no longer pending")
            finally:
                if cutter is not None:
                    cutter.cancel()
                    await asyncio.gather(cutter, return_exceptions=True)
            if dead and not auth.pending:
                res.problems.append("creds set during the outage are not pending at its end")
            proxy.restore()
            restored = loop.time()

            # A call made once the path is back must not be failed by the outage.
            await asyncio.sleep(0.2)
            await save_direct(expect="ok")
            while auth.pending:
                if loop.time() - restored > NET_RECOVERY + 30:
                    break
                await asyncio.sleep(0.05)
            if auth.pending:
                res.problems.append("creds set during the outage never landed")
            else:
                res.lag = loop.time() - restored
                if res.lag > NET_RECOVERY:
                    res.problems.append(
                        f"creds set during the outage landed {res.lag:.1f}s after recovery "
                        f"(bound {NET_RECOVERY:.1f}s)"
                    )
            # The application goes on after recovery: new keys and creds. (Other key
            # ids than during the outage: statements the slow path still holds may
            # land late and overwrite them, the subject of
            # test_signal_keys_never_go_back_to_an_older_write.)
            for _ in range(3):
                k += 1
                await write_keys(k, expect="ok", after=True)
            creds = {**creds, "accountSyncCounter": k}
            await timed("auth.save_creds", auth.save_creds(creds), expect="ok")
            # Bytes the slow path still holds reach the server now (at most its delay).
            await asyncio.sleep(NET_SLOW_DELAY + 0.5)
            await _bounded(auth.aclose(deadline=bound), bound + 5, "aclose")
        res.problems += _pool_is_released(store)

    async with await _admin(dsn) as admin:
        stored_keys = await _stored_keys(admin, schema)
        stored_creds = await _stored_creds(admin, schema)
    lost = ledger.lost({ref: v for ref, v in stored_keys.items() if ref[0] == sid})
    if stored_creds.get(sid) != auth.creds:
        lost.append(f"{sid}: stored creds {stored_creds.get(sid)!r}, last set {auth.creds!r}")
    problem = direct_ledger.check(stored_creds.get(direct))
    if problem:
        lost.append(f"{direct}: {problem}")
    res.lost = len(lost)
    res.problems += [f"acknowledged write lost: {line}" for line in lost]
    return res


@pytest.mark.postgres
@pytest.mark.proxy
async def test_network_faults_fail_within_the_bound_and_lose_nothing(
    pg_dsn: str, pg_schema: str
) -> None:
    modes = ("cut", "refuse", "blackhole", "slow")
    # The scenarios share nothing but the schema, so they run side by side.
    async with PostgresStore(pg_dsn, schema=pg_schema):
        pass  # create the tables once, before four stores race to
    results = await _bounded(
        asyncio.gather(*(_network_scenario(mode, pg_dsn, pg_schema) for mode in modes)),
        120,
        "the network scenarios",
    )
    parts = [
        f"{res.mode} {res.calls} calls/{res.faults} faults/{res.unavailable} unavailable/"
        f"landed {f'{res.lag:.1f}s' if res.lag is not None else 'never'}"
        for res in results
    ]
    print(
        f"\nnetwork faults over {NET_OUTAGE:.1f}s outages: {', '.join(parts)}; "
        f"{sum(r.calls for r in results)} calls, {sum(r.acked for r in results)} acknowledged, "
        f"slowest {max(r.slowest for r in results):.2f}s (bound "
        f"{NET_POLICY.budget + NET_MARGIN:.2f}s), pending creds landed after recovery, "
        f"{sum(r.lost for r in results)} lost"
    )
    problems = [f"{res.mode}: {p}" for res in results for p in res.problems]
    assert not problems, "\n".join(problems)


# -- 3. crash atomicity: a writer process SIGKILLed mid-batch --------------------------

CRASH_KILLS = 5


def _sqlite_batches(path: Path) -> dict[int, int]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT json_extract(CAST(value AS TEXT), '$.batch'), count(*) FROM wa_keys"
            " WHERE session_id = ? GROUP BY 1",
            (fault_writer.SESSION,),
        ).fetchall()
    conn.close()
    return {int(b): int(n) for b, n in rows}


async def _pg_batches(dsn: str, schema: str) -> dict[int, int]:
    async with await _admin(dsn) as admin:
        cur = await admin.execute(
            sql.SQL(
                "SELECT (convert_from(value, 'UTF8')::jsonb ->> 'batch')::int, count(*)"
                " FROM {} WHERE session_id = %s GROUP BY 1"
            ).format(sql.Identifier(schema, "wa_keys")),
            (fault_writer.SESSION,),
        )
        return {int(b): int(n) for b, n in await cur.fetchall()}


@pytest.mark.parametrize("engine", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_sigkilled_writer_leaves_whole_batches(
    engine: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    seed = int(os.environ.get("WA_FAULTS_SEED", "1729"))
    rng = random.Random(seed)
    if engine == "postgres":
        dsn: str = request.getfixturevalue("pg_dsn")
        schema: str = request.getfixturevalue("pg_schema")
        args = ["postgres", dsn, schema]
    else:
        db = tmp_path / "crash.db"
        args = ["sqlite", str(db)]
    next_batch = 0
    acked: list[int] = []
    mid_batch = 0
    for _ in range(CRASH_KILLS):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WRITER),
            *args,
            str(next_batch),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        try:
            ready = await _bounded(proc.stdout.readline(), 30, "the writer starting")
            assert ready == b"ready\n", ready
            await asyncio.sleep(rng.uniform(0.05, 0.6))
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGKILL)
            out, err = await _bounded(proc.communicate(), 10, "the killed writer exiting")
        assert proc.returncode == -signal.SIGKILL, err.decode(errors="replace")
        lines = out.decode().split()
        begun = [int(n) for word, n in zip(lines[::2], lines[1::2], strict=True) if word == "begin"]
        acks = [int(n) for word, n in zip(lines[::2], lines[1::2], strict=True) if word == "ack"]
        acked += acks
        if begun and (not acks or begun[-1] > acks[-1]):
            mid_batch += 1  # killed while a batch was in flight
        next_batch = (begun[-1] + 1) if begun else next_batch

    if engine == "postgres":
        present = await _pg_batches(dsn, schema)
    else:
        present = await asyncio.to_thread(_sqlite_batches, db)
    torn = {b: n for b, n in present.items() if n != fault_writer.BATCH_SIZE}
    lost = []
    for slot in range(fault_writer.SLOTS):
        in_slot = [b for b in present if b % fault_writer.SLOTS == slot]
        acked_in_slot = [b for b in acked if b % fault_writer.SLOTS == slot]
        if acked_in_slot and (not in_slot or max(in_slot) < max(acked_in_slot)):
            lost.append(
                f"slot {slot}: holds {in_slot}, batch {max(acked_in_slot)} was acknowledged"
            )
    print(
        f"\ncrash atomicity ({engine}): {next_batch} batches of {fault_writer.BATCH_SIZE:,} "
        f"keys begun, {len(acked)} acknowledged, {CRASH_KILLS} SIGKILLs ({mid_batch} with a "
        f"batch in flight), {len(present)} batches present, {len(torn)} torn, {len(lost)} lost"
    )
    assert not torn, f"partially written batches (batch: rows): {torn}"
    assert not lost, lost
    assert len(acked) >= CRASH_KILLS, "the writer should have completed some batches"


# -- 4. ordering under concurrency, retries and delays ---------------------------------

ORDER_POLICY = RetryPolicy(attempts=8, timeout=0.4, backoff=0.05, max_backoff=0.2)
#: A stall: one-way latency far above the attempt timeout, lifted soon after.
ORDER_STALL_DELAY = 1.0
ORDER_WINDOW = 3.5

_AUDIT = """
CREATE TABLE {audit} (
    seq bigserial PRIMARY KEY,
    at double precision NOT NULL DEFAULT extract(epoch FROM clock_timestamp()),
    tbl text NOT NULL,
    session_id text NOT NULL,
    category text NOT NULL,
    key_id text NOT NULL,
    value bytea
);
CREATE FUNCTION {func}() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r jsonb := to_jsonb(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END);
BEGIN
    INSERT INTO {audit} (tbl, session_id, category, key_id, value) VALUES (
        TG_TABLE_NAME, r->>'session_id', coalesce(r->>'category', ''),
        coalesce(r->>'key_id', ''), CASE WHEN TG_OP = 'DELETE' THEN NULL ELSE NEW.value END
    );
    RETURN NULL;
END $$;
CREATE FUNCTION {arrival}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {audit} (tbl, session_id, category, key_id, value)
        VALUES ('arrival:' || TG_TABLE_NAME, NEW.session_id, '', '', NEW.value);
    RETURN NEW;
END $$;
CREATE TRIGGER fault_arrival BEFORE INSERT ON {creds}
    FOR EACH ROW EXECUTE FUNCTION {arrival}();
CREATE TRIGGER fault_audit AFTER INSERT OR UPDATE OR DELETE ON {creds}
    FOR EACH ROW EXECUTE FUNCTION {func}();
CREATE TRIGGER fault_audit AFTER INSERT OR UPDATE OR DELETE ON {keys}
    FOR EACH ROW EXECUTE FUNCTION {func}();
"""


@dataclass
class AuditRow:
    at: float
    table: str
    ref: tuple[str, str, str]
    value: Any


async def _install_audit(dsn: str, schema: str) -> None:
    """Record every row change of the store's tables, with the server's clock.

    The final state only shows the last write to a key; the audit also shows
    an old write that landed after a newer one was acknowledged and was
    overwritten again later. Creds statements are also recorded as they arrive
    ("arrival:wa_creds"), applied or not, to count the late ones.
    """
    async with PostgresStore(dsn, schema=schema):
        pass  # the tables
    async with await _admin(dsn) as admin:
        await admin.execute(
            sql.SQL(_AUDIT).format(
                audit=sql.Identifier(schema, "fault_audit"),
                func=sql.Identifier(schema, "fault_audit"),
                arrival=sql.Identifier(schema, "fault_arrival"),
                creds=sql.Identifier(schema, "wa_creds"),
                keys=sql.Identifier(schema, "wa_keys"),
            )
        )


async def _read_audit(dsn: str, schema: str) -> list[AuditRow]:
    async with await _admin(dsn) as admin:
        cur = await admin.execute(
            sql.SQL(
                "SELECT at, tbl, session_id, category, key_id, value FROM {} ORDER BY seq"
            ).format(sql.Identifier(schema, "fault_audit"))
        )
        rows = await cur.fetchall()
    return [
        AuditRow(at, tbl, (s, c, k), None if v is None else _decode(v))
        for at, tbl, s, c, k, v in rows
    ]


async def _chaos(
    proxy: Proxy, rng: random.Random, stop: asyncio.Event, counts: Counter[str]
) -> None:
    """Cut, slow down and stall the path at random moments until ``stop``.

    A stall makes an attempt time out while its statement is still on its way:
    the retry and the calls after it run on a fast path again, and the old
    statement reaches the server afterwards, as packets held up in a network do.
    """
    try:
        while not stop.is_set():
            roll = rng.random()
            if roll < 0.15:
                proxy.cut()
                counts["cuts"] += 1
            elif roll < 0.45:
                # Slower, but mostly still within the attempt timeout.
                proxy.delay(rng.choice([0.0, 0.0, 0.02, 0.05, 0.1]))
                counts["delays"] += 1
            elif roll < 0.7:
                proxy.delay(ORDER_STALL_DELAY)
                counts["stalls"] += 1
                # Shorter than the attempt timeout: a hiccup, after which held
                # packets still arrive (as TCP retransmits them).
                await asyncio.sleep(rng.uniform(0.1, 0.35))
                proxy.delay(0.0)
            await asyncio.sleep(rng.uniform(0.05, 0.3))
    finally:
        proxy.restore()


@pytest.mark.postgres
@pytest.mark.proxy
async def test_creds_never_go_back_to_an_older_version(
    proxy: Proxy, pg_dsn: str, pg_schema: str
) -> None:
    seed = int(os.environ.get("WA_FAULTS_SEED", "20240611"))
    rng = random.Random(seed + 1)  # when each call starts
    sessions, calls_per_session = 3, 24
    retries: list[RetryDetails] = []
    counts: Counter[str] = Counter()
    issued = dict.fromkeys(range(sessions), 0)
    # (session, n, wall-clock time of the acknowledgement)
    acks: list[tuple[str, int, float]] = []
    await _install_audit(pg_dsn, pg_schema)

    async def save(store: PostgresStore, session: int, start_after: float) -> None:
        await asyncio.sleep(start_after)
        # save_creds takes the version synchronously, in the same step as this count.
        n = issued[session]
        issued[session] += 1
        try:
            await store.save_creds(f"order-{session}", {"n": n})
        except StoreUnavailableError:
            counts["unacknowledged"] += 1
            return
        acks.append((f"order-{session}", n, time.time()))

    async with PostgresStore(
        proxy.dsn(pg_dsn),
        schema=pg_schema,
        retry=ORDER_POLICY,
        # Idle connections, as a bot has: a retry need not wait for a new one.
        min_size=10,
        max_size=10,
        on_retry=retries.append,
    ) as store:
        await store.pool.wait(timeout=10)
        stop = asyncio.Event()
        # The chaos draws from its own generator: its schedule depends on the seed only.
        chaos = asyncio.ensure_future(_chaos(proxy, random.Random(seed), stop, counts))
        calls = [
            save(store, session, rng.uniform(0.0, ORDER_WINDOW))
            for session in range(sessions)
            for _ in range(calls_per_session)
        ]
        try:
            await _bounded(
                asyncio.gather(*calls), ORDER_WINDOW + ORDER_POLICY.budget + 5, "the saves"
            )
        finally:
            stop.set()
            await _bounded(chaos, 5, "the chaos task")
        # Statements the proxy still holds reach the server now.
        await asyncio.sleep(ORDER_STALL_DELAY + 0.3)
        finals = {
            session_id: await store.load_creds(session_id)
            for session_id in {session_id for session_id, _, _ in acks}
        }
    records = await _read_audit(pg_dsn, pg_schema)
    audit = [row for row in records if row.table == "wa_creds"]
    # Statements that reached the server after a newer save had been acknowledged:
    # what the version check is there to refuse.
    late = sum(
        1
        for row in records
        if row.table == "arrival:wa_creds"
        and any(sid == row.ref[0] and n > row.value["n"] and at < row.at for sid, n, at in acks)
    )
    regressions = []
    last: dict[str, int] = {}
    for row in audit:
        session_id, n = row.ref[0], row.value["n"]
        if n <= last.get(session_id, -1):
            regressions.append(f"{session_id}: version {n} written after {last[session_id]}")
        last[session_id] = max(n, last.get(session_id, -1))
    for session_id, n, acked_at in acks:
        older = [r.value["n"] for r in audit if r.ref[0] == session_id and r.at > acked_at]
        if any(m < n for m in older):
            regressions.append(f"{session_id}: {min(older)} written after {n} was acknowledged")
        final = finals[session_id]
        if final is None or final["n"] < n:
            regressions.append(f"{session_id}: ends with {final}, {n} was acknowledged")
    print(
        f"\ncreds ordering (seed {seed}): {sessions * calls_per_session} concurrent saves of "
        f"{sessions} sessions, {len(acks)} acknowledged, {counts['unacknowledged']} unavailable, "
        f"{len(retries)} retries, {counts['cuts']} cuts, {counts['delays']} delays, "
        f"{counts['stalls']} stalls, {late} stale statements arrived late, "
        f"{len(regressions)} regressions"
    )
    assert len(acks) > sessions * calls_per_session // 2
    assert retries, "the chaos should have forced retries"
    assert late, "the stalls should have delivered stale statements after newer saves"
    assert not regressions, regressions[:5]


@pytest.mark.postgres
@pytest.mark.proxy
async def test_signal_keys_never_go_back_to_an_older_write(
    proxy: Proxy, pg_dsn: str, pg_schema: str
) -> None:
    seed = int(os.environ.get("WA_FAULTS_SEED", "424242"))
    sessions, keyspace = 3, 6
    retries: list[RetryDetails] = []
    counts: Counter[str] = Counter()
    ledger = KeyLedger()
    # (op, the keys it touched, wall-clock time of the acknowledgement)
    acks: list[tuple[int, list[Any], float]] = []
    await _install_audit(pg_dsn, pg_schema)

    async def writer(store: PostgresStore, session_id: str, stop: asyncio.Event) -> None:
        # One session's calls are sequential: each is issued after the previous returned.
        rng = random.Random(f"{seed}-{session_id}")
        while not stop.is_set():
            if ledger.ops and rng.random() < 0.05:
                op, refs = ledger.issue_clear(session_id)
                call: Awaitable[Any] = store.clear_keys(session_id)
            else:
                op = ledger.ops + 1
                data = {
                    "session": {
                        f"peer-{k}.0": None if rng.random() < 0.1 else {"op": op, "k": k}
                        for k in rng.sample(range(keyspace), 3)
                    }
                }
                op, refs = ledger.issue(session_id, data)
                call = store.set_keys(session_id, data)
            try:
                await call
            except StoreUnavailableError:
                ledger.fail()
            else:
                ledger.ack(op, refs)
                acks.append((op, refs, time.time()))
            await asyncio.sleep(rng.uniform(0.0, 0.03))

    async with PostgresStore(
        proxy.dsn(pg_dsn),
        schema=pg_schema,
        retry=ORDER_POLICY,
        # Idle connections, as a bot has: a retry need not wait for a new one.
        min_size=10,
        max_size=10,
        on_retry=retries.append,
    ) as store:
        await store.pool.wait(timeout=10)
        stop = asyncio.Event()
        # The chaos draws from its own generator: its schedule depends on the seed only.
        chaos = asyncio.ensure_future(_chaos(proxy, random.Random(seed), stop, counts))
        writers = [
            asyncio.ensure_future(writer(store, f"ordered-{i}", stop)) for i in range(sessions)
        ]
        try:
            await asyncio.sleep(ORDER_WINDOW)
        finally:
            stop.set()
            await _bounded(
                asyncio.gather(*writers, chaos), ORDER_POLICY.budget + 5, "the key writers"
            )
        await asyncio.sleep(ORDER_STALL_DELAY + 0.3)  # statements still held land now
    audit = [row for row in await _read_audit(pg_dsn, pg_schema) if row.table == "wa_keys"]
    async with await _admin(pg_dsn) as admin:
        stored = await _stored_keys(admin, pg_schema)
    lost = ledger.lost(stored)
    # Every row change after an acknowledgement must come from that op or a later one.
    acked_at: dict[tuple[str, str, str], list[tuple[float, int]]] = defaultdict(list)
    for op, refs, at in acks:
        for ref in refs:
            acked_at[ref].append((at, op))
    deleted_by = {
        ref: {op for op, value in history if value is None}
        for ref, history in ledger.issued.items()
    }
    overwritten = []
    for row in audit:
        before = [(op, at) for at, op in acked_at[row.ref] if at < row.at]
        if not before:
            continue
        floor, floor_at = max(before)
        if row.value is None:
            if not any(op >= floor for op in deleted_by[row.ref]):
                overwritten.append(
                    f"{row.ref}: deleted by an op older than {floor}, "
                    f"{row.at - floor_at:.2f}s after op {floor} was acknowledged"
                )
        elif row.value["op"] < floor:
            overwritten.append(
                f"{row.ref}: op {row.value['op']} landed {row.at - floor_at:.2f}s after "
                f"op {floor} was acknowledged"
            )
    print(
        f"\nkeys ordering (seed {seed}): {ledger.ops} key writes by {sessions} sequential "
        f"writers, {ledger.acked_ops} acknowledged, {ledger.failed_ops} unavailable, "
        f"{len(retries)} retries, {counts['cuts']} cuts, {counts['delays']} delays, "
        f"{counts['stalls']} stalls; {len(overwritten)} acknowledged keys overwritten by an "
        f"older write that landed late, {len(lost)} still lost at the end"
    )
    assert retries, "the chaos should have forced retries"
    assert not overwritten, (
        f"{len(overwritten)} acknowledged key writes overwritten: {overwritten[:5]}"
    )
    assert not lost, f"{len(lost)} acknowledged key writes lost, e.g. {lost[:5]}"


# -- 5. cancellation and resource hygiene -------------------------------------------------


@pytest.mark.postgres
@pytest.mark.proxy
async def test_cancelling_a_call_on_a_dead_network_is_prompt(pg_dsn: str, pg_schema: str) -> None:
    """``wait_for(call, t)`` must give control back about ``t`` later, not seconds after.

    Cancelling is how a caller bounds a call itself (``asyncio.wait_for``, a
    shutdown cancelling its tasks); on a dead network it must not wait for the
    network either, and the bound allows up to the attempt timeout.
    """
    async with PostgresStore(pg_dsn, schema=pg_schema):
        pass

    async def cancel_under(mode: str) -> float:
        with _proxy_for(pg_dsn) as proxy:
            store = PostgresStore(proxy.dsn(pg_dsn), schema=pg_schema, retry=NET_POLICY)
            async with _opened(store, 10):
                sid = f"cancel-{mode}"
                await _bounded(store.save_creds(sid, {"n": 0}), 5, "a save")
                if mode == "blackhole":
                    proxy.blackhole()
                else:
                    proxy.delay(NET_SLOW_DELAY)
                loop = asyncio.get_running_loop()
                started = loop.time()
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(store.save_creds(sid, {"n": 1}), 0.2)
                took = loop.time() - started
                proxy.restore()
                # The cancelled call did not damage the store.
                await _bounded(store.save_creds(sid, {"n": 2}), 5, "a save after recovery")
            assert not _pool_is_released(store)
        return took

    took = await _bounded(
        asyncio.gather(cancel_under("blackhole"), cancel_under("slow")), 60, "the cancellations"
    )
    bound = NET_POLICY.timeout + 0.5
    print(
        f"\ncancellation: wait_for(save_creds, 0.2s) returned after {took[0]:.2f}s (black hole) "
        f"and {took[1]:.2f}s (slow network); bound {bound:.2f}s"
    )
    assert max(took) < bound, f"cancelling took {took[0]:.2f}s / {took[1]:.2f}s"


async def _churn(store: PostgresStore, auth: AuthState) -> int:
    done = 0
    for n in range(10):
        auth.creds_updated({**CREDS, "accountSyncCounter": n})
        try:
            await store.set_keys(auth.session_id, {"session": {str(n): {"n": n}}})
            await store.get_keys(auth.session_id, "session", [str(n)])
        except StoreUnavailableError:
            continue
        done += 2
    return done


@pytest.mark.postgres
async def test_churn_leaves_no_connection_task_or_descriptor_behind(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """Stores opened, broken and closed in every way; afterwards nothing is left.

    Measured inside the test (the autouse fixture checks every test again):
    closed pools hold and await no connection, the server has none of this
    process's store connections, only this task is left on the loop, and the
    descriptor count is what it was (tolerance 0).
    """
    gc.collect()
    fds_before = _fd_count()
    stores: list[PostgresStore] = []
    ops = faults = 0
    async with PostgresStore(pg_dsn, schema=pg_schema):
        pass
    with _proxy_for(pg_dsn) as proxy:
        # Stores at work whose connections are cut, black-holed and refused.
        for rnd, fault in enumerate(("cut", "blackhole", "refuse")):
            batch = [
                PostgresStore(
                    proxy.dsn(pg_dsn), schema=pg_schema, retry=NET_POLICY, min_size=2, max_size=4
                )
                for _ in range(4)
            ]
            stores += batch
            await _bounded(asyncio.gather(*(s.open() for s in batch)), 10, "opening")
            auths = [
                await use_auth_state(
                    store, f"churn-{rnd}-{i}", throttle=0.05, backup_interval=0.1, initial_delay=0
                )
                for i, store in enumerate(batch)
            ]
            running = asyncio.gather(*map(_churn, batch, auths))
            await asyncio.sleep(0.02)
            getattr(proxy, fault)()
            faults += 1
            await asyncio.sleep(0.6)
            proxy.restore()
            ops += sum(await _bounded(running, 30, "the churn work"))
            for auth in auths:
                await _bounded(auth.aclose(deadline=5), 10, "aclose")
            await _bounded(asyncio.gather(*(s.close() for s in batch)), 10, "closing")
        # Opens that fail: the path is refused; each closes its own pool.
        proxy.refuse()
        failing = [
            PostgresStore(
                proxy.dsn(pg_dsn),
                schema=pg_schema,
                retry=RetryPolicy(attempts=2, timeout=0.3, backoff=0.1),
            )
            for _ in range(3)
        ]
        stores += failing
        outcomes = await _bounded(
            asyncio.gather(*(s.open() for s in failing), return_exceptions=True), 10, "opens"
        )
        assert all(isinstance(o, StoreUnavailableError) for o in outcomes), outcomes
        faults += len(failing)
        proxy.restore()
    # SQLite stores, opened and closed with work and an auth state.
    for i in range(5):
        async with SQLiteStore(tmp_path / "churn.db") as lite:
            auth = await use_auth_state(lite, f"lite-{i}", throttle=0.05, backup_interval=0.1)
            await auth.save_creds({**CREDS, "accountSyncCounter": i})
            await auth.keys.set({"session": {"a": {"i": i}}})
            await auth.aclose()
            ops += 2

    problems = [
        f"store {n}: {p}" for n, store in enumerate(stores) for p in _pool_is_released(store)
    ]
    backends = await _wait_no_backends(pg_dsn)
    if backends:
        problems.append(f"{backends} connections left on the server")
    for _ in range(5):
        await asyncio.sleep(0)
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    if tasks:
        problems.append(f"{len(tasks)} tasks left: {tasks[:3]}")
    gc.collect()
    fds = _fd_count() - fds_before
    if fds:
        problems.append(f"{fds:+d} file descriptors")
    print(
        f"\nhygiene: {len(stores) + 5} stores opened and closed, {ops} operations, {faults} "
        f"faults; left behind: {backends} connections, {len(tasks)} tasks, {fds} descriptors"
    )
    assert not problems, problems
