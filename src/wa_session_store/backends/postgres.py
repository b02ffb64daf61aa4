"""The production backend: PostgreSQL through psycopg 3 and psycopg-pool.

Every call is one statement and one round trip: key batches travel as arrays
(``unnest``) in a single statement, key reads use ``= ANY(...)``, and the
connections run in autocommit, so no BEGIN/COMMIT round trip is added and no
health-check query precedes a call. Broken connections are found by failing
(and retrying on a fresh connection) or, for connections the server already
closed, by a local look at the socket that costs no round trip.

This module is the store itself: its options (checked in ``__init__``), its
pool, opening and closing, and one short method per primitive, each sending
a statement. The statements are in ``postgres_schema.py`` and the schema's
versions in ``postgres_migrations.py``; every statement runs through the
connection path of ``postgres_attempts.py`` (the checkout, the timeout
timer, the clean-up of timed-out attempts, failover, health). Connections
below the SQL are in ``postgres_connections.py``, what errors mean in
``postgres_errors.py``, leases in ``postgres_leases.py``.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from functools import partial
from typing import Any

import psycopg
import psycopg_pool
from psycopg import sql
from typing_extensions import Unpack

from ..errors import (
    InvalidInputError,
    InvalidTypeError,
    LeaseLostError,
    StoreClosedError,
    StoreConfigurationError,
    shown,
)
from ..store.base import BaseStore, StoreOptions
from ..store.codec import KeyRow
from ..store.records import CredsRow, RowKey, SessionInfo
from ..store.retry import within
from ..store.rows import split_session_rows
from .postgres_attempts import PostgresAttempts
from .postgres_connections import connection_settings, parse_conninfo, scrub, target
from .postgres_errors import connect_failure
from .postgres_leases import PostgresLeases
from .postgres_migrations import prepare_schema, schema_version
from .postgres_schema import Schema

__all__ = ["PostgresStore"]

_APPLICATION_NAME = re.compile(r"[\x20-\x7e]{0,63}")


class PostgresStore(PostgresLeases, PostgresAttempts, BaseStore):
    """Stores auth states in PostgreSQL.

    Args:
        conninfo: a libpq URL or key=value string; ``None`` lets libpq read the
            ``PG*`` environment variables. Give this or ``pool``, not both.
            Several hosts may be listed, for a failover
            (``postgresql://h1:5432,h2:5432/db``, or ``host=h1,h2``): each
            connection goes to the first that answers as asked. With more
            than one host and no ``target_session_attrs`` (in the conninfo or
            ``PGTARGETSESSIONATTRS``), ``target_session_attrs=read-write`` is
            used: this store writes, so it must reach the primary.
        pool: an open or unopened ``AsyncConnectionPool`` to share with the
            application. The store opens it if needed but never closes it.
            Its connections are switched to autocommit while the store uses them.
        retry: retries, per-attempt timeout and backoff (default ``RetryPolicy()``:
            3 attempts of 10 s, waits 2 s, 4 s).
        schema: the PostgreSQL schema of the tables; created if missing. Default
            ``None``: the first schema of the role's ``search_path``. At most 63 bytes
            in UTF-8, as PostgreSQL counts it (40 "é" are 80 bytes).
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
        application_name: shown in ``pg_stat_activity`` (default ``"wa_session_store"``);
            at most 63 printable ASCII characters, all the server keeps as given.
        max_value_size, on_retry, on_giveup: as for every store.

    Connections use ``connect_timeout``, TCP keepalives and ``tcp_user_timeout``
    derived from ``retry.timeout``, so a dead peer is noticed by the kernel too.

    A statement that a failover interrupts (a server that refuses writes,
    shuts down or starts up; see ``postgres_errors.Verdict.RECONNECT``) is
    retried on a new connection: the one that failed is closed, and the
    pool's idle connections are replaced, since they were opened to the same
    server. A write the server refused is never reported stored.

    Raises:
        InvalidInputError: a malformed ``conninfo`` (the message never repeats
            it), both or neither of ``conninfo`` and ``pool`` in conflict, an
            option out of range, or a ``schema`` name over 63 bytes in UTF-8
            (PostgreSQL would cut it to its first 63 bytes).
    """

    kind = "postgresql"
    supports_leases = True
    #: The most connections a store's pool may hold (PostgreSQL's own limit is 262,143).
    MAX_POOL_SIZE = 10_000

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
            low = int(name == "max_size")
            if (
                isinstance(size, bool)
                or not isinstance(size, int)
                or not low <= size <= self.MAX_POOL_SIZE
            ):
                raise InvalidInputError(
                    f"{name} must be an int from {low} to {self.MAX_POOL_SIZE:,}, not {shown(size)}"
                )
        if min_size > max_size:
            raise InvalidInputError(
                f"min_size ({shown(min_size)}) must not exceed max_size ({shown(max_size)})"
            )
        self.schema = Schema(schema, table_prefix)
        self.migrate = migrate
        if prepare_threshold is not None and (
            isinstance(prepare_threshold, bool)
            or not isinstance(prepare_threshold, int)
            or not 0 <= prepare_threshold <= 2**31 - 1
        ):
            raise InvalidInputError(
                f"prepare_threshold must be None or an int >= 0, not {shown(prepare_threshold)}"
            )
        if not isinstance(application_name, str) or not _APPLICATION_NAME.fullmatch(
            application_name
        ):
            # The server keeps 63 bytes of it and replaces what is not printable ASCII.
            raise InvalidInputError(
                "application_name must be at most 63 printable ASCII characters, "
                f"not {shown(application_name)}"
            )
        self._params = parse_conninfo(conninfo) if conninfo is not None else {}
        self._owns_pool = pool is None
        if pool is None:
            timeout = self.retry.timeout
            kwargs = connection_settings(
                self._params,
                timeout=timeout,
                prepare_threshold=prepare_threshold,
                application_name=application_name,
            )
            # A closed pool cannot be opened again: a store reopened after
            # close() builds a new one from this.
            self._new_pool = partial(
                psycopg_pool.AsyncConnectionPool,
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
            pool = self._new_pool()
        self.pool = pool
        self._stale_backends = set()  # see PostgresAttempts

    def _describe(self) -> str:
        p = self._params
        if not p and not self._owns_pool:
            return "postgresql (shared pool)"
        return f"postgresql {target(self._params)} tables {self.schema.describe()}"

    # -- life cycle ----------------------------------------------------------------

    async def _open(self) -> None:
        pool = self.pool
        if self._owns_pool:
            if pool.closed and pool._opened:  # closed by an earlier close(): never reusable
                self.pool = pool = self._new_pool()
        elif pool.closed and pool._opened:
            raise StoreClosedError(
                "the shared pool given to this PostgresStore was closed; "
                "pass an open (or never opened) pool"
            )
        if pool.closed:
            # The first connection is made here, not by the pool: a refusal
            # that no retry can fix (a bad role, password, database, port,
            # sslmode or host) fails this first attempt with the server's
            # reason, instead of the pool logging a warning per retry and
            # ending in a bare PoolTimeout.
            await self._run("connect", None, self._probe)
            await pool.open(wait=False)
        try:
            await self._run("open", None, self._prepare_schema)
        except BaseException:
            if self._owns_pool:
                await pool.close()
            raise

    async def _probe(self, timeout: float) -> None:
        """One direct connection with the pool's settings; closed again at once."""
        pool = self.pool
        # A pool's kwargs may be a callable (psycopg-pool 3.3); the probe then
        # connects with the conninfo alone.
        kwargs = dict(pool.kwargs) if isinstance(pool.kwargs, dict) else {}
        kwargs["connect_timeout"] = max(2, math.ceil(timeout))
        try:
            conn = await within(pool.connection_class.connect(pool.conninfo, **kwargs), timeout)
        except psycopg.Error as exc:
            problem = connect_failure(exc)
            if problem is not None:
                raise StoreConfigurationError(
                    f"cannot connect to PostgreSQL{self._where()}: "
                    f"{scrub(problem[0], self._params)}; {problem[1]}"
                ) from None
            raise
        await conn.close()

    def _where(self) -> str:
        return f" ({target(self._params)})" if self._params else ""

    async def _prepare_schema(self, timeout: float) -> None:
        await self._on_connection(
            timeout, partial(prepare_schema, schema=self.schema, migrate=self.migrate)
        )

    async def _close(self) -> None:
        if self._owns_pool:
            await self.pool.close()

    # -- primitives ------------------------------------------------------------------

    async def _read_creds(self, session_id: str, timeout: float) -> tuple[bytes, int] | None:
        row = await self._query(
            timeout, self.schema.read_creds, (session_id,), fetch="one", binary=True
        )
        return None if row is None else (row[0], row[1])

    async def _read_creds_page(
        self, after: str | None, limit: int, timeout: float
    ) -> list[CredsRow]:
        rows: list[CredsRow] = await self._query(
            timeout,
            self.schema.read_creds_page,
            (after or "", limit),
            fetch="all",
            binary=True,
        )
        return rows

    async def _write_creds(
        self, session_id: str, blob: bytes, version: int, timeout: float
    ) -> bool:
        params = {"sid": session_id, "value": blob, "version": version}
        return await self._write_statement(self.schema.write_creds, params, timeout) > 0

    async def _write_statement(
        self, statement: sql.Composed, params: dict[str, Any], timeout: float
    ) -> int:
        """Run a write built by ``Schema`` (see ``postgres_schema._write``): its result.

        Raises:
            LeaseLostError: a fenced write whose token is no longer the newest
                (nothing was written).
        """
        row = await self._query(timeout, statement, params, fetch="one")
        held, result, *holder = row
        if not held:
            raise LeaseLostError(params["sid"], params["token"], *holder)
        return int(result)

    async def _read_keys(
        self, session_id: str, category: str, ids: list[str], timeout: float
    ) -> dict[str, bytes]:
        rows = await self._query(
            timeout, self.schema.read_keys, (session_id, category, ids), fetch="all", binary=True
        )
        return dict(rows)

    async def _read_categories(
        self,
        session_id: str,
        categories: list[str],
        after: tuple[str, str] | None,
        limit: int,
        timeout: float,
    ) -> list[tuple[str, str, bytes]]:
        params = (session_id, categories, *(after or ("", "")), limit)
        rows = await self._query(
            timeout, self.schema.read_categories, params, fetch="all", binary=True
        )
        return [(c, k, v) for c, k, v in rows]

    async def _write_keys(self, session_id: str, rows: list[KeyRow], timeout: float) -> None:
        params = {"sid": session_id, **Schema.key_batch_params(rows)}
        await self._write_statement(self.schema.key_batch(rows, fenced=False), params, timeout)

    async def _clear_keys(self, session_id: str, timeout: float) -> int:
        params = {"sid": session_id}
        return await self._write_statement(self.schema.clear_keys, params, timeout)

    async def _list_sessions(self, timeout: float) -> list[SessionInfo]:
        rows: list[tuple[str, datetime, int, bool, int]] = await self._query(
            timeout, self.schema.list_sessions, fetch="all"
        )
        return [
            SessionInfo(
                session_id=sid, updated_at=updated, key_count=keys, has_creds=has_creds, size=size
            )
            for sid, updated, keys, has_creds, size in rows
        ]

    async def _delete_session(self, session_id: str, timeout: float) -> bool:
        row = await self._query(
            timeout, self.schema.delete_session, (session_id, session_id), fetch="one"
        )
        return bool(row and row[0])

    async def _schema_version(self, timeout: float) -> int | None:
        return await self._on_connection(timeout, partial(schema_version, schema=self.schema))

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

        async def replace(conn: psycopg.AsyncConnection[Any]) -> bool:
            async with conn.transaction():
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
                    params = {"sid": session_id, **Schema.key_batch_params(rows)}
                    await conn.execute(schema.key_batch(rows, fenced=False), params)
            return True

        return await self._on_connection(timeout, replace)

    async def _read_session(
        self, session_id: str, timeout: float
    ) -> tuple[bytes | None, list[tuple[str, str, bytes]]] | None:
        rows = await self._query(
            timeout, self.schema.read_session, (session_id, session_id), fetch="all", binary=True
        )
        return split_session_rows(rows)

    async def _scan(
        self, table: str, after: RowKey | None, limit: int, timeout: float
    ) -> list[tuple[RowKey, bytes]]:
        params: tuple[object, ...]
        if table == "creds":
            query, params = self.schema.scan_creds, (after[0] if after else "", limit)
        else:
            query, params = self.schema.scan_keys, (*(after or ("", "", "")), limit)
        rows = await self._query(timeout, query, params, fetch="all", binary=True)
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
        return int(await self._query(timeout, query, params))
