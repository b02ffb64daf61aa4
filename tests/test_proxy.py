"""Tests for the fault-injecting TCP proxy, against a real PostgreSQL server."""

from __future__ import annotations

import gc
import os
import socket
import threading
import time
from collections.abc import Callable

import psycopg
import pytest

from . import proxy as proxy_module
from .proxy import Proxy

# Bound by assignment so pytest finds the fixture here whether or not
# conftest.py imports it too (`from .proxy import proxy` would trip ruff F811).
proxy = proxy_module.proxy

pytestmark = pytest.mark.proxy


def _connect(dsn: str, timeout: int = 2) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(dsn, connect_timeout=timeout, autocommit=True)


def _select_one(conn: psycopg.Connection[tuple[object, ...]]) -> object:
    row = conn.execute("SELECT 1").fetchone()
    assert row is not None
    return row[0]


def _wait_until(cond: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def _fd_count() -> int:
    # A failed psycopg connect can keep its client socket alive in a reference
    # cycle until the next GC pass; that is not the proxy's leak.
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


class _Bg:
    """Run a blocking call in a thread, keeping its result or exception."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self.result: object = None
        self.error: BaseException | None = None
        self._fn = fn
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:
            self.error = exc

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout``; True if the call has finished."""
        self.thread.join(timeout)
        return not self.thread.is_alive()


def test_forwards_queries_and_counts_connections(proxy: Proxy, pg_dsn: str) -> None:
    assert proxy.port > 0
    with _connect(proxy.dsn(pg_dsn)) as conn:
        assert _select_one(conn) == 1
        assert proxy.connections_total == 1
        assert proxy.connections_open == 1
    # The client's close reaches the proxy asynchronously.
    assert _wait_until(lambda: proxy.connections_open == 0)
    assert proxy.connections_total == 1


def test_cut_breaks_open_connection_and_keeps_accepting(proxy: Proxy, pg_dsn: str) -> None:
    dsn = proxy.dsn(pg_dsn)
    with _connect(dsn) as conn:
        assert _select_one(conn) == 1
        proxy.cut()
        assert proxy.connections_open == 0
        with pytest.raises(psycopg.OperationalError):
            _select_one(conn)
    with _connect(dsn) as conn:
        assert _select_one(conn) == 1
    assert proxy.connections_total == 2


def test_refuse_fails_fast_and_restore_recovers(proxy: Proxy, pg_dsn: str) -> None:
    dsn = proxy.dsn(pg_dsn)
    port = proxy.port
    with _connect(dsn) as conn:
        proxy.refuse()
        with pytest.raises(psycopg.OperationalError):
            _select_one(conn)
    t0 = time.monotonic()
    with pytest.raises(psycopg.OperationalError, match="refused"):
        _connect(dsn)
    assert time.monotonic() - t0 < 1.0
    proxy.restore()
    assert proxy.port == port
    with _connect(dsn) as conn:
        assert _select_one(conn) == 1


def test_blackhole_hangs_query_until_stop(proxy: Proxy, pg_dsn: str) -> None:
    conn = _connect(proxy.dsn(pg_dsn))
    try:
        assert _select_one(conn) == 1
        proxy.blackhole()
        assert proxy.connections_open == 1  # nothing was closed
        bg = _Bg(lambda: _select_one(conn))
        assert not bg.join(1.0), "query returned through a blackhole"
        t0 = time.monotonic()
        proxy.stop()
        assert time.monotonic() - t0 < 2.0
        # stop() resets the connection, which frees the stuck client.
        assert bg.join(3.0)
        assert isinstance(bg.error, psycopg.OperationalError)
    finally:
        conn.close()


def test_blackhole_new_connect_times_out(proxy: Proxy, pg_dsn: str) -> None:
    proxy.blackhole()
    # The handshake completes in the kernel backlog, so the client waits for
    # the server's reply; psycopg rounds connect_timeout up to 2 s, like libpq.
    t0 = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        _connect(proxy.dsn(pg_dsn), timeout=1)
    elapsed = time.monotonic() - t0
    assert 0.9 < elapsed < 3.5
    assert proxy.connections_total == 0


def test_blackhole_connect_is_accepted_by_kernel(proxy: Proxy) -> None:
    proxy.blackhole()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=1) as sock:
        sock.settimeout(0.3)
        sock.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")  # SSLRequest
        with pytest.raises(socket.timeout):
            sock.recv(1)


def test_restore_after_blackhole_delivers_held_data(proxy: Proxy, pg_dsn: str) -> None:
    dsn = proxy.dsn(pg_dsn)
    with _connect(dsn) as conn:
        proxy.blackhole()
        query = _Bg(lambda: _select_one(conn))
        pending_connect = _Bg(lambda: _connect(dsn, timeout=5).close())
        assert not query.join(0.3)
        assert not pending_connect.join(0)
        proxy.restore()
        assert query.join(10.0)
        assert query.error is None
        assert query.result == 1
        assert pending_connect.join(10.0)
        assert pending_connect.error is None


def test_delay_adds_latency_per_direction(proxy: Proxy, pg_dsn: str) -> None:
    with _connect(proxy.dsn(pg_dsn)) as conn:
        proxy.delay(0.05)
        t0 = time.monotonic()
        for _ in range(5):
            assert _select_one(conn) == 1
        delayed = time.monotonic() - t0
        proxy.delay(0)
        t0 = time.monotonic()
        for _ in range(5):
            assert _select_one(conn) == 1
        undelayed = time.monotonic() - t0
    assert delayed >= 0.5
    assert delayed < 5.0
    assert undelayed < 1.0


def test_delay_keeps_order_and_throughput(proxy: Proxy, pg_dsn: str) -> None:
    # ~3 MB reaches the proxy in ~50 reads, so sleeping the delay per chunk
    # would take ~5 s; any reordering would corrupt the stream or the payload.
    sql = "SELECT string_agg(md5(i::text), '' ORDER BY i) FROM generate_series(1, 100000) i"
    with _connect(pg_dsn) as direct:
        row = direct.execute(sql).fetchone()
        assert row is not None
        expected = row[0]
    with _connect(proxy.dsn(pg_dsn)) as conn:
        proxy.delay(0.1)
        t0 = time.monotonic()
        row = conn.execute(sql).fetchone()
        elapsed = time.monotonic() - t0
    assert row is not None
    assert row[0] == expected
    assert 0.2 <= elapsed < 2.5


def test_stop_start_reuses_port(pg_dsn: str) -> None:
    p = Proxy(*_target(pg_dsn))
    p.start()
    try:
        dsn = p.dsn(pg_dsn)
        port = p.port
        with _connect(dsn) as conn:
            assert _select_one(conn) == 1
            p.stop()
            assert not p.running
            with pytest.raises(psycopg.OperationalError):
                _select_one(conn)
        with pytest.raises(psycopg.OperationalError):
            _connect(dsn)
        p.start()
        assert p.port == port
        assert p.dsn(pg_dsn) == dsn
        with _connect(dsn) as conn:
            assert _select_one(conn) == 1
        assert p.connections_total == 2
    finally:
        p.stop()
    p.stop()  # idempotent


def test_no_thread_or_fd_leaks(pg_dsn: str) -> None:
    threads_before = threading.active_count()
    fds_before = _fd_count()
    with Proxy(*_target(pg_dsn)) as p:
        dsn = p.dsn(pg_dsn)
        assert threading.active_count() == threads_before + 1
        conns = [_connect(dsn) for _ in range(3)]
        p.delay(0.01)
        assert _select_one(conns[0]) == 1
        p.cut()
        p.blackhole()
        # A "deaf" connection stuck in the listener's backlog.
        deaf = socket.create_connection(("127.0.0.1", p.port), timeout=1)
        p.restore()
        p.refuse()
        p.restore()
        conns.append(_connect(dsn))
        assert _select_one(conns[-1]) == 1
    deaf.close()
    for conn in conns:
        conn.close()
    assert threading.active_count() == threads_before
    assert _fd_count() == fds_before


def test_stop_is_prompt_during_blackhole(pg_dsn: str) -> None:
    p = Proxy(*_target(pg_dsn))
    p.start()
    conns = [_connect(p.dsn(pg_dsn)) for _ in range(2)]
    try:
        p.blackhole()
        p.delay(5)
        deaf = socket.create_connection(("127.0.0.1", p.port), timeout=1)
        t0 = time.monotonic()
        p.stop()
        assert time.monotonic() - t0 < 2.0
        deaf.close()
    finally:
        p.stop()
        for conn in conns:
            conn.close()


def test_methods_require_running_proxy() -> None:
    p = Proxy()
    with pytest.raises(RuntimeError):
        p.cut()
    with pytest.raises(RuntimeError):
        p.dsn("postgresql://postgres@127.0.0.1:5432/test")
    with pytest.raises(ValueError, match="delay"):
        Proxy().delay(-1)


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        (
            "postgresql://postgres@127.0.0.1:5432/test",
            "postgresql://postgres@127.0.0.1:6543/test",
        ),
        (
            "postgres://u:p%40ss@db.example:5433/app?sslmode=disable&application_name=x",
            "postgres://u:p%40ss@127.0.0.1:6543/app?sslmode=disable&application_name=x",
        ),
        ("postgresql:///test?host=/var/run/postgresql", "postgresql://127.0.0.1:6543/test"),
        ("postgresql://h1:1,h2:2/db", "postgresql://127.0.0.1:6543/db"),
    ],
)
def test_dsn_rewrites_host_and_port(base: str, expected: str) -> None:
    assert Proxy(listen_port=6543).dsn(base) == expected


def test_dsn_keyword_form_and_ipv6() -> None:
    kv = Proxy(listen_port=6543).dsn("host=db port=5432 dbname=test user=postgres")
    assert psycopg.conninfo.conninfo_to_dict(kv) == {
        "host": "127.0.0.1",
        "port": "6543",
        "dbname": "test",
        "user": "postgres",
    }
    v6 = Proxy(listen_host="::1", listen_port=6543).dsn("postgresql://u@h/db")
    assert v6 == "postgresql://u@[::1]:6543/db"


def _target(dsn: str) -> tuple[str, int]:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    return str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)
