"""The PostgreSQL schema's versions: the migrations and the upgrade that runs them.

Migrations are applied in one transaction under a transaction-scoped advisory
lock (so ten processes starting at once migrate once, and PgBouncer in
transaction mode is fine), and recorded in ``<prefix>schema_version``. A
database whose schema is newer than this library is refused.

:class:`~wa_session_store.PostgresStore` runs :func:`prepare_schema` when it
opens and reads :func:`schema_version` for its health; the table names come
from :class:`~wa_session_store.backends.postgres_schema.Schema`.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from ..errors import SchemaVersionError
from .postgres_schema import Schema

__all__ = ["SCHEMA_VERSION", "prepare_schema", "schema_version"]

_MIGRATIONS: tuple[str, ...] = (
    # 1: creds (one row per session, versioned) and keys (one row per key).
    """
    CREATE TABLE {creds} (
        session_id text PRIMARY KEY,
        value bytea NOT NULL,
        version bigint NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE {keys} (
        session_id text NOT NULL,
        category text NOT NULL,
        key_id text NOT NULL,
        value bytea NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (session_id, category, key_id)
    );
    """,
    # 2: leases. A row outlives its lease (and its session) so that fencing
    # tokens keep increasing and are never reused.
    """
    CREATE TABLE {leases} (
        session_id text PRIMARY KEY,
        owner text NOT NULL,
        token bigint NOT NULL,
        expires_at timestamptz NOT NULL
    );
    """,
)

#: The schema version this library writes.
SCHEMA_VERSION = len(_MIGRATIONS)


async def schema_version(conn: psycopg.AsyncConnection[Any], schema: Schema) -> int:
    """The version recorded for ``schema``'s tables in the database (0 when none is)."""
    cur = await conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL",
        (schema.names["version"].as_string(conn),),
    )
    row = await cur.fetchone()
    if not row or not row[0]:
        return 0
    cur = await conn.execute(
        sql.SQL("SELECT coalesce(max(version), 0) FROM {}").format(schema.names["version"])
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def prepare_schema(
    conn: psycopg.AsyncConnection[Any], schema: Schema, *, migrate: bool
) -> int:
    """Check the version of ``schema``'s tables and, with ``migrate``, bring it up to date.

    Returns:
        The version now in place.

    Raises:
        SchemaVersionError: the database is newer than this library, or
            older while ``migrate`` is False.
    """
    current = await schema_version(conn, schema)
    _refuse_newer(schema, current)
    if current == SCHEMA_VERSION:
        return current
    if not migrate:
        raise SchemaVersionError(
            f"tables {schema.describe()} are at schema version {current}, this library needs "
            f"{SCHEMA_VERSION}: run the migrations as the owner role "
            "(wa-session-store migrate, or open with migrate=True)"
        )
    async with conn.transaction():
        # Transaction-scoped, so it is released by COMMIT even through PgBouncer.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))",
            ("wa_session_store:" + schema.describe(),),
        )
        if schema.schema:
            await conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema.schema))
            )
        await conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (version integer PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(schema.names["version"])
        )
        # Read again under the lock: another process may have migrated meanwhile.
        current = await schema_version(conn, schema)
        _refuse_newer(schema, current)
        for step in range(current + 1, SCHEMA_VERSION + 1):
            await conn.execute(
                sql.SQL(_MIGRATIONS[step - 1]).format(
                    creds=schema.names["creds"],
                    keys=schema.names["keys"],
                    leases=schema.names["leases"],
                )
            )
            await conn.execute(
                sql.SQL("INSERT INTO {} (version) VALUES (%s)").format(schema.names["version"]),
                (step,),
            )
    return SCHEMA_VERSION


def _refuse_newer(schema: Schema, current: int) -> None:
    if current > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"tables {schema.describe()} are at schema version {current}, newer than this "
            f"library's {SCHEMA_VERSION}: upgrade wa_session_store"
        )
