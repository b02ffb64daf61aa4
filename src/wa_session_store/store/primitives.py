"""What a backend implements: single attempts of a few primitive operations on rows.

:class:`~wa_session_store.store.base.BaseStore` turns every call into these,
already validated and encoded (see :mod:`~wa_session_store.store.rows`), and
retries them. Each primitive is one attempt that must respect the
``timeout`` it is given and raise the driver's own exceptions, which
:meth:`StorePrimitives._is_transient` classifies. Writes fenced by a lease
are not here: they belong to the backends with leases
(:class:`~wa_session_store.store.base.FencedWrites`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from .codec import KeyRow
from .records import CredsRow, RowKey, SessionInfo

__all__ = ["StorePrimitives"]


class StorePrimitives(ABC):
    """The single-attempt operations every backend supplies (``_``-prefixed)."""

    @abstractmethod
    def _is_transient(self, exc: BaseException) -> bool:
        """Whether ``exc`` may go away if the attempt is repeated."""

    @abstractmethod
    async def _open(self) -> None: ...

    @abstractmethod
    async def _close(self) -> None: ...

    @abstractmethod
    async def _read_creds(self, session_id: str, timeout: float) -> tuple[bytes, int] | None:
        """The encoded creds and their version."""

    @abstractmethod
    async def _read_creds_page(
        self, after: str | None, limit: int, timeout: float
    ) -> list[CredsRow]:
        """Up to ``limit`` creds rows whose session id sorts after ``after``, in id order."""

    @abstractmethod
    async def _write_creds(
        self, session_id: str, blob: bytes, version: int, timeout: float
    ) -> bool:
        """Upsert unless a newer version is stored; True if written (fenced
        writes go to :class:`FencedWrites`)."""

    @abstractmethod
    async def _read_keys(
        self, session_id: str, category: str, ids: list[str], timeout: float
    ) -> dict[str, bytes]:
        """The encoded values of the ids that exist."""

    @abstractmethod
    async def _read_categories(
        self,
        session_id: str,
        categories: list[str],
        after: tuple[str, str] | None,
        limit: int,
        timeout: float,
    ) -> list[tuple[str, str, bytes]]:
        """Up to ``limit`` key rows of ``categories`` after ``after``, in key order."""

    @abstractmethod
    async def _write_keys(self, session_id: str, rows: list[KeyRow], timeout: float) -> None:
        """Upsert and delete ``rows`` in one transaction."""

    @abstractmethod
    async def _clear_keys(self, session_id: str, timeout: float) -> int: ...

    @abstractmethod
    async def _list_sessions(self, timeout: float) -> list[SessionInfo]: ...

    @abstractmethod
    async def _delete_session(self, session_id: str, timeout: float) -> bool: ...

    @abstractmethod
    async def _schema_version(self, timeout: float) -> int | None: ...

    @abstractmethod
    async def _health(self, timeout: float) -> dict[str, Any]:
        """One attempt: ``round_trip_ms``, ``schema_version``,
        ``expected_schema_version``, ``server_version`` and ``role``."""

    @abstractmethod
    async def _replace_session(
        self,
        session_id: str,
        creds: bytes | None,
        version: int,
        rows: list[KeyRow],
        overwrite: bool,
        timeout: float,
    ) -> bool:
        """In one transaction: unless ``overwrite``, return False if anything is
        stored for the session; else delete it all and write ``creds`` and ``rows``."""

    @abstractmethod
    async def _read_session(
        self, session_id: str, timeout: float
    ) -> tuple[bytes | None, list[tuple[str, str, bytes]]] | None:
        """The encoded creds (or None) and every key row, in one snapshot; None if absent."""

    @abstractmethod
    async def _scan(
        self, table: str, after: RowKey | None, limit: int, timeout: float
    ) -> list[tuple[RowKey, bytes]]:
        """Up to ``limit`` rows of ``table`` ("creds" or "keys") after ``after``, in key order.

        Creds rows have the key ``(session_id, "", "")``.
        """

    @abstractmethod
    async def _rewrite(
        self, table: str, changes: list[tuple[RowKey, bytes, bytes]], timeout: float
    ) -> int:
        """Replace each row's value by the new one where it still holds the old one.

        One transaction; the creds version is left as it is. Returns the rows replaced.
        """
