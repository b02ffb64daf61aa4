"""The production backend: PostgreSQL through psycopg 3 and psycopg-pool.

Every call is one statement and one round trip: key batches travel as arrays
(``unnest``) in a single statement, key reads use ``= ANY(...)``, and the
connections run in autocommit, so no BEGIN/COMMIT round trip is added and no
health-check query precedes a call. Broken connections are found by failing
(and retrying on a fresh connection) or, for connections the server already
closed, by a local look at the socket that costs no round trip.

Timeouts are enforced by a timer that shuts the connection's socket down when
the attempt runs out: the pending await fails at once, even when the network
silently drops packets, instead of waiting for a query cancellation that
itself needs the network.
"""

from __future__ import annotations

import asyncio
import math
import os
import select
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from functools import partial
from typing import Any

import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from typing_extensions import Unpack

from .._codec import KeyRow, check_session_id
from ..errors import InvalidInputError, InvalidTypeError, LeaseLostError, LeaseUnavailableError
from ..leases import Lease, check_lease_args
from ..retry import AttemptTimeoutError
from ..store import BaseStore, RowKey, SessionInfo, StoreOptions
from .postgres_schema import Schema
from .sqlite import _split_session

__all__ = ["PostgresStore"]

# SQLSTATE classes worth another attempt: connection exceptions, transaction
# rollbacks (serialization failures, deadlocks), insufficient resources (too
# many connections), operator intervention (shutdown, crash recovery), system errors.
_TRANSIENT_CLASSES = frozenset({"08", "40", "53", "57", "58"})


class PostgresStore(BaseStore):
    """Stores auth states in PostgreSQL.

    Args:
        conninfo: a libpq URL or key=value string; ``None`` lets libpq read the
            ``PG*`` environment variables. Give this or ``pool``, not both.
        pool: an open or unopened ``AsyncConnectionPool`` to share with the
            application. The store opens it if needed but never closes it.
            Its connections are switched to autocommit while the store uses them.
        retry: retries, per-attempt timeout and backoff (default ``RetryPolicy()``:
            3 attempts of 10 s, waits 2 s, 4 s).
        schema: the PostgreSQL schema of the tables; created if missing. Default
            ``None``: the first schema of the role's ``search_path``.
        table_prefix: prefix of every table name (default ``"wa_"``), so that
            several applications can share one schema.
        min_size: connections the pool keeps open (default 1).
        max_size: connections the pool may open at most (default 10).
        migrate: create or upgrade the schema on ``open()`` (default True). With
            False the store only checks the schema version, for roles that may
            not run DDL; run ``wa-session-store migrate`` as the owner instead.
        prepare_threshold: executions after which psycopg prepares a statement
            on the server (default 5; ``None`` never prepares, which PgBouncer
            in transaction mode before 1.21 needs).
        application_name: shown in ``pg_stat_activity`` (default ``"wa_session_store"``).
        max_value_size, on_retry, on_giveup: as for every store.

    Connections use ``connect_timeout``, TCP keepalives and ``tcp_user_timeout``
    derived from ``retry.timeout``, so a dead peer is noticed by the kernel too.

    Raises:
        InvalidInputError: a malformed ``conninfo`` (the message never repeats
            it), both or neither of ``conninfo`` and ``pool`` in conflict, or an
            option out of range.
    """

    kind = "postgresql"
    supports_leases = True

    def __init__(
        self,
        conninfo: str | None = None,
        *,
        pool: psycopg_pool.AsyncConnectionPool[Any] | None = None,
        schema: str | None = None,
        table_prefix: str = "wa_",
        min_size: int = 1,
        max_size: int = 10,
        migrate: bool = True,
        prepare_threshold: int | None = 5,
        application_name: str = "wa_session_store",
        **options: Unpack[StoreOptions],
    ) -> None:
        super().__init__(**options)
        if conninfo is not None and pool is not None:
            raise InvalidInputError("give conninfo or pool, not both")
        if pool is not None and not isinstance(pool, psycopg_pool.AsyncConnectionPool):
            raise InvalidTypeError(
                f"pool must be a psycopg_pool.AsyncConnectionPool, not {type(pool).__name__}"
            )
        for name, size in (("min_size", min_size), ("max_size", max_size)):
            if isinstance(size, bool) or not isinstance(size, int) or size < (name == "max_size"):
                raise InvalidInputError(
                    f"{name} must be an int >= {int(name == 'max_size')}, not {size!r}"
                )
        if min_size > max_size:
            raise InvalidInputError(f"min_size ({min_size}) must not exceed max_size ({max_size})")
        self.schema = Schema(schema, table_prefix)
        self.migrate = migrate
        self._params = _parse_conninfo(conninfo) if conninfo is not None else {}
        self._owns_pool = pool is None
        if pool is None:
            timeout = self.retry.timeout
            kwargs: dict[str, Any] = {
                "autocommit": True,
                "prepare_threshold": prepare_threshold,
                "application_name": application_name,
                "connect_timeout": max(2, math.ceil(timeout)),
                "keepalives": 1,
                "keepalives_idle": 30,
                "keepalives_interval": 5,
                "keepalives_count": 3,
                # Unacknowledged data for longer than an attempt may last: the
                # kernel drops the connection, so even a stray await ends.
                "tcp_user_timeout": int(timeout * 1000),
            }
            pool = psycopg_pool.AsyncConnectionPool(
                conninfo or "",
                min_size=min_size,
                max_size=max_size,
                kwargs=kwargs,
                open=False,
                name="wa_session_store",
                timeout=timeout,
                # The pool retries a failed connect in the background with a
                # doubling backoff; left at its default (5 minutes) the gap
                # after a long outage grows to tens of seconds, during which a
                # recovered server goes unused. Bounded here, the background
                # chain gives up quickly and the next call connects at once.
                reconnect_timeout=timeout,
            )
        self.pool = pool

    def _describe(self) -> str:
        p = self._params
        if not p and not self._owns_pool:
            return "postgresql (shared pool)"
        where = f"{p.get('user', '')}@{p.get('host', '')}:{p.get('port', '')}/{p.get('dbname', '')}"
        return f"postgresql {where} tables {self.schema.describe()}"

    # -- life cycle ----------------------------------------------------------------

    async def _open(self) -> None:
        if self._owns_pool or self.pool.closed:
            await self.pool.open(wait=False)
        try:
            await self._run("open", None, self._prepare_schema)
        except BaseException:
            if self._owns_pool:
                await self.pool.close()
            raise

    async def _prepare_schema(self, timeout: float) -> None:
        async with self._connection(timeout) as conn:
            await self.schema.prepare(conn, migrate=self.migrate)

    async def _close(self) -> None:
        if self._owns_pool:
            await self.pool.close()

    # -- leases ------------------------------------------------------------------------

    #: Seconds between attempts while ``acquire_lease`` waits for a holder.
    LEASE_POLL_INTERVAL = 0.2

    async def acquire_lease(
        self, session_id: str, *, owner: str, ttl: float = 30.0, wait: float | None = 0.0
    ) -> Lease:
        """Grant the session to ``owner`` until ``ttl`` seconds pass without renewal.

        If another live owner holds it, try again every
        ``LEASE_POLL_INTERVAL`` seconds for up to ``wait`` seconds (``None``:
        forever) until it is released or expires. Acquiring a lease one
        already holds grants a new one with a higher token.

        Returns:
            The :class:`~wa_session_store.Lease`, with a fencing token higher
            than any granted for this session before.

        Raises:
            LeaseUnavailableError: still held by someone else after ``wait``,
                naming the holder and when its lease expires.
            InvalidInputError: a bad session id, owner, ttl or wait.
        """
        sid = check_session_id(session_id)
        owner, ttl = check_lease_args(owner, ttl, wait)
        loop = asyncio.get_running_loop()
        deadline = None if wait is None else loop.time() + wait
        params = {"sid": sid, "owner": owner, "ttl": ttl}
        while True:
            granted, holder, token, expires_at = await self._call(
                "acquire_lease", sid, partial(self._lease_row, self.schema.acquire_lease, params)
            )
            if granted:
                return Lease(self, sid, holder, token, expires_at, ttl)
            remaining = math.inf if deadline is None else deadline - loop.time()
            if remaining <= 0:
                raise LeaseUnavailableError(sid, holder, expires_at)
            await asyncio.sleep(min(self.LEASE_POLL_INTERVAL, remaining))

    async def claim_sessions(self, owner: str, *, limit: int, ttl: float = 30.0) -> list[Lease]:
        """Lease up to ``limit`` stored sessions whose lease is free or expired.

        Several workers claiming at once split the sessions between them
        (``FOR UPDATE SKIP LOCKED``); a session is never granted twice.

        Raises:
            InvalidInputError: a bad owner, limit or ttl.
        """
        owner, ttl = check_lease_args(owner, ttl)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidInputError(f"limit must be an int >= 1, not {limit!r}")
        params = {"owner": owner, "limit": limit, "ttl": ttl}

        async def claim(timeout: float) -> list[tuple[Any, ...]]:
            async with self._connection(timeout) as conn:
                cur = await conn.execute(self.schema.claim_sessions, params)
                return await cur.fetchall()

        rows = await self._call("claim_sessions", None, claim)
        return [
            Lease(self, sid, holder, token, expires, ttl) for sid, holder, token, expires in rows
        ]

    async def lease_holder(self, session_id: str) -> tuple[str, int, datetime] | None:
        """The newest lease of the session: (owner, token, expires_at), or None."""
        sid = check_session_id(session_id)
        params = {"sid": sid}

        async def read(timeout: float) -> tuple[str, int, datetime] | None:
            async with self._connection(timeout) as conn:
                cur = await conn.execute(self.schema.lease_holder, params)
                row = await cur.fetchone()
            return None if row is None else (row[0], row[1], row[2])

        return await self._call("lease_holder", sid, read)

    async def _lease_row(
        self, statement: sql.Composed, params: dict[str, Any], timeout: float
    ) -> tuple[Any, ...]:
        async with self._connection(timeout) as conn:
            cur = await conn.execute(statement, params)
            row = await cur.fetchone()
        assert row is not None
        return tuple(row)

    async def _renew_lease(self, lease: Lease) -> datetime:
        params = {"sid": lease.session_id, "token": lease.token, "ttl": lease.ttl}

        async def renew(timeout: float) -> datetime | None:
            async with self._connection(timeout) as conn:
                cur = await conn.execute(self.schema.renew_lease, params)
                row = await cur.fetchone()
            return None if row is None else row[0]

        expires_at = await self._call("renew_lease", lease.session_id, renew)
        if expires_at is None:
            holder = await self.lease_holder(lease.session_id)
            raise LeaseLostError(
                lease.session_id,
                lease.token,
                holder[0] if holder else None,
                holder[1] if holder else None,
            )
        return expires_at

    async def _release_lease(self, lease: Lease) -> None:
        params = {"sid": lease.session_id, "token": lease.token}

        async def release(timeout: float) -> None:
            async with self._connection(timeout) as conn:
                await conn.execute(self.schema.release_lease, params)

        await self._call("release_lease", lease.session_id, release)

    # -- connections ---------------------------------------------------------------

    @asynccontextmanager
    async def _connection(self, timeout: float) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled autocommit connection for one attempt of at most ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        conn = await self._checkout(deadline)
        # A shared pool's connections may not be in autocommit; without it every
        # statement would cost a BEGIN and a COMMIT. Switching is local when idle.
        switched = not conn.autocommit
        if switched:
            await conn.set_autocommit(True)
        fired = False

        def expire() -> None:
            nonlocal fired
            fired = True
            _shutdown(conn)

        timer = loop.call_later(max(0.0, deadline - loop.time()), expire)
        try:
            yield conn
        except Exception as exc:
            if fired:
                raise AttemptTimeoutError(timeout) from exc
            raise
        finally:
            timer.cancel()
            if fired:
                await conn.close()
            elif switched and not conn.broken:
                await conn.set_autocommit(False)
            await self.pool.putconn(conn)

    async def _checkout(self, deadline: float) -> psycopg.AsyncConnection[Any]:
        loop = asyncio.get_running_loop()
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AttemptTimeoutError(deadline - loop.time())
            conn: psycopg.AsyncConnection[Any] = await self.pool.getconn(timeout=remaining)
            if not _closed_by_server(conn):
                return conn
            # The server closed it while idle (restart, pg_terminate_backend):
            # drop it without spending an attempt on it.
            await conn.close()
            await self.pool.putconn(conn)

    def _is_transient(self, exc: BaseException) -> bool:
        if isinstance(exc, psycopg.OperationalError):
            state = exc.sqlstate
            return state is None or state[:2] in _TRANSIENT_CLASSES
        return isinstance(exc, (psycopg.InterfaceError, OSError))

    # -- primitives ------------------------------------------------------------------

    async def _read_creds(self, session_id: str, timeout: float) -> tuple[bytes, int] | None:
        async with self._connection(timeout) as conn:
            cur = await conn.execute(self.schema.read_creds, (session_id,), binary=True)
            row = await cur.fetchone()
        return None if row is None else (row[0], row[1])

    async def _write_creds(
        self, session_id: str, blob: bytes, version: int, fence: int | None, timeout: float
    ) -> bool:
        if fence is not None:
            params = {"sid": session_id, "token": fence, "value": blob, "version": version}
            return await self._fenced(self.schema.write_creds_fenced, params, timeout) > 0
        async with self._connection(timeout) as conn:
            cur = await conn.execute(self.schema.write_creds, (session_id, blob, version))
        return cur.rowcount > 0

    async def _fenced(self, statement: sql.Composed, params: dict[str, Any], timeout: float) -> int:
        """Run a fenced write; its result, or LeaseLostError when the fence failed."""
        async with self._connection(timeout) as conn:
            cur = await conn.execute(statement, params)
            row = await cur.fetchone()
        assert row is not None
        held, result, holder, holder_token = row
        if not held:
            raise LeaseLostError(params["sid"], params["token"], holder, holder_token)
        return int(result)

    async def _read_keys(
        self, session_id: str, category: str, ids: list[str], timeout: float
    ) -> dict[str, bytes]:
        async with self._connection(timeout) as conn:
            cur = await conn.execute(
                self.schema.read_keys, (session_id, category, ids), binary=True
            )
            rows = await cur.fetchall()
        return dict(rows)

    async def _write_keys(
        self, session_id: str, rows: list[KeyRow], fence: int | None, timeout: float
    ) -> None:
        categories = [row[0] for row in rows]
        key_ids = [row[1] for row in rows]
        values = [row[2] for row in rows]
        if fence is not None:
            params = {
                "sid": session_id,
                "token": fence,
                "categories": categories,
                "ids": key_ids,
                "values": values,
            }
            await self._fenced(self.schema.write_keys_fenced, params, timeout)
            return
        async with self._connection(timeout) as conn:
            await conn.execute(
                self.schema.write_keys, (categories, key_ids, values, session_id, session_id)
            )

    async def _clear_keys(self, session_id: str, fence: int | None, timeout: float) -> int:
        if fence is not None:
            params = {"sid": session_id, "token": fence}
            return await self._fenced(self.schema.clear_keys_fenced, params, timeout)
        async with self._connection(timeout) as conn:
            cur = await conn.execute(self.schema.clear_keys, (session_id,))
        return cur.rowcount

    async def _list_sessions(self, timeout: float) -> list[SessionInfo]:
        async with self._connection(timeout) as conn:
            cur = await conn.execute(self.schema.list_sessions)
            rows: list[tuple[str, datetime, int, bool, int]] = await cur.fetchall()
        return [
            SessionInfo(
                session_id=sid, updated_at=updated, key_count=keys, has_creds=has_creds, size=size
            )
            for sid, updated, keys, has_creds, size in rows
        ]

    async def _delete_session(self, session_id: str, timeout: float) -> bool:
        async with self._connection(timeout) as conn:
            cur = await conn.execute(self.schema.delete_session, (session_id, session_id))
            row = await cur.fetchone()
        return bool(row and row[0])

    async def _schema_version(self, timeout: float) -> int | None:
        async with self._connection(timeout) as conn:
            return await self.schema.version(conn)

    async def _replace_session(
        self,
        session_id: str,
        creds: bytes | None,
        version: int,
        rows: list[KeyRow],
        overwrite: bool,
        timeout: float,
    ) -> bool:
        schema = self.schema
        async with self._connection(timeout) as conn, conn.transaction():
            # Two importers of one session queue here instead of failing on a key conflict.
            await conn.execute(schema.lock_session, (session_id,))
            if not overwrite:
                params = {"sid": session_id, "version": version}
                cur = await conn.execute(schema.session_exists, params)
                row = await cur.fetchone()
                if row and row[0]:
                    # An earlier attempt of this very call whose commit landed
                    # although its answer was lost is a success, not a conflict.
                    return bool(row[1])
            await conn.execute(schema.delete_session, (session_id, session_id))
            if creds is not None:
                await conn.execute(schema.insert_creds, (session_id, creds, version))
            if rows:
                columns = list(zip(*rows, strict=True))
                await conn.execute(
                    schema.insert_keys,
                    (session_id, list(columns[0]), list(columns[1]), list(columns[2])),
                )
        return True

    async def _read_session(
        self, session_id: str, timeout: float
    ) -> tuple[bytes | None, list[tuple[str, str, bytes]]] | None:
        async with self._connection(timeout) as conn:
            cur = await conn.execute(
                self.schema.read_session, (session_id, session_id), binary=True
            )
            rows = await cur.fetchall()
        return _split_session(rows)

    async def _scan(
        self, table: str, after: RowKey | None, limit: int, timeout: float
    ) -> list[tuple[RowKey, bytes]]:
        params: tuple[object, ...]
        if table == "creds":
            query, params = self.schema.scan_creds, (after[0] if after else "", limit)
        else:
            query, params = self.schema.scan_keys, (*(after or ("", "", "")), limit)
        async with self._connection(timeout) as conn:
            cur = await conn.execute(query, params, binary=True)
            rows = await cur.fetchall()
        return [((s, c, k), v) for s, c, k, v in rows]

    async def _rewrite(
        self, table: str, changes: list[tuple[RowKey, bytes, bytes]], timeout: float
    ) -> int:
        keys, olds, news = zip(*changes, strict=True)
        sids, categories, key_ids = (list(column) for column in zip(*keys, strict=True))
        params: tuple[list[Any], ...]
        if table == "creds":
            query, params = self.schema.rewrite_creds, (sids, list(olds), list(news))
        else:
            query = self.schema.rewrite_keys
            params = (sids, categories, key_ids, list(olds), list(news))
        async with self._connection(timeout) as conn:
            cur = await conn.execute(query, params)
        return cur.rowcount


def _parse_conninfo(conninfo: object) -> dict[str, Any]:
    if not isinstance(conninfo, str):
        raise InvalidTypeError(f"conninfo must be a str, not {type(conninfo).__name__}")
    try:
        params = conninfo_to_dict(conninfo)
        make_conninfo(conninfo)
    except psycopg.ProgrammingError:
        # libpq's message quotes the string, which may hold a password.
        raise InvalidInputError(
            "malformed PostgreSQL conninfo: expected a URL such as "
            "postgresql://user:password@host:5432/dbname or 'host=... dbname=...'"
        ) from None
    return params


def _closed_by_server(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether an idle connection's socket already has data or EOF waiting.

    An idle connection receives nothing unless the server is closing it (or
    sends a notification, which this library never listens to): a readable
    socket means the connection is unusable. A local syscall, not a round trip.
    """
    if conn.closed or conn.broken:
        return True
    try:
        poller = select.poll()  # not select(): descriptors above 1024 are common in big bots
        poller.register(conn.pgconn.socket, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError, psycopg.OperationalError):
        return True


def _shutdown(conn: psycopg.AsyncConnection[Any]) -> None:
    """Shut the connection's socket down, waking whatever awaits on it.

    A local operation: it needs no answer from the network, so it works when
    packets are silently dropped. The duplicate descriptor is closed at once;
    the original stays owned by libpq.
    """
    try:
        sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
    except (OSError, psycopg.OperationalError):
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()
