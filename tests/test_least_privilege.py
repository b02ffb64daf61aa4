"""Running with a role that may only read and write the library's tables, the
migrations applied separately by the owner."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from wa_session_store import (
    PostgresStore,
    RetryDetails,
    SchemaVersionError,
    StoreOperationError,
    use_auth_state,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def app_role(pg_dsn: str, pg_schema: str) -> Iterator[str]:
    """A login role with no rights yet; dropped afterwards."""
    role = f"wa_app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    yield role
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(pg_schema)))
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _as(dsn: str, role: str) -> str:
    params = conninfo_to_dict(dsn)
    params["user"] = role
    return make_conninfo("", **params)


def _grant_dml(dsn: str, schema: str, role: str) -> None:
    ident = sql.Identifier
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(ident(schema), ident(role)))
        conn.execute(
            sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {} TO {}").format(
                ident(schema), ident(role)
            )
        )


async def test_app_role_with_dml_only(pg_dsn: str, pg_schema: str, app_role: str) -> None:
    async with PostgresStore(pg_dsn, schema=pg_schema):  # the owner migrates
        pass
    _grant_dml(pg_dsn, pg_schema, app_role)
    app_dsn = _as(pg_dsn, app_role)
    for migrate in (False, True):  # True is fine too: an up-to-date schema needs no DDL
        async with PostgresStore(app_dsn, schema=pg_schema, migrate=migrate) as store:
            auth = await use_auth_state(store, f"bot-{migrate}", backup_interval=None)
            await auth.save_creds({"registrationId": 1})
            await auth.keys.set({"pre-key": {"1": b"k"}, "session": {"p": b"s"}})
            await auth.keys.set({"pre-key": {"1": None}})
            assert await auth.keys.get("session", ["p"]) == {"p": b"s"}
            await auth.aclose()
            assert await store.delete_session(f"bot-{migrate}")


async def test_app_role_cannot_migrate(pg_dsn: str, pg_schema: str, app_role: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(pg_schema)))
    _grant_dml(pg_dsn, pg_schema, app_role)
    app_dsn = _as(pg_dsn, app_role)
    with pytest.raises(SchemaVersionError, match="run the migrations"):
        await PostgresStore(app_dsn, schema=pg_schema, migrate=False).open()
    retries: list[RetryDetails] = []
    with pytest.raises(StoreOperationError, match="permission denied"):
        await PostgresStore(app_dsn, schema=pg_schema, on_retry=retries.append).open()
    assert retries == []  # a permission error is not retried


async def test_a_role_without_rights_is_refused_at_once(
    pg_dsn: str, pg_schema: str, app_role: str
) -> None:
    async with PostgresStore(pg_dsn, schema=pg_schema):
        pass
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
                sql.Identifier(pg_schema), sql.Identifier(app_role)
            )
        )
    with pytest.raises(StoreOperationError, match="permission denied"):
        await PostgresStore(_as(pg_dsn, app_role), schema=pg_schema, migrate=False).open()
