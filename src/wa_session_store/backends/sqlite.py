"""The embedded default: one SQLite file, stdlib ``sqlite3``, WAL mode.

Every call runs on a dedicated thread (one per store), so the event loop never
blocks on disk I/O or on a lock held by another process. Writes take the
database lock up front (``BEGIN IMMEDIATE``), so several stores, threads or
processes on one file serialise instead of failing with deadlocks; a writer
waits up to ``busy_timeout`` for the lock, and a lock still held then is a
transient error that the retry policy repeats.

It is the store's thread and one backend's primitives, one method each;
opening the file, its schema and migrations, the write transaction and the
classification of errors are in ``sqlite_connection.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from typing_extensions import Unpack

from ..errors import InvalidInputError, shown
from ..store.base import BaseStore, StoreOptions
from ..store.codec import KeyRow
from ..store.records import CredsRow, RowKey, SessionInfo
from ..store.retry import AttemptTimeoutError, within
from ..store.rows import split_session_rows
from .sqlite_connection import SCHEMA_VERSION, connect, is_transient, write_transaction

__all__ = ["SQLiteStore"]

T = TypeVar("T")

_LIST_SESSIONS = """
SELECT session_id, MAX(updated_at), SUM(key_count), MAX(has_creds), SUM(size) FROM (
    SELECT session_id, updated_at, 0 AS key_count, 1 AS has_creds, length(value) AS size
    FROM wa_creds
    UNION ALL
    SELECT session_id, MAX(updated_at), COUNT(*), 0, SUM(length(value))
    FROM wa_keys GROUP BY session_id
) GROUP BY session_id ORDER BY session_id
"""


class SQLiteStore(BaseStore):
    """Stores auth states in a SQLite file: the embedded default.

    Args:
        path: the database file; created if missing (its folder must exist),
            with mode 0600, as are its ``-wal`` and ``-shm`` files.
        busy_timeout: seconds a write waits for another writer's lock before
            the attempt fails as transient (default 5.0).
        migrate: create or upgrade the schema on ``open()`` (default True).
        **options: ``retry``, ``max_value_size``, ``on_retry``, ``on_giveup``
            as for every store.

    Raises:
        InvalidInputError: a path that is not a str or path-like, is empty or
            holds a NUL character, or a bad option.
    """

    kind = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 5.0,
        migrate: bool = True,
        **options: Unpack[StoreOptions],
    ) -> None:
        text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
        if not isinstance(text, str) or not text:
            raise InvalidInputError(
                f"path must be a non-empty str or path, not {type(path).__name__}"
                if not isinstance(text, str)
                else "path must not be empty: name the database file"
            )
        if "\x00" in text:
            raise InvalidInputError(
                "path contains a NUL character, which no file name can hold: fix the path"
            )
        if (
            isinstance(busy_timeout, bool)
            or not isinstance(busy_timeout, (int, float))
            or not (0 <= busy_timeout < 3600)
        ):
            raise InvalidInputError(
                f"busy_timeout must be seconds in [0, 3600), not {shown(busy_timeout)}"
            )
        super().__init__(**options)
        self.path = Path(path)
        self.busy_timeout = float(busy_timeout)
        self.migrate = migrate
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None

    def _describe(self) -> str:
        return f"sqlite {str(self.path)!r}"

    # -- the thread ------------------------------------------------------------

    async def _in_thread(self, fn: Callable[[sqlite3.Connection], T], timeout: float) -> T:
        conn, executor = self._conn, self._executor
        assert conn is not None
        assert executor is not None
        future = asyncio.get_running_loop().run_in_executor(executor, fn, conn)
        try:
            return await within(future, timeout)
        except AttemptTimeoutError:
            # The thread is not cancelled by the timeout: interrupt the
            # statement so the next attempt does not queue behind it.
            conn.interrupt()
            raise

    def _is_transient(self, exc: BaseException) -> bool:
        return is_transient(exc)

    # -- life cycle --------------------------------------------------------------

    async def _open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wa-sqlite")
        loop = asyncio.get_running_loop()
        try:
            self._conn = await loop.run_in_executor(
                self._executor,
                lambda: connect(self.path, busy_timeout=self.busy_timeout, migrate=self.migrate),
            )
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def _close(self) -> None:
        conn, executor = self._conn, self._executor
        self._conn = self._executor = None
        if executor is not None:
            if conn is not None:
                await asyncio.get_running_loop().run_in_executor(executor, conn.close)
            executor.shutdown(wait=True)

    # -- primitives --------------------------------------------------------------

    async def _read_creds(self, session_id: str, timeout: float) -> tuple[bytes, int] | None:
        def read(conn: sqlite3.Connection) -> tuple[bytes, int] | None:
            row = conn.execute(
                "SELECT value, version FROM wa_creds WHERE session_id = ?", (session_id,)
            ).fetchone()
            return None if row is None else (row[0], row[1])

        return await self._in_thread(read, timeout)

    async def _read_creds_page(
        self, after: str | None, limit: int, timeout: float
    ) -> list[CredsRow]:
        def read(conn: sqlite3.Connection) -> list[CredsRow]:
            return conn.execute(
                "SELECT session_id, value, version FROM wa_creds WHERE session_id > ?"
                " ORDER BY session_id LIMIT ?",
                (after if after is not None else "", limit),
            ).fetchall()

        return await self._in_thread(read, timeout)

    async def _write_creds(
        self, session_id: str, blob: bytes, version: int, timeout: float
    ) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT INTO wa_creds (session_id, value, version, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (session_id) DO UPDATE SET value = excluded.value,"
                " version = excluded.version, updated_at = excluded.updated_at"
                " WHERE wa_creds.version < excluded.version",
                (session_id, blob, version, time.time()),
            )
            return cursor.rowcount > 0

        return await self._in_thread(write, timeout)

    async def _read_keys(
        self, session_id: str, category: str, ids: list[str], timeout: float
    ) -> dict[str, bytes]:
        def read(conn: sqlite3.Connection) -> dict[str, bytes]:
            # One statement whatever the number of ids: the ids travel as a JSON array.
            rows = conn.execute(
                "SELECT key_id, value FROM wa_keys WHERE session_id = ? AND category = ?"
                " AND key_id IN (SELECT value FROM json_each(?))",
                (session_id, category, json.dumps(ids, ensure_ascii=False)),
            )
            return dict(rows)

        return await self._in_thread(read, timeout)

    async def _read_categories(
        self,
        session_id: str,
        categories: list[str],
        after: tuple[str, str] | None,
        limit: int,
        timeout: float,
    ) -> list[tuple[str, str, bytes]]:
        def read(conn: sqlite3.Connection) -> list[tuple[str, str, bytes]]:
            # A range of the primary key: (session_id, category, key_id) order.
            rows = conn.execute(
                "SELECT category, key_id, value FROM wa_keys WHERE session_id = ?"
                " AND category IN (SELECT value FROM json_each(?))"
                " AND (category, key_id) > (?, ?) ORDER BY category, key_id LIMIT ?",
                (session_id, json.dumps(categories), *(after or ("", "")), limit),
            )
            return [(c, k, v) for c, k, v in rows]

        return await self._in_thread(read, timeout)

    async def _write_keys(self, session_id: str, rows: list[KeyRow], timeout: float) -> None:
        now = time.time()
        upserts = [(session_id, c, k, v, now) for c, k, v in rows if v is not None]
        deletes = [(session_id, c, k) for c, k, v in rows if v is None]

        def write(conn: sqlite3.Connection) -> None:
            if upserts:
                conn.executemany(
                    "INSERT INTO wa_keys (session_id, category, key_id, value, updated_at)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (session_id, category, key_id)"
                    " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    upserts,
                )
            if deletes:
                conn.executemany(
                    "DELETE FROM wa_keys WHERE session_id = ? AND category = ? AND key_id = ?",
                    deletes,
                )

        await self._in_thread(lambda conn: write_transaction(conn, write), timeout)

    async def _clear_keys(self, session_id: str, timeout: float) -> int:
        def clear(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM wa_keys WHERE session_id = ?", (session_id,)).rowcount

        return await self._in_thread(clear, timeout)

    async def _list_sessions(self, timeout: float) -> list[SessionInfo]:
        def read(conn: sqlite3.Connection) -> list[SessionInfo]:
            return [
                SessionInfo(
                    session_id=sid,
                    updated_at=datetime.fromtimestamp(updated, timezone.utc),
                    key_count=keys,
                    has_creds=bool(has_creds),
                    size=size,
                )
                for sid, updated, keys, has_creds, size in conn.execute(_LIST_SESSIONS)
            ]

        return await self._in_thread(read, timeout)

    async def _delete_session(self, session_id: str, timeout: float) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            keys = conn.execute("DELETE FROM wa_keys WHERE session_id = ?", (session_id,))
            creds = conn.execute("DELETE FROM wa_creds WHERE session_id = ?", (session_id,))
            return keys.rowcount + creds.rowcount > 0

        return await self._in_thread(lambda conn: write_transaction(conn, delete), timeout)

    async def _schema_version(self, timeout: float) -> int | None:
        def read(conn: sqlite3.Connection) -> int:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])

        return await self._in_thread(read, timeout)

    async def _health(self, timeout: float) -> dict[str, Any]:
        started = time.perf_counter()
        version = await self._schema_version(timeout)
        return {
            "round_trip_ms": (time.perf_counter() - started) * 1000,
            "schema_version": version,
            "expected_schema_version": SCHEMA_VERSION,
            "server_version": f"SQLite {sqlite3.sqlite_version}",
        }

    async def _replace_session(
        self,
        session_id: str,
        creds: bytes | None,
        version: int,
        rows: list[KeyRow],
        overwrite: bool,
        timeout: float,
    ) -> bool:
        now = time.time()

        def replace(conn: sqlite3.Connection) -> bool:
            if not overwrite:
                exists, ours = conn.execute(
                    "SELECT EXISTS (SELECT 1 FROM wa_creds WHERE session_id = ?)"
                    " OR EXISTS (SELECT 1 FROM wa_keys WHERE session_id = ?),"
                    " EXISTS (SELECT 1 FROM wa_creds WHERE session_id = ? AND version = ?)",
                    (session_id, session_id, session_id, version),
                ).fetchone()
                if exists:
                    # An earlier attempt of this very call (timed out, but committed)?
                    return bool(ours)
            conn.execute("DELETE FROM wa_keys WHERE session_id = ?", (session_id,))
            conn.execute("DELETE FROM wa_creds WHERE session_id = ?", (session_id,))
            if creds is not None:
                conn.execute(
                    "INSERT INTO wa_creds (session_id, value, version, updated_at)"
                    " VALUES (?, ?, ?, ?)",
                    (session_id, creds, version, now),
                )
            conn.executemany(
                "INSERT INTO wa_keys (session_id, category, key_id, value, updated_at)"
                " VALUES (?, ?, ?, ?, ?)",
                [(session_id, c, k, v, now) for c, k, v in rows if v is not None],
            )
            return True

        return await self._in_thread(lambda conn: write_transaction(conn, replace), timeout)

    async def _read_session(
        self, session_id: str, timeout: float
    ) -> tuple[bytes | None, list[tuple[str, str, bytes]]] | None:
        def read(
            conn: sqlite3.Connection,
        ) -> tuple[bytes | None, list[tuple[str, str, bytes]]] | None:
            # One statement, so creds and keys come from one snapshot.
            rows = conn.execute(
                "SELECT NULL, NULL, value FROM wa_creds WHERE session_id = ? UNION ALL"
                " SELECT category, key_id, value FROM wa_keys WHERE session_id = ?",
                (session_id, session_id),
            ).fetchall()
            return split_session_rows(rows)

        return await self._in_thread(read, timeout)

    async def _scan(
        self, table: str, after: RowKey | None, limit: int, timeout: float
    ) -> list[tuple[RowKey, bytes]]:
        if table == "creds":
            query = (
                "SELECT session_id, '', '', value FROM wa_creds WHERE session_id > ?"
                " ORDER BY session_id LIMIT ?"
            )
            params: tuple[object, ...] = (after[0] if after else "", limit)
        else:
            query = (
                "SELECT session_id, category, key_id, value FROM wa_keys"
                " WHERE (session_id, category, key_id) > (?, ?, ?)"
                " ORDER BY session_id, category, key_id LIMIT ?"
            )
            params = (*(after or ("", "", "")), limit)

        def read(conn: sqlite3.Connection) -> list[tuple[RowKey, bytes]]:
            return [((s, c, k), v) for s, c, k, v in conn.execute(query, params)]

        return await self._in_thread(read, timeout)

    async def _rewrite(
        self, table: str, changes: list[tuple[RowKey, bytes, bytes]], timeout: float
    ) -> int:
        if table == "creds":
            query = "UPDATE wa_creds SET value = ? WHERE session_id = ? AND value = ?"
            params: list[tuple[object, ...]] = [
                (new, sid, old) for (sid, _, _), old, new in changes
            ]
        else:
            query = (
                "UPDATE wa_keys SET value = ? WHERE session_id = ? AND category = ?"
                " AND key_id = ? AND value = ?"
            )
            params = [(new, sid, c, k, old) for (sid, c, k), old, new in changes]

        def write(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            conn.executemany(query, params)
            return conn.total_changes - before

        return await self._in_thread(lambda conn: write_transaction(conn, write), timeout)
