"""A fault-injecting TCP proxy for breaking PostgreSQL connections in tests.

The proxy runs its own selector event loop in a daemon thread, so it keeps
forwarding (or deliberately not forwarding) while the test's own event loop is
blocked or busy. Public methods are synchronous, thread-safe, and bounded: each
one hands its work to the proxy thread and waits at most a few seconds for it.

Typical use::

    def test_reconnect(proxy: Proxy) -> None:
        dsn = proxy.dsn(BASE_DSN)
        ...               # connect the code under test to ``dsn``
        proxy.cut()       # every open connection is reset
        proxy.blackhole() # packets silently vanish
        proxy.restore()   # back to normal

Modes:

* normal: bytes are forwarded as they arrive (plus the ``delay()`` latency).
* ``cut()``: one-shot; resets every open connection, keeps listening.
* ``refuse()``: listener closed (connect gets ECONNREFUSED), connections reset.
* ``blackhole()``: nothing moves in either direction and nothing is closed.
  The listener stays bound but is not accepted from, so the kernel completes
  new handshakes and the client then waits for an answer that never comes.
  Held data is not discarded: bytes stay in kernel buffers and in the delay
  queue, and ``restore()`` delivers them, like a network that heals before TCP
  gives up. Clients that gave up meanwhile simply close their end.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import os
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg.conninfo
import pytest

__all__ = ["DEFAULT_TEST_DSN", "Proxy", "proxy", "target_dsn"]

DEFAULT_TEST_DSN = "postgresql://postgres@127.0.0.1:5432/test"

_T = TypeVar("_T")

# Upper bound for a public call waiting on the proxy thread. The work itself
# is a few non-blocking syscalls; this only guards against a wedged thread.
_CALL_TIMEOUT = 2.0
# Bound for the upstream connect so a dead target cannot pin a client forever.
_CONNECT_TIMEOUT = 5.0
# How long start()/restore() retry binding the old port: an outgoing
# connection may briefly own it as its ephemeral local port.
_BIND_RETRY_FOR = 1.0
_RECV_SIZE = 65536
# Stop reading a side once this much of its data waits to be written, so a
# slow or delayed peer applies backpressure instead of growing memory.
_HIGH_WATER = 4 * 1024 * 1024
_LINGER_RST = struct.pack("ii", 1, 0)

_CLIENT, _SERVER = 0, 1


def _reset_close(sock: socket.socket) -> None:
    # A zero linger turns close() into an RST: the peer fails on its next
    # read/write instead of seeing an orderly EOF, and no TIME_WAIT is left.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    sock.close()


class _Link:
    """One proxied connection: a client socket and its upstream socket.

    Only ever touched from the proxy thread. Side ``i`` is read into
    ``queue[i]`` (timestamped chunks; ``None`` marks EOF), released into
    ``outbuf[1 - i]`` when due, and written to side ``1 - i``.
    """

    def __init__(self, owner: _Engine, client: socket.socket) -> None:
        self.owner = owner
        self.loop = owner.loop
        self.socks: list[socket.socket | None] = [client, None]
        self.fds: list[int] = [client.fileno(), -1]
        self.connected = False
        self.closed = False
        self.queue: list[deque[tuple[float, bytes | None]]] = [deque(), deque()]
        self.queued: list[int] = [0, 0]
        self.outbuf: list[bytearray] = [bytearray(), bytearray()]
        self.eof_read: list[bool] = [False, False]
        self.eof_pending: list[bool] = [False, False]
        self.eof_sent: list[bool] = [False, False]
        self.reading: list[bool] = [False, False]
        self.writing: list[bool] = [False, False]
        self.timers: list[asyncio.TimerHandle | None] = [None, None]
        self.connect_timer: asyncio.TimerHandle | None = None
        # The side that last sent data: a client burst after the server spoke
        # (or the first one) starts a new request, i.e. one round trip.
        self.last_sender = _SERVER

    # -- upstream connect -------------------------------------------------

    def start_connect(self) -> None:
        family, addr = self.owner.target_family, self.owner.target_addr
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            self.close(reset=True)
            return
        self.socks[_SERVER] = sock
        self.fds[_SERVER] = sock.fileno()
        sock.setblocking(False)
        err = sock.connect_ex(addr)
        if err == 0:
            self._connected()
        elif err in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
            # Own the writer registration ourselves (instead of sock_connect)
            # so close() can drop it synchronously before the fd is reused.
            self.loop.add_writer(self.fds[_SERVER], self._connect_done)
            self.writing[_SERVER] = True
            self.connect_timer = self.loop.call_later(_CONNECT_TIMEOUT, self.close, True)
        else:
            self.close(reset=True)

    def _connect_done(self) -> None:
        sock = self.socks[_SERVER]
        assert sock is not None
        self.loop.remove_writer(self.fds[_SERVER])
        self.writing[_SERVER] = False
        if self.connect_timer is not None:
            self.connect_timer.cancel()
            self.connect_timer = None
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
            self.close(reset=True)
            return
        self._connected()

    def _connected(self) -> None:
        sock = self.socks[_SERVER]
        assert sock is not None
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connected = True
        self.refresh()

    # -- data path ----------------------------------------------------------

    def refresh(self) -> None:
        """Re-derive reader/writer registrations from the current state."""
        if self.closed or not self.connected:
            return
        held = self.owner.blackholed
        for side in (_CLIENT, _SERVER):
            want = (
                not held
                and not self.eof_read[side]
                and self.queued[side] + len(self.outbuf[1 - side]) < _HIGH_WATER
            )
            if want and not self.reading[side]:
                self.loop.add_reader(self.fds[side], self._on_readable, side)
                self.reading[side] = True
            elif not want and self.reading[side]:
                self.loop.remove_reader(self.fds[side])
                self.reading[side] = False
        if held:
            for side in (_CLIENT, _SERVER):
                if self.writing[side]:
                    self.loop.remove_writer(self.fds[side])
                    self.writing[side] = False
                timer = self.timers[side]
                if timer is not None:
                    timer.cancel()
                    self.timers[side] = None
        else:
            for side in (_CLIENT, _SERVER):
                # An armed timer already targets the earliest chunk.
                if self.timers[side] is None:
                    self._release(side)
                # Resume writes a blackhole interrupted.
                if (
                    not self.closed
                    and not self.writing[side]
                    and (self.outbuf[side] or (self.eof_pending[side] and not self.eof_sent[side]))
                ):
                    self._flush(side)

    def _on_readable(self, side: int) -> None:
        sock = self.socks[side]
        if self.closed or sock is None:
            return
        try:
            data = sock.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close(reset=True)
            return
        due = self.loop.time() + self.owner.delay_s
        if data:
            if side == _CLIENT and self.last_sender == _SERVER:
                self.owner.counters[2] += 1
            self.last_sender = side
            self.queue[side].append((due, data))
            self.queued[side] += len(data)
        else:
            self.eof_read[side] = True
            self.queue[side].append((due, None))
        self.refresh()

    def _release(self, side: int) -> None:
        """Move chunks read from ``side`` whose time has come to the outbuf."""
        self.timers[side] = None
        if self.closed or self.owner.blackholed:
            return
        queue = self.queue[side]
        now = self.loop.time()
        dest = 1 - side
        moved = False
        while queue and queue[0][0] <= now:
            _, data = queue.popleft()
            if data is None:
                self.eof_pending[dest] = True
            else:
                self.queued[side] -= len(data)
                self.outbuf[dest] += data
            moved = True
        if queue:
            # One timer per direction, armed for the head chunk: chunks keep
            # their own arrival-based due time, so delay never throttles.
            self.timers[side] = self.loop.call_at(queue[0][0], self._release, side)
        if moved:
            self._flush(dest)

    def _flush(self, side: int) -> None:
        """Write ``outbuf[side]`` to ``side`` as far as the kernel takes it."""
        sock = self.socks[side]
        if self.closed or sock is None or self.owner.blackholed:
            return
        buf = self.outbuf[side]
        if buf:
            try:
                sent = sock.send(buf)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self.close(reset=True)
                return
            del buf[:sent]
        if buf:
            if not self.writing[side]:
                self.loop.add_writer(self.fds[side], self._flush, side)
                self.writing[side] = True
        else:
            if self.writing[side]:
                self.loop.remove_writer(self.fds[side])
                self.writing[side] = False
            if self.eof_pending[side] and not self.eof_sent[side]:
                # Forward the half-close; the link ends once both directions
                # have delivered their EOF.
                self.eof_sent[side] = True
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    self.close(reset=True)
                    return
                if self.eof_sent[1 - side]:
                    self.close(reset=False)
                    return
        # Draining the outbuf may lift backpressure on the opposite reader.
        self._resume_readers()

    def _resume_readers(self) -> None:
        if self.closed or not self.connected or self.owner.blackholed:
            return
        for side in (_CLIENT, _SERVER):
            if self.reading[side] or self.eof_read[side]:
                continue
            if self.queued[side] + len(self.outbuf[1 - side]) < _HIGH_WATER:
                self.loop.add_reader(self.fds[side], self._on_readable, side)
                self.reading[side] = True

    # -- teardown -----------------------------------------------------------

    def close(self, reset: bool = True) -> None:
        """Close both sockets (RST if ``reset``) and forget the link."""
        if self.closed:
            return
        self.closed = True
        if self.connect_timer is not None:
            self.connect_timer.cancel()
            self.connect_timer = None
        for side in (_CLIENT, _SERVER):
            timer = self.timers[side]
            if timer is not None:
                timer.cancel()
                self.timers[side] = None
            sock = self.socks[side]
            if sock is None:
                continue
            # Unregister before closing: the fd number can be reused at once.
            if self.reading[side]:
                self.loop.remove_reader(self.fds[side])
            if self.writing[side]:
                self.loop.remove_writer(self.fds[side])
            self.reading[side] = self.writing[side] = False
            if reset:
                _reset_close(sock)
            else:
                sock.close()
            self.socks[side] = None
        self.queue = [deque(), deque()]
        self.outbuf = [bytearray(), bytearray()]
        self.owner.forget(self)


class _Engine:
    """State living on the proxy thread: listener, links, mode flags."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        target: tuple[int, tuple[object, ...]],
        listen: tuple[int, tuple[object, ...]],
        counters: list[int],
    ) -> None:
        self.loop = loop
        self.target_family, self.target_addr = target
        self.listen_family, self.listen_addr = listen
        self.counters = counters  # [total, open, round trips], shared with the Proxy
        self.listener: socket.socket | None = None
        self.listener_fd = -1
        self.accepting = False
        self.links: set[_Link] = set()
        self.blackholed = False
        self.delay_s = 0.0

    # -- listener -----------------------------------------------------------

    def open_listener(self) -> int:
        if self.listener is not None:
            return int(self.listener.getsockname()[1])
        deadline = time.monotonic() + _BIND_RETRY_FOR
        while True:
            sock = socket.socket(self.listen_family, socket.SOCK_STREAM)
            try:
                # SO_REUSEADDR lets a restart bind the same port despite
                # TIME_WAIT leftovers, so a DSN handed out earlier stays valid.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(self.listen_addr)
                sock.listen(128)
                sock.setblocking(False)
            except OSError as exc:
                sock.close()
                if exc.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)
                continue
            break
        self.listener = sock
        self.listener_fd = sock.fileno()
        port = int(sock.getsockname()[1])
        # A port-0 request resolves once; later re-binds reuse that port.
        self.listen_addr = (self.listen_addr[0], port, *self.listen_addr[2:])
        self.update_accepting()
        return port

    def close_listener(self) -> None:
        if self.listener is None:
            return
        if self.accepting:
            self.loop.remove_reader(self.listener_fd)
            self.accepting = False
        # Closing also resets handshakes the kernel completed but nobody
        # accepted (the blackhole's "deaf" clients), releasing those clients.
        self.listener.close()
        self.listener = None
        self.listener_fd = -1

    def update_accepting(self) -> None:
        # In a blackhole the listener stays bound but is not accepted from:
        # the kernel still completes the handshake, and then nothing happens.
        want = self.listener is not None and not self.blackholed
        if want and not self.accepting:
            self.loop.add_reader(self.listener_fd, self._on_accept)
            self.accepting = True
        elif not want and self.accepting:
            self.loop.remove_reader(self.listener_fd)
            self.accepting = False

    def _on_accept(self) -> None:
        # Bounded batch so a connect storm cannot starve the other callbacks.
        for _ in range(64):
            if self.listener is None or self.blackholed:
                return
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # ECONNABORTED, EMFILE, ...: drop this one, keep serving.
                return
            conn.setblocking(False)
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(self, conn)
            self.links.add(link)
            self.counters[0] += 1
            self.counters[1] += 1
            link.start_connect()

    def forget(self, link: _Link) -> None:
        if link in self.links:
            self.links.discard(link)
            self.counters[1] -= 1

    # -- modes --------------------------------------------------------------

    def cut(self) -> None:
        for link in list(self.links):
            link.close(reset=True)

    def refuse(self) -> None:
        self.close_listener()
        self.cut()

    def set_blackhole(self, on: bool) -> None:
        self.blackholed = on
        self.update_accepting()
        for link in list(self.links):
            link.refresh()

    def set_delay(self, seconds: float) -> None:
        self.delay_s = seconds

    def restore(self) -> int:
        self.delay_s = 0.0
        port = self.open_listener()
        self.set_blackhole(False)
        return port

    def shutdown(self) -> None:
        self.close_listener()
        self.cut()


class Proxy:
    """Fault-injecting TCP forwarder running in its own thread.

    Point a client at ``dsn(base)`` (or ``127.0.0.1:port``) instead of the
    server, then call :meth:`cut`, :meth:`refuse`, :meth:`blackhole`,
    :meth:`delay` and :meth:`restore` to break the path for real.
    """

    def __init__(
        self,
        target_host: str = "127.0.0.1",
        target_port: int = 5432,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        """Configure the proxy; nothing is bound until :meth:`start`.

        ``listen_port=0`` picks a free port on the first start; ``port`` then
        keeps that value so later restarts reuse it.
        """
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self.port = listen_port
        self._counters = [0, 0, 0]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._engine: _Engine | None = None
        self._lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        """Bind the listener and start forwarding in a background thread.

        Raises if already running or if the port cannot be bound. A restart
        after :meth:`stop` binds the same port and begins in normal mode.
        """
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("proxy already running")
            # Resolve here, in the caller's thread: asyncio would otherwise
            # resolve in an executor thread that outlives stop().
            target = _resolve(self.target_host, self.target_port, passive=False)
            listen = _resolve(self.listen_host, self.port, passive=True)
            loop = asyncio.SelectorEventLoop()
            engine = _Engine(loop, target, listen, self._counters)
            self._counters[1] = 0
            ready = threading.Event()
            thread = threading.Thread(
                target=_run_loop, args=(loop, ready), name=f"Proxy-{id(self):x}", daemon=True
            )
            thread.start()
            if not ready.wait(_CALL_TIMEOUT):  # pragma: no cover - wedged host
                raise RuntimeError("proxy thread did not start")
            self._loop, self._thread, self._engine = loop, thread, engine
            try:
                self.port = self._call(engine.open_listener)
            except BaseException:
                self._stop_locked()
                raise

    def stop(self) -> None:
        """Close the listener and every connection (RST), then join the thread.

        Idempotent, and returns within about two seconds even in a blackhole.
        """
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        loop, thread, engine = self._loop, self._thread, self._engine
        if loop is None or thread is None or engine is None:
            return
        try:
            if thread.is_alive():
                self._call(engine.shutdown)
        finally:
            if thread.is_alive():
                loop.call_soon_threadsafe(loop.stop)
            thread.join(_CALL_TIMEOUT)
            self._loop = self._thread = self._engine = None
            if thread.is_alive():  # pragma: no cover - wedged host
                raise RuntimeError("proxy thread did not stop")
            self._counters[1] = 0

    def __enter__(self) -> Proxy:
        """Start the proxy and return it."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the proxy."""
        self.stop()

    # -- faults ---------------------------------------------------------------

    def cut(self) -> None:
        """Reset (RST) every open proxied connection, both sides.

        New connections are still accepted and forwarded.
        """
        self._call(self._need_engine().cut)

    def refuse(self) -> None:
        """Close the listener (connects get ECONNREFUSED) and reset all links.

        :meth:`restore` re-opens the listener on the same port.
        """
        self._call(self._need_engine().refuse)

    def blackhole(self) -> None:
        """Silently stop all traffic without closing anything.

        Open connections stay up but no byte moves either way; new connects
        complete the TCP handshake (kernel backlog) and then get no answer.
        Held data is kept and delivered by :meth:`restore`.
        """
        engine = self._need_engine()
        self._call(lambda: engine.set_blackhole(True))

    def delay(self, seconds: float) -> None:
        """Add ``seconds`` of one-way latency to each direction.

        Applies to bytes read from now on; each chunk is released at its
        arrival time plus the delay, so order is kept and throughput is not
        limited. ``delay(0)`` removes it.
        """
        if seconds < 0:
            raise ValueError("delay must be >= 0")
        engine = self._need_engine()
        self._call(lambda: engine.set_delay(float(seconds)))

    def restore(self) -> None:
        """Back to normal: listening on the same port, no blackhole, no delay.

        Data held during a blackhole is forwarded now (connections that the
        peer gave up on meanwhile just close).
        """
        self.port = self._call(self._need_engine().restore)

    # -- introspection ------------------------------------------------------------

    @property
    def connections_total(self) -> int:
        """Connections accepted since this object was created."""
        return self._counters[0]

    @property
    def connections_open(self) -> int:
        """Proxied connections currently open (client side accepted)."""
        return self._counters[1]

    @property
    def round_trips(self) -> int:
        """Requests forwarded since this object was created.

        A request is a burst of client bytes that follows the server's answer
        (or opens the connection): a statement sent in one write and answered
        counts once however many packets either side splits it into, so the
        difference of two readings is the round trips a piece of code made.
        """
        return self._counters[2]

    @property
    def running(self) -> bool:
        """Whether the proxy thread is running."""
        return self._thread is not None

    def dsn(self, base: str) -> str:
        """Return ``base`` with host and port pointing at this proxy.

        ``base`` is a libpq URL (``postgresql://user@host:port/db?opts``) or a
        key=value conninfo string. User, password, database and other options
        are kept; ``host``, ``hostaddr`` and ``port`` options are replaced.
        """
        if not self.port:
            raise RuntimeError("port unknown: start() the proxy first")
        host = self.listen_host
        # A wildcard listener is reachable through loopback.
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if "://" not in base:
            params = psycopg.conninfo.conninfo_to_dict(base)
            params.pop("hostaddr", None)
            params.update(host=host, port=str(self.port))
            return psycopg.conninfo.make_conninfo("", **params)
        parts = urlsplit(base)
        userinfo, sep, _ = parts.netloc.rpartition("@")
        hostport = f"[{host}]" if ":" in host else host
        netloc = f"{userinfo}{sep}{hostport}:{self.port}"
        query = [
            (k, v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if k not in ("host", "hostaddr", "port")
        ]
        return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), parts.fragment))

    # -- plumbing -----------------------------------------------------------------

    def _need_engine(self) -> _Engine:
        if self._engine is None:
            raise RuntimeError("proxy not running: call start() first")
        return self._engine

    def _call(self, fn: Callable[[], _T]) -> _T:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            raise RuntimeError("proxy not running: call start() first")
        if threading.current_thread() is thread:
            return fn()
        fut: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

        loop.call_soon_threadsafe(run)
        try:
            return fut.result(_CALL_TIMEOUT)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise RuntimeError("proxy thread did not answer in time") from None


def _run_loop(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
    try:
        loop.call_soon(ready.set)
        loop.run_forever()
    finally:
        loop.close()


def _resolve(host: str, port: int, *, passive: bool) -> tuple[int, tuple[object, ...]]:
    flags = socket.AI_PASSIVE if passive else 0
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=flags)
    if not infos:  # pragma: no cover - getaddrinfo raises instead
        raise OSError(f"cannot resolve {host!r}")
    family, _, _, _, addr = infos[0]
    return int(family), tuple(addr)


def target_dsn() -> str:
    """The PostgreSQL DSN tests use: ``WA_SESSION_STORE_TEST_DSN`` or the default."""
    return os.environ.get("WA_SESSION_STORE_TEST_DSN") or DEFAULT_TEST_DSN


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    """A started :class:`Proxy` in front of the test PostgreSQL server.

    The target comes from ``WA_SESSION_STORE_TEST_DSN`` (default
    ``postgresql://postgres@127.0.0.1:5432/test``); use ``proxy.dsn(...)`` to
    get the DSN to connect through. Stopped at teardown.
    """
    params = psycopg.conninfo.conninfo_to_dict(target_dsn())
    host = str(params.get("hostaddr") or params.get("host") or "127.0.0.1")
    # Only the first of a multi-host list, and TCP only: a proxy cannot sit in
    # front of a Unix socket path.
    host = host.split(",")[0]
    if host.startswith("/"):
        pytest.skip("the proxy needs a TCP PostgreSQL DSN, not a Unix socket")
    port = int(str(params.get("port") or 5432).split(",")[0])
    p = Proxy(host, port)
    p.start()
    try:
        yield p
    finally:
        p.stop()
