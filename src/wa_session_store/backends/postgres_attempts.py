"""The connection path of the PostgreSQL backend: one attempt on a pooled connection.

Every statement of :class:`~wa_session_store.PostgresStore` runs through
:meth:`PostgresAttempts._on_connection`, within the attempt's timeout:

- the checkout drops connections the server closed while they were idle (a
  local look at the socket, no round trip), so no attempt is spent on them;
- a timer shuts the connection's socket down when the attempt runs out: the
  pending await fails at once, even when the network silently drops
  packets, instead of waiting for a query cancellation that itself needs
  the network;
- the backend of a timed-out attempt is terminated before the store's next
  statement, so a statement that reaches the server late never overwrites a
  newer acknowledged write;
- a statement that a failover interrupts closes its connection and replaces
  the pool's idle ones, since they were opened to the same server.

The health check is here too: one attempt that asks the server whether it
accepts writes, and treats a refusal as a failover does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import psycopg
import psycopg_pool
from psycopg import sql

from ..store.retry import AttemptTimeoutError, cancel_swallowed, cancellations
from .postgres_connections import closed_by_server, shutdown
from .postgres_errors import is_transient, needs_new_connection
from .postgres_migrations import SCHEMA_VERSION, schema_version
from .postgres_schema import Schema

__all__ = ["PostgresAttempts"]

T = TypeVar("T")


class PostgresAttempts:
    """The connection path of :class:`~wa_session_store.PostgresStore`.

    Mixed into the store, which supplies ``pool`` and ``schema`` and starts
    ``_stale_backends`` empty. Supplies the store's single attempts
    (:meth:`_on_connection`, :meth:`_query`), how they fail
    (:meth:`_is_transient`), and its health (:meth:`_health`,
    :meth:`_pool_usage`).
    """

    pool: psycopg_pool.AsyncConnectionPool[Any]
    schema: Schema
    #: Backends whose attempt timed out with a statement possibly still in
    #: flight: ended before this store sends another statement.
    _stale_backends: set[int]

    async def _on_connection(
        self, timeout: float, work: Callable[[psycopg.AsyncConnection[Any]], Coroutine[Any, Any, T]]
    ) -> T:
        """Run ``work`` on a pooled autocommit connection within ``timeout`` seconds.

        When the time runs out, a timer shuts the socket down and the attempt
        fails at once with :class:`AttemptTimeoutError`. The backend that
        served it is remembered: its statement may still reach the server
        later (a network that held the packets), so before the next statement
        of this store that backend is terminated, and a late statement can
        never overwrite a newer acknowledged write.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        conn = await self._checkout(deadline)
        pid = conn.info.backend_pid
        # A shared pool's connections may not be in autocommit; without it every
        # statement would cost a BEGIN and a COMMIT. Switching is local when idle.
        switched = not conn.autocommit
        fired = False

        def expire() -> None:
            nonlocal fired
            fired = True
            shutdown(conn)

        timer = loop.call_later(max(0.0, deadline - loop.time()), expire)
        failover = False
        try:
            if switched:
                await conn.set_autocommit(True)
            if self._stale_backends:
                await self._end_stale_backends(conn, deadline - loop.time())
            # The work runs as a task of its own: a cancellation of this call must
            # not reach psycopg, which answers one with a cancel request over the
            # network and waits for it (seconds, on a dead network).
            task = loop.create_task(work(conn))
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.done():
                    expire()
                    await asyncio.wait({task}, timeout=1.0)  # fails at once: its socket is shut
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: the caller gets the cancellation
                raise
        except Exception as exc:
            if fired:
                raise AttemptTimeoutError(timeout) from exc
            failover = needs_new_connection(exc)
            raise
        finally:
            timer.cancel()
            if fired:
                self._stale_backends.add(pid)
            if fired or failover:
                await conn.close()
            elif switched and not conn.closed:
                await conn.set_autocommit(False)
            await self.pool.putconn(conn)
            if failover:
                await self._replace_idle_connections()

    async def _query(
        self,
        timeout: float,
        statement: sql.Composed,
        params: Any = None,
        *,
        fetch: str = "none",
        binary: bool = False,
    ) -> Any:
        """One statement, one round trip: its rows ("all"), first row ("one") or rowcount."""

        async def run(conn: psycopg.AsyncConnection[Any]) -> Any:
            cur = await conn.execute(statement, params, binary=binary)
            if fetch == "all":
                return await cur.fetchall()
            if fetch == "one":
                return await cur.fetchone()
            return cur.rowcount

        return await self._on_connection(timeout, run)

    async def _checkout(self, deadline: float) -> psycopg.AsyncConnection[Any]:
        loop = asyncio.get_running_loop()
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AttemptTimeoutError(deadline - loop.time())
            before = cancellations()
            conn: psycopg.AsyncConnection[Any] = await self.pool.getconn(timeout=remaining)
            if cancel_swallowed(before):
                # psycopg-pool waits with asyncio.wait_for, which before Python
                # 3.12 drops a cancellation that arrives with the connection: the
                # caller (a lease keep-alive told to stop, say) would go on
                # running. Hand the connection back and be cancelled after all.
                await self.pool.putconn(conn)
                raise asyncio.CancelledError
            if not closed_by_server(conn):
                return conn
            # The server closed it while idle (restart, pg_terminate_backend):
            # drop it without spending an attempt on it.
            await conn.close()
            await self.pool.putconn(conn)

    async def _end_stale_backends(
        self, conn: psycopg.AsyncConnection[Any], remaining: float
    ) -> None:
        """Terminate the backends of timed-out attempts, waiting until they are gone.

        One extra round trip, only after a timeout. Only backends of this role
        and application name are touched. Until every one is gone (PostgreSQL
        14+ reports it), the attempt fails as transient and writes nothing.
        """
        pids = sorted(self._stale_backends)
        wait_ms = max(1, int(min(2.0, remaining / 2) * 1000))
        statement = (
            self.schema.end_backends
            if conn.info.server_version >= 140000
            else self.schema.end_backends_nowait
        )
        cur = await conn.execute(statement, {"pids": pids, "wait_ms": wait_ms})
        row = await cur.fetchone()
        if row and row[0]:
            raise psycopg.OperationalError(
                f"{row[0]} backend(s) of timed-out attempts have not ended yet"
            )
        self._stale_backends.difference_update(pids)

    async def _replace_idle_connections(self) -> None:
        """Replace the pool's idle connections: their server refuses writes or is going away.

        They were opened to the server whose connection just failed with a
        ``RECONNECT`` verdict (a standby, a demoted primary, a server
        shutting down); a retry on one of them would fail the same way and
        spend an attempt and a backoff. Closing them is local; the pool opens
        new ones in the background, through the DSN's hosts again. A shared
        pool is drained too: its connections go to the same server.
        """
        await self.pool.drain()  # psycopg-pool 3.3 (the minimum pyproject asks for)

    def _is_transient(self, exc: BaseException) -> bool:
        return is_transient(exc)

    # -- health ----------------------------------------------------------------------

    async def _health(self, timeout: float) -> dict[str, Any]:
        """Whether the server answers and accepts writes, found without writing.

        ``pg_is_in_recovery()`` says a standby (``role`` "replica");
        ``transaction_read_only`` a session that refuses writes on a server
        that is not one (``default_transaction_read_only``, set for the
        server, database or role, as a demoted primary or a full disk on a
        managed service has it: ``role`` "read-only"). Either sets
        ``refuses_writes``, and the connection is closed and the pool's idle
        ones replaced, as a refused write would.
        """

        async def probe(conn: psycopg.AsyncConnection[Any]) -> dict[str, Any]:
            started = time.perf_counter()
            cur = await conn.execute(
                "SELECT current_setting('server_version'), pg_is_in_recovery(),"
                " current_setting('transaction_read_only') = 'on'"
            )
            row = await cur.fetchone()
            elapsed = (time.perf_counter() - started) * 1000
            assert row is not None
            server = f"{conn.info.host}:{conn.info.port}"
            role = "replica" if row[1] else "read-only" if row[2] else "primary"
            facts = {
                "round_trip_ms": elapsed,
                "schema_version": await schema_version(conn, self.schema),
                "expected_schema_version": SCHEMA_VERSION,
                "server_version": f"PostgreSQL {row[0]}",
                "role": role,
                "server": server,
            }
            if role != "primary":
                why = "a standby in recovery" if row[1] else "its sessions are read-only"
                facts["refuses_writes"] = f"the server at {server} refuses writes: {why}"
            return facts

        facts = await self._on_connection(timeout, probe)
        if "refuses_writes" in facts:
            await self._replace_idle_connections()
        return facts

    def _pool_usage(self) -> dict[str, int] | None:
        stats = self.pool.get_stats()
        return {
            "size": int(stats.get("pool_size", 0)),
            "available": int(stats.get("pool_available", 0)),
            "waiting": int(stats.get("requests_waiting", 0)),
            "min": self.pool.min_size,
            "max": self.pool.max_size,
        }
