"""The PostgreSQL schema: table names and the statements.

Every statement a primitive sends is built here once, when the store is
made, for its (schema, table prefix) pair. The tables themselves are created
and upgraded by ``postgres_migrations.py``.
"""

from __future__ import annotations

import re
from typing import Any

from psycopg import sql

from ..errors import InvalidInputError, InvalidTypeError, shown
from ..store.codec import KeyRow

__all__ = ["MAX_IDENTIFIER_BYTES", "Schema", "check_schema_name"]

#: The most bytes of an identifier: PostgreSQL keeps the first NAMEDATALEN - 1
#: (63) bytes of a longer name and drops the rest without an error, so two
#: long names that share those bytes would name one schema.
MAX_IDENTIFIER_BYTES = 63

# 30 ASCII characters: with the longest name derived from the prefix (the
# primary key index "<prefix>schema_version_pkey", 19 more), every name stays
# within MAX_IDENTIFIER_BYTES.
_PREFIX = re.compile(r"[a-z_][a-z0-9_]{0,29}")

# Fenced writes: the lease row is locked FOR SHARE in the same statement, so a
# new grant (which must update that row) waits for the write, and a write
# after the grant finds the token replaced and changes nothing.
_FENCE = (
    "fence AS (SELECT 1 FROM {leases} WHERE session_id = %(sid)s AND token = %(token)s FOR SHARE)"
)
_HOLDER = (
    " (SELECT owner FROM {leases} WHERE session_id = %(sid)s),"
    " (SELECT token FROM {leases} WHERE session_id = %(sid)s)"
)
# A late retry carries its old version and loses to anything newer.
_CREDS_UPSERT = (
    "written AS (INSERT INTO {creds} AS c (session_id, value, version)"
    " SELECT %(sid)s, %(value)b, %(version)s WHERE true{held}"
    " ON CONFLICT (session_id) DO UPDATE SET value = excluded.value,"
    " version = excluded.version, updated_at = now()"
    " WHERE c.version < excluded.version RETURNING 1)",
)
# The whole batch in one statement: upserts and deletes travel as arrays. The
# two parts touch disjoint keys (ids are unique within a batch). Without its
# middle (the delete) it is a batch of upserts.
_KEY_BATCH = (
    "batch AS (SELECT * FROM"
    " unnest(%(categories)b::text[], %(ids)b::text[], %(values)b::bytea[])"
    " AS b(category, key_id, value))",
    "removed AS (DELETE FROM {keys} k USING batch b WHERE b.value IS NULL"
    " AND k.session_id = %(sid)s AND k.category = b.category AND k.key_id = b.key_id{held})",
    "written AS (INSERT INTO {keys} (session_id, category, key_id, value)"
    " SELECT %(sid)s, category, key_id, value FROM batch WHERE value IS NOT NULL{held}"
    " ON CONFLICT (session_id, category, key_id)"
    " DO UPDATE SET value = excluded.value, updated_at = now())",
)
_CLEAR_KEYS = ("removed AS (DELETE FROM {keys} WHERE session_id = %(sid)s{held} RETURNING 1)",)


# A grant of every session that {sessions} names (a session_id column) to
# %(owner)s for %(ttl)s seconds: a token one higher than any before (1 for
# the first), where the current lease has expired (or, {ours}, is the
# owner's own: acquiring again). ON CONFLICT ... WHERE settles any race with
# another grant; one statement, however many sessions.
_GRANT = (
    "INSERT INTO {leases} AS l (session_id, owner, token, expires_at)"
    " SELECT session_id, %(owner)s, 1, now() + make_interval(secs => %(ttl)s) FROM {sessions}"
    " ON CONFLICT (session_id) DO UPDATE SET owner = excluded.owner,"
    " token = l.token + 1, expires_at = excluded.expires_at"
    " WHERE l.expires_at <= now(){ours}"
    " RETURNING session_id, owner, token, expires_at"
)


def _grant(sessions: str, *, ours: bool) -> str:
    """The grant of :data:`_GRANT` for ``sessions``; ``ours``: also over the owner's own lease."""
    return _GRANT.replace("{sessions}", sessions).replace(
        "{ours}", " OR l.owner = excluded.owner" if ours else ""
    )


def _write(ctes: tuple[str, ...], result: str, *, fenced: bool) -> str:
    """One write statement: ``ctes`` (each with a ``{held}`` slot) and the ``result`` read.

    Every write returns one row, ``(held, result)``. Fenced, the statement
    also locks the lease row, each part only writes while the token is the
    newest, and the row adds the current holder and token (for
    :class:`~wa_session_store.LeaseLostError`); unfenced, ``held`` is true.
    Data-modifying CTEs run to completion whether or not the result reads them.
    """
    held = " AND EXISTS (SELECT 1 FROM fence)" if fenced else ""
    parts = [_FENCE] if fenced else []
    parts += [cte.replace("{held}", held) for cte in ctes]
    if fenced:
        select = f" SELECT EXISTS (SELECT 1 FROM fence), {result},{_HOLDER}"
    else:
        select = f" SELECT true, {result}"
    return "WITH " + ", ".join(parts) + select


def check_schema_name(schema: object) -> None:
    """Refuse a schema name that PostgreSQL would not keep as given.

    Allowed: a str of 1 to 63 bytes in UTF-8 (the server counts bytes, and
    drops those past the 63rd), without NUL characters or lone surrogates,
    which cannot be sent.

    Raises:
        InvalidTypeError: not a str.
        InvalidInputError: empty, longer than 63 bytes, or holding a
            character that cannot be sent.
    """
    if not isinstance(schema, str):
        raise InvalidTypeError(f"schema must be None or a str, not {type(schema).__name__}")
    if "\x00" in schema or any("\ud800" <= c <= "\udfff" for c in schema):
        raise InvalidInputError(
            f"schema name {shown(schema)} holds a NUL character or a lone surrogate, "
            "which PostgreSQL cannot take"
        )
    size = len(schema.encode("utf-8"))
    if not 0 < size <= MAX_IDENTIFIER_BYTES:
        raise InvalidInputError(
            f"schema name {shown(schema)} is {size} bytes long in UTF-8 ({len(schema)} "
            f"characters); it must have 1 to {MAX_IDENTIFIER_BYTES} bytes, as PostgreSQL "
            f"keeps only the first {MAX_IDENTIFIER_BYTES} bytes of a name"
        )


class Schema:
    """Names and statements for one (schema, table prefix) pair.

    Identifiers only ever reach SQL through :class:`psycopg.sql.Identifier`.
    """

    def __init__(self, schema: str | None, prefix: str) -> None:
        if schema is not None:
            check_schema_name(schema)
        if not isinstance(prefix, str):
            raise InvalidTypeError(f"table_prefix must be a str, not {type(prefix).__name__}")
        if not _PREFIX.fullmatch(prefix):
            raise InvalidInputError(
                f"table_prefix {prefix!r} is not allowed: use 1 to 30 lowercase letters, digits "
                "and underscores, not starting with a digit"
            )
        self.schema = schema
        self.prefix = prefix
        creds, keys, version, leases = (
            self.table(n) for n in ("creds", "keys", "schema_version", "leases")
        )
        self.names = {"creds": creds, "keys": keys, "version": version, "leases": leases}

        self.read_creds = sql.SQL(
            "SELECT value, version FROM {creds} WHERE session_id = %s"
        ).format(creds=creds)
        # Keyset pages in the primary key's order: one index range scan a page
        # (session ids are never empty, so "" starts at the first).
        self.read_creds_page = sql.SQL(
            "SELECT session_id, value, version FROM {creds}"
            " WHERE session_id > %s ORDER BY session_id LIMIT %s"
        ).format(creds=creds)
        # The creds of named sessions (after their leases were granted).
        self.read_creds_of = sql.SQL(
            "SELECT session_id, value, version FROM {creds} WHERE session_id = ANY(%s)"
            " ORDER BY session_id"
        ).format(creds=creds)
        self.read_keys = sql.SQL(
            "SELECT key_id, value FROM {keys}"
            " WHERE session_id = %s AND category = %s AND key_id = ANY(%s)"
        ).format(keys=keys)
        # Whole categories, page by page (preload): a range scan of the primary
        # key; the row comparison and the ORDER BY use the same collation.
        self.read_categories = sql.SQL(
            "SELECT category, key_id, value FROM {keys}"
            " WHERE session_id = %s AND category = ANY(%s) AND (category, key_id) > (%s, %s)"
            " ORDER BY category, key_id LIMIT %s"
        ).format(keys=keys)
        # Every write, fenced or not, from one builder (see _write).
        names = {"creds": creds, "keys": keys, "leases": leases}
        written, removed = "EXISTS (SELECT 1 FROM written)", "(SELECT count(*) FROM removed)"
        self.write_creds, self.write_creds_fenced = (
            sql.SQL(_write(_CREDS_UPSERT, written, fenced=f)).format(**names) for f in (False, True)
        )
        self.clear_keys, self.clear_keys_fenced = (
            sql.SQL(_write(_CLEAR_KEYS, removed, fenced=f)).format(**names) for f in (False, True)
        )
        self._key_batches = {
            (f, deletes): sql.SQL(
                _write(_KEY_BATCH if deletes else _KEY_BATCH[::2], "true", fenced=f)
            ).format(**names)
            for f in (False, True)
            for deletes in (False, True)
        }
        self.delete_session = sql.SQL(
            "WITH k AS (DELETE FROM {keys} WHERE session_id = %s RETURNING 1),"
            " c AS (DELETE FROM {creds} WHERE session_id = %s RETURNING 1)"
            " SELECT (SELECT count(*) FROM k) + (SELECT count(*) FROM c)"
        ).format(keys=keys, creds=creds)
        self.list_sessions = sql.SQL(
            "SELECT session_id, max(updated_at), sum(key_count)::bigint, bool_or(has_creds),"
            " sum(size)::bigint FROM ("
            " SELECT session_id, updated_at, 0 AS key_count, true AS has_creds,"
            " octet_length(value) AS size FROM {creds}"
            " UNION ALL"
            " SELECT session_id, max(updated_at), count(*), false, sum(octet_length(value))"
            " FROM {keys} GROUP BY session_id"
            ") s GROUP BY session_id ORDER BY session_id"
        ).format(keys=keys, creds=creds)

        self._lease_statements(creds, leases)

        # Ending the backends of timed-out attempts (see PostgresAttempts._on_connection):
        # only this role's, with this connection's application name; the count of
        # those that did not end in time comes back.
        stale = (
            "SELECT count(*) FILTER (WHERE NOT {end}) FROM pg_stat_activity"
            " WHERE pid = ANY(%(pids)s) AND usename = current_user"
            " AND application_name = current_setting('application_name')"
        )
        self.end_backends = sql.SQL(stale.format(end="pg_terminate_backend(pid, %(wait_ms)s)"))
        self.end_backends_nowait = sql.SQL(
            stale.format(end="pg_terminate_backend(pid)") + " AND %(wait_ms)s > 0"
        )

        # Whole sessions (import and export).
        self.lock_session = sql.SQL("SELECT pg_advisory_xact_lock(hashtext('wa_session:' || %s))")
        self.session_exists = sql.SQL(
            "SELECT EXISTS (SELECT 1 FROM {creds} WHERE session_id = %(sid)s)"
            " OR EXISTS (SELECT 1 FROM {keys} WHERE session_id = %(sid)s),"
            " EXISTS (SELECT 1 FROM {creds} WHERE session_id = %(sid)s AND version = %(version)s)"
        ).format(creds=creds, keys=keys)
        self.insert_creds = sql.SQL(
            "INSERT INTO {creds} (session_id, value, version) VALUES (%s, %b, %s)"
        ).format(creds=creds)
        # One statement, so creds and keys come from one snapshot.
        self.read_session = sql.SQL(
            "SELECT NULL::text, NULL::text, value FROM {creds} WHERE session_id = %s"
            " UNION ALL SELECT category, key_id, value FROM {keys} WHERE session_id = %s"
        ).format(creds=creds, keys=keys)
        # Key order for resumable batches (reencrypt); the row comparison and
        # the ORDER BY use the same collation, so pages never skip a row.
        self.scan_creds = sql.SQL(
            "SELECT session_id, '', '', value FROM {creds} WHERE session_id > %s"
            " ORDER BY session_id LIMIT %s"
        ).format(creds=creds)
        self.scan_keys = sql.SQL(
            "SELECT session_id, category, key_id, value FROM {keys}"
            " WHERE (session_id, category, key_id) > (%s, %s, %s)"
            " ORDER BY session_id, category, key_id LIMIT %s"
        ).format(keys=keys)
        # Compare-and-set: a value a writer replaced meanwhile is left alone.
        self.rewrite_creds = sql.SQL(
            "UPDATE {creds} t SET value = n.new"
            " FROM unnest(%b::text[], %b::bytea[], %b::bytea[]) AS n(session_id, old, new)"
            " WHERE t.session_id = n.session_id AND t.value = n.old"
        ).format(creds=creds)
        self.rewrite_keys = sql.SQL(
            "UPDATE {keys} t SET value = n.new FROM unnest(%b::text[], %b::text[], %b::text[],"
            " %b::bytea[], %b::bytea[]) AS n(session_id, category, key_id, old, new)"
            " WHERE t.session_id = n.session_id AND t.category = n.category"
            " AND t.key_id = n.key_id AND t.value = n.old"
        ).format(keys=keys)

    def _lease_statements(self, creds: sql.Identifier, leases: sql.Identifier) -> None:
        names = {"creds": creds, "leases": leases}
        # A grant, or the current holder when there is none: one round trip.
        # Expiry uses the server's clock, so instances never compare clocks.
        self.acquire_lease = sql.SQL(
            "WITH granted AS ("
            + _grant("(VALUES (%(sid)s)) AS s(session_id)", ours=True)
            + ") SELECT true, owner, token, expires_at FROM granted"
            " UNION ALL SELECT false, owner, token, expires_at FROM {leases}"
            " WHERE session_id = %(sid)s AND NOT EXISTS (SELECT 1 FROM granted)"
        ).format(**names)
        # The same grant for a page of stored sessions (restore_all with an
        # owner): every session of the page comes back, granted or with its
        # holder. The creds are read by the next statement, whose snapshot
        # follows the grant: a fenced write the grant waited for is seen, and
        # a later one fails its fence. (Read in this statement, they could be
        # older than that write.)
        self.grant_page = sql.SQL(
            "WITH page AS (SELECT session_id FROM {creds} WHERE session_id > %(after)s"
            " ORDER BY session_id LIMIT %(limit)s),"
            " granted AS (" + _grant("page", ours=True) + ")"
            " SELECT p.session_id, g.session_id IS NOT NULL, coalesce(g.owner, c.owner),"
            " coalesce(g.token, c.token), coalesce(g.expires_at, c.expires_at) FROM page p"
            " LEFT JOIN granted g ON g.session_id = p.session_id"
            " LEFT JOIN {leases} c ON c.session_id = p.session_id ORDER BY p.session_id"
        ).format(**names)
        # Renewal and release of one lease or many in one statement (Lease,
        # LeaseRenewer, SessionWorker), fenced lease by lease: only the newest
        # token of a session is extended or released. The outer read of {leases} sees the rows
        # as they were before the update, so a lease that is not renewed comes
        # back with the session's current holder.
        self.renew_leases = sql.SQL(
            "WITH b AS (SELECT * FROM unnest(%(sids)s::text[], %(tokens)s::int8[],"
            " %(ttls)s::float8[]) AS b(session_id, token, ttl)),"
            " renewed AS (UPDATE {leases} l SET expires_at = now() + make_interval(secs => b.ttl)"
            " FROM b WHERE l.session_id = b.session_id AND l.token = b.token"
            " RETURNING l.session_id, l.expires_at)"
            " SELECT b.session_id, r.expires_at, c.owner, c.token FROM b"
            " LEFT JOIN renewed r ON r.session_id = b.session_id"
            " LEFT JOIN {leases} c ON c.session_id = b.session_id"
        ).format(**names)
        self.release_leases = sql.SQL(
            "UPDATE {leases} l SET expires_at = now()"
            " FROM unnest(%(sids)s::text[], %(tokens)s::int8[]) AS b(session_id, token)"
            " WHERE l.session_id = b.session_id AND l.token = b.token"
        ).format(**names)
        self.list_leases = sql.SQL(
            "SELECT session_id, owner, token, expires_at, expires_at <= now() FROM {leases}"
            " ORDER BY session_id"
        ).format(**names)
        self.lease_holder = sql.SQL(
            "SELECT owner, token, expires_at FROM {leases} WHERE session_id = %(sid)s"
        ).format(**names)
        # SKIP LOCKED: workers claiming at once split the free sessions instead
        # of queueing on each other; ON CONFLICT ... WHERE settles any race.
        # A race costs the loser its candidates: its snapshot may predate a
        # grant that committed before it locked them, and its grant's WHERE
        # then refuses them. So the first column counts the candidates, and
        # claim_sessions asks again for those it lost (one row of NULLs but
        # that count when nothing was granted).
        self.claim_sessions = sql.SQL(
            "WITH free AS ("
            " SELECT c.session_id FROM {creds} c LEFT JOIN {leases} l USING (session_id)"
            " WHERE l.session_id IS NULL OR l.expires_at <= now()"
            " ORDER BY c.session_id LIMIT %(limit)s FOR UPDATE OF c SKIP LOCKED),"
            " granted AS (" + _grant("free", ours=False) + ")"
            " SELECT (SELECT count(*) FROM free), g.session_id, g.owner, g.token, g.expires_at"
            " FROM (SELECT 1) one LEFT JOIN granted g ON true"
        ).format(**names)

    def key_batch(self, rows: list[KeyRow], *, fenced: bool) -> sql.Composed:
        """The statement writing ``rows`` (see :meth:`key_batch_params`) in one round trip.

        A batch without deletions (a first pairing's pre-keys) skips the delete part.
        """
        return self._key_batches[fenced, any(value is None for _, _, value in rows)]

    @staticmethod
    def key_batch_params(rows: list[KeyRow]) -> dict[str, list[Any]]:
        """The arrays a key batch travels as (``sid``, and ``token`` if fenced, go with them)."""
        return {
            "categories": [row[0] for row in rows],
            "ids": [row[1] for row in rows],
            "values": [row[2] for row in rows],
        }

    def table(self, name: str) -> sql.Identifier:
        full = self.prefix + name
        return sql.Identifier(self.schema, full) if self.schema else sql.Identifier(full)

    def describe(self) -> str:
        return f"{self.schema + '.' if self.schema else ''}{self.prefix}*"
