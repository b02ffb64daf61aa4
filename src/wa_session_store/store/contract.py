"""The store contract: what the rest of the library (and any client
integration) programs against.

:class:`AuthStateStore` is the protocol every backend satisfies (through
:class:`~wa_session_store.store.base.BaseStore`, or on its own); the
:class:`FencedWrites` and :class:`Fence` protocols are what a store with
leases adds, so the auth layer can fence its writes without knowing the
backend. These docstrings are the API reference and what
``tools/sync_twins.py`` reads to generate the blocking twins' list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from typing_extensions import Self

from .codec import KeyRow
from .records import SessionExport, SessionInfo

__all__ = ["AuthStateStore", "Fence", "FencedWrites"]


@runtime_checkable
class AuthStateStore(Protocol):
    """Where WhatsApp auth states live. Every method is a coroutine.

    A store is an async context manager: ``async with store:`` opens it
    (creating or upgrading its schema) and closes it.
    """

    async def open(self) -> None:
        """Open the store; create or upgrade its schema."""

    async def close(self) -> None:
        """Close the store and release its connections."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def load_creds(self, session_id: str) -> dict[str, Any] | None:
        """The stored creds document, or ``None`` for a new session."""

    async def save_creds(
        self, session_id: str, creds: Mapping[str, Any], *, fence: Fence | None = None
    ) -> None:
        """Store ``creds`` as the session's creds document (fenced by a lease if given)."""

    async def get_keys(
        self, session_id: str, category: str, ids: Iterable[str | int]
    ) -> dict[str, Any]:
        """Every id asked for, mapped to its value or ``None`` if absent."""

    async def load_categories(
        self,
        session_id: str,
        categories: Iterable[str],
        *,
        after: tuple[str, str] | None = None,
        limit: int = 1000,
    ) -> list[tuple[str, str, Any]]:
        """One page of the session's keys in ``categories``: ``(category, key_id, value)``
        rows after ``after`` in (category, key id) order; fewer than ``limit`` ends it."""

    async def set_keys(
        self,
        session_id: str,
        data: Mapping[str, Mapping[Any, Any]],
        *,
        fence: Fence | None = None,
    ) -> None:
        """Write ``{category: {key_id: value}}``; ``None`` deletes. All-or-nothing."""

    async def clear_keys(self, session_id: str, *, fence: Fence | None = None) -> int:
        """Delete every key of the session (not its creds); return how many."""

    async def list_sessions(self) -> list[SessionInfo]:
        """Every stored session, ordered by id."""

    async def delete_session(self, session_id: str) -> bool:
        """Delete the creds and every key; True if anything was there."""

    async def import_session(
        self,
        session_id: str,
        creds: Mapping[str, Any] | None,
        keys: Mapping[str, Mapping[Any, Any]],
        *,
        overwrite: bool = False,
    ) -> None:
        """Write a whole session (creds and every key) in one transaction."""

    async def export_session(self, session_id: str) -> SessionExport | None:
        """The session's creds and every key, read in one snapshot; None if absent."""


class FencedWrites(Protocol):
    """The fenced write primitives of a store with leases (``PostgresLeases``).

    Each is one attempt, like the primitives of :class:`BaseStore`, and
    raises :class:`~wa_session_store.LeaseLostError` (writing nothing) unless
    ``token`` is the session's newest lease token.
    """

    async def _write_creds_fenced(
        self, session_id: str, blob: bytes, version: int, token: int, timeout: float
    ) -> bool: ...

    async def _write_keys_fenced(
        self, session_id: str, rows: list[KeyRow], token: int, timeout: float
    ) -> None: ...

    async def _clear_keys_fenced(self, session_id: str, token: int, timeout: float) -> int: ...


class Fence(Protocol):
    """What fences a write: a lease's session and token (a :class:`~wa_session_store.Lease`)."""

    @property
    def session_id(self) -> str: ...

    @property
    def token(self) -> int: ...
