"""What the SQLite backend knows of its file below the statements: opening it
private, its pragmas, the schema version and its migrations, the write
transaction, and which errors are worth another attempt.

Everything here runs on the store's own thread, with the one connection it
holds; :class:`~wa_session_store.SQLiteStore` calls these when it opens, when
it writes, and when it classifies a failed attempt.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..errors import SchemaVersionError, StoreOperationError, describe_error

__all__ = ["SCHEMA_VERSION", "connect", "is_transient", "write_transaction"]

T = TypeVar("T")

#: The schema version this library writes (``PRAGMA user_version``).
SCHEMA_VERSION = 1

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE wa_creds (
        session_id TEXT PRIMARY KEY,
        value BLOB NOT NULL,
        version INTEGER NOT NULL,
        updated_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE wa_keys (
        session_id TEXT NOT NULL,
        category TEXT NOT NULL,
        key_id TEXT NOT NULL,
        value BLOB NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (session_id, category, key_id)
    ) WITHOUT ROWID;
    """,
}


def connect(path: Path, *, busy_timeout: float, migrate: bool) -> sqlite3.Connection:
    """Open ``path`` (created at 0600 if missing) in WAL mode, its schema checked.

    Raises:
        StoreOperationError: the file cannot be opened or prepared.
        SchemaVersionError: the schema is newer than this library's, or older
            and ``migrate`` is false.
    """
    try:
        _create_private(path)
        conn = sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
    except (sqlite3.Error, OSError) as exc:
        raise StoreOperationError(
            f"cannot open SQLite database {str(path)!r}: {describe_error(exc)}"
        ) from exc
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        _check_schema(conn, path, migrate)
    except BaseException as exc:
        conn.close()
        if isinstance(exc, sqlite3.Error):
            raise StoreOperationError(
                f"cannot prepare SQLite database {str(path)!r}: {describe_error(exc)}"
            ) from exc
        raise
    return conn


def write_transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """``fn(conn)`` in one transaction that takes the database lock up front.

    ``BEGIN IMMEDIATE`` makes writers on one file queue for the lock (up to
    ``busy_timeout``) instead of failing with a deadlock when they upgrade.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def is_transient(exc: BaseException) -> bool:
    """Whether a failed attempt may succeed when repeated: a busy or locked database."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    name = getattr(exc, "sqlite_errorname", "")
    if name:
        return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
    return "locked" in str(exc) or "busy" in str(exc)


def _create_private(path: Path) -> None:
    """Create the database file, if missing, readable and writable by its owner only (0600).

    SQLite creates the ``-wal`` and ``-shm`` files with the mode of the main
    file, so all three hold the private keys at 0600 whatever the umask. An
    existing file keeps the mode it has.
    """
    if str(path) == ":memory:":
        return
    try:
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600
        )
    except FileExistsError:
        return
    os.close(fd)


def _check_schema(conn: sqlite3.Connection, path: Path, migrate: bool) -> None:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"SQLite database {str(path)!r} has schema version {version}, newer than "
            f"this library's {SCHEMA_VERSION}: upgrade wa_session_store"
        )
    if version == SCHEMA_VERSION:
        return
    if not migrate:
        raise SchemaVersionError(
            f"SQLite database {str(path)!r} has schema version {version}, expected "
            f"{SCHEMA_VERSION}: open it once with migrate=True"
        )

    def upgrade(conn: sqlite3.Connection) -> None:
        # Read again under the write lock: another process may have migrated meanwhile.
        (current,) = conn.execute("PRAGMA user_version").fetchone()
        for step in range(current + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[step].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {step:d}")

    write_transaction(conn, upgrade)
