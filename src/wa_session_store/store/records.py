"""The values stores take and return: session listings, pages, health, exports, options.

Plain frozen data; nothing here does I/O or imports a backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict

from ..errors import SessionStoreError
from ..metrics.instrumentation import Metrics
from .crypto import Cipher
from .retry import RetryPolicy
from .retry_report import RetryHook

__all__ = [
    "CredsPage",
    "CredsRow",
    "ReencryptProgress",
    "RowKey",
    "SessionExport",
    "SessionInfo",
    "StoreHealth",
    "StoreOptions",
]

RowKey = tuple[str, str, str]
"""A row's key: (session id, category, key id); creds rows use ("", "") for the last two."""


@dataclass(frozen=True, slots=True)
class CredsPage:
    """One page of :meth:`BaseStore.load_creds_page`: many sessions' creds, decoded.

    Attributes:
        creds: ``{session_id: creds document}`` of the sessions that decoded.
        failed: the sessions of the page whose stored document did not decode
            or open (:class:`DecodeError`, :class:`DecryptionError`).
        next_after: the ``after`` of the next page, or None after the last one.
    """

    creds: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed: dict[str, SessionStoreError] = field(default_factory=dict)
    next_after: str | None = None

    def __repr__(self) -> str:
        return (
            f"<CredsPage {len(self.creds)} sessions, {len(self.failed)} failed, "
            f"{'last' if self.next_after is None else 'more'}>"
        )


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """What :meth:`BaseStore.health` found: made for a bot's ``/healthz``.

    Attributes:
        ok: the store answered, accepts writes, and its schema is the one
            this library writes.
        backend: the store kind (``postgresql``, ``sqlite``, ``memory``).
        round_trip_ms: milliseconds of one statement, or None when unreachable.
        schema_version: the schema version found (None: no schema, or unreachable).
        expected_schema_version: the version this library writes (None: no schema).
        server_version: the database server's (PostgreSQL) or library's
            (SQLite) version, or None.
        role: (PostgreSQL) ``"primary"``, ``"replica"`` (a standby in
            recovery) or ``"read-only"`` (not in recovery, but its sessions
            refuse writes: a demoted primary, ``default_transaction_read_only``);
            ``ok`` is False unless ``"primary"``. None for other backends.
        server: ``host:port`` of the server that answered (PostgreSQL; with
            a multi-host DSN, the one the connection reached), else None.
        pool: pooled connections (PostgreSQL): ``size``, ``available``,
            ``waiting``, ``min``, ``max``; else None.
        error: why ``ok`` is False (never a password), or None.
    """

    ok: bool
    backend: str
    round_trip_ms: float | None = None
    schema_version: int | None = None
    expected_schema_version: int | None = None
    server_version: str | None = None
    role: str | None = None
    server: str | None = None
    pool: dict[str, int] | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return {name: getattr(self, name) for name in self.__slots__}


#: Rows of one creds page as backends read them: (session id, encoded creds, version).
CredsRow = tuple[str, bytes, int]


@dataclass(slots=True)
class ReencryptProgress:
    """Counts of :meth:`BaseStore.reencrypt`: rows looked at, and rows sealed again."""

    scanned: int = 0
    rewritten: int = 0


class StoreOptions(TypedDict, total=False):
    """The keyword arguments every store accepts (see :class:`BaseStore`)."""

    retry: RetryPolicy | None
    max_value_size: int
    on_retry: RetryHook | None
    on_giveup: RetryHook | None
    cipher: Cipher | None
    allow_plaintext: bool
    metrics: Metrics | None


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What :meth:`AuthStateStore.list_sessions` reports of one session.

    Attributes:
        session_id: the session's id.
        updated_at: when its creds or a key last changed (timezone-aware, UTC).
        key_count: how many Signal keys it holds.
        has_creds: whether a creds document is stored.
        size: bytes stored for it (creds and keys, as encoded).
    """

    session_id: str
    updated_at: datetime
    key_count: int
    has_creds: bool = True
    size: int = 0


@dataclass(frozen=True, slots=True)
class SessionExport:
    """A whole session as :meth:`AuthStateStore.export_session` reads it.

    Attributes:
        creds: the creds document, or None if only keys are stored.
        keys: ``{category: {key_id: value}}``.
    """

    creds: dict[str, Any] | None
    keys: dict[str, dict[str, Any]]

    def __repr__(self) -> str:
        counts = {category: len(entries) for category, entries in self.keys.items()}
        return f"<SessionExport creds={'yes' if self.creds is not None else 'no'} keys={counts}>"
