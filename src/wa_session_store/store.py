"""The store contract and the machinery every backend shares.

:class:`AuthStateStore` is what the rest of the library (and any client
integration) programs against. :class:`BaseStore` implements it once:
argument validation, encoding, creds versions and retries live here, and a
backend only supplies single attempts of a few primitive operations on
already encoded bytes. So every backend refuses the same inputs with the same
errors, and a fix to the codec or the retry rules reaches all of them.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, TypedDict, TypeVar, runtime_checkable

from typing_extensions import Self

from ._codec import (
    DEFAULT_MAX_VALUE_SIZE,
    KeyRow,
    check_category,
    check_key_ids,
    check_session_id,
    decode_value,
    encode_creds,
    encode_key_batch,
)
from .errors import (
    DecodeError,
    InvalidInputError,
    SessionStoreError,
    StoreClosedError,
    StoreOperationError,
    describe_error,
)
from .retry import RetryHook, RetryPolicy

__all__ = ["AuthStateStore", "BaseStore", "SessionInfo", "StoreOptions"]

T = TypeVar("T")


class StoreOptions(TypedDict, total=False):
    """The keyword arguments every store accepts (see :class:`BaseStore`)."""

    retry: RetryPolicy | None
    max_value_size: int
    on_retry: RetryHook | None
    on_giveup: RetryHook | None


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

    async def save_creds(self, session_id: str, creds: Mapping[str, Any]) -> None:
        """Store ``creds`` as the session's creds document."""

    async def get_keys(
        self, session_id: str, category: str, ids: Iterable[str | int]
    ) -> dict[str, Any]:
        """Every id asked for, mapped to its value or ``None`` if absent."""

    async def set_keys(self, session_id: str, data: Mapping[str, Mapping[Any, Any]]) -> None:
        """Write ``{category: {key_id: value}}``; ``None`` deletes. All-or-nothing."""

    async def clear_keys(self, session_id: str) -> int:
        """Delete every key of the session (not its creds); return how many."""

    async def list_sessions(self) -> list[SessionInfo]:
        """Every stored session, ordered by id."""

    async def delete_session(self, session_id: str) -> bool:
        """Delete the creds and every key; True if anything was there."""


class VersionClock:
    """Issues creds versions: strictly increasing, and above any version seen.

    Versions are nanoseconds since the epoch, bumped past the last one issued
    or observed, so a save retried late (carrying its old version) can never
    overwrite a newer save, and a new process, which observes the stored
    version when it loads the creds, writes above it even if its clock is
    behind.
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last = max(self._last + 1, time.time_ns())
        return self._last

    def observe(self, version: int) -> None:
        self._last = max(self._last, version)


class BaseStore(ABC):
    """The shared implementation of :class:`AuthStateStore`.

    Subclasses implement the ``_``-prefixed primitives; each is one attempt
    that must respect the ``timeout`` it is given and raise the driver's own
    exceptions, which :meth:`_is_transient` classifies.

    Args:
        retry: how failed calls are retried (default :class:`RetryPolicy()`).
        max_value_size: the largest encoded value (creds document or one key)
            accepted, in bytes (default 64 MiB).
        on_retry: called with :class:`~wa_session_store.RetryDetails` after
            each failed attempt that will be retried.
        on_giveup: called with the details of the last attempt when a call
            gives up.
    """

    #: What the store is called in messages and reprs.
    kind = "store"

    def __init__(
        self,
        *,
        retry: RetryPolicy | None = None,
        max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
        on_retry: RetryHook | None = None,
        on_giveup: RetryHook | None = None,
    ) -> None:
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidInputError(f"retry must be a RetryPolicy, not {type(retry).__name__}")
        if (
            isinstance(max_value_size, bool)
            or not isinstance(max_value_size, int)
            or (max_value_size < 1)
        ):
            raise InvalidInputError(
                f"max_value_size must be a positive int (bytes), not {max_value_size!r}"
            )
        self.retry = retry if retry is not None else RetryPolicy()
        self.max_value_size = max_value_size
        self.on_retry = on_retry
        self.on_giveup = on_giveup
        self._clock = VersionClock()
        self._is_open = False

    # -- life cycle -------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """Whether the store is open."""
        return self._is_open

    async def open(self) -> None:
        """Open the store: connect, and create or upgrade the schema.

        Opening an open store does nothing.
        """
        if self._is_open:
            return
        await self._open()
        self._is_open = True

    async def close(self) -> None:
        """Close the store; closing a closed store does nothing."""
        if not self._is_open:
            return
        self._is_open = False
        await self._close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "open" if self._is_open else "closed"
        return f"<{type(self).__name__} {self._describe()} ({state})>"

    def _describe(self) -> str:
        return self.kind

    # -- the contract -----------------------------------------------------

    async def load_creds(self, session_id: str) -> dict[str, Any] | None:
        """Return the session's creds document, or ``None`` if it has none.

        Raises:
            InvalidInputError: an invalid session id.
            DecodeError: the stored document is not valid BufferJSON.
            StoreUnavailableError: every attempt failed (transient errors).
            StoreOperationError: the database refused the query.
        """
        sid = check_session_id(session_id)
        row = await self._call("load_creds", sid, lambda t: self._read_creds(sid, t))
        if row is None:
            return None
        blob, version = row
        self._clock.observe(version)
        creds = decode_value(blob, what=f"creds of session {sid!r}")
        if not isinstance(creds, dict):
            raise DecodeError(f"creds of session {sid!r} are not a JSON object")
        return creds

    async def save_creds(self, session_id: str, creds: Mapping[str, Any]) -> None:
        """Store ``creds`` as the session's creds document.

        Each save carries a version taken when it is called; a save retried
        late never replaces one that was called after it.

        Raises:
            InvalidInputError: an invalid session id, creds that are not a
                mapping or hold values JSON cannot hold, or a document over
                ``max_value_size``. Nothing is written then.
            StoreUnavailableError, StoreOperationError: as for every call.
        """
        sid = check_session_id(session_id)
        blob = encode_creds(creds, session_id=sid, max_size=self.max_value_size)
        version = self._clock.next()
        await self._call("save_creds", sid, lambda t: self._write_creds(sid, blob, version, t))

    async def get_keys(
        self, session_id: str, category: str, ids: Iterable[str | int]
    ) -> dict[str, Any]:
        """Return ``{key_id: value or None}`` for every id asked for, in one query.

        Int ids are looked up (and returned) as their ``str()``.

        Raises:
            InvalidInputError: an invalid session id, category or key id.
            DecodeError, StoreUnavailableError, StoreOperationError.
        """
        sid = check_session_id(session_id)
        cat = check_category(category)
        wanted = check_key_ids(ids)
        if not wanted:
            self._check_open()
            return {}
        found = await self._call("get_keys", sid, lambda t: self._read_keys(sid, cat, wanted, t))
        return {
            key_id: (
                decode_value(found[key_id], what=f"{cat} key {key_id!r} of session {sid!r}")
                if key_id in found
                else None
            )
            for key_id in wanted
        }

    async def set_keys(self, session_id: str, data: Mapping[str, Mapping[Any, Any]]) -> None:
        """Write a batch ``{category: {key_id: value}}``; a ``None`` value deletes.

        The whole batch is validated and encoded before anything is sent, and
        written in one transaction: all of it lands or none of it.

        Raises:
            InvalidInputError: an invalid id or value anywhere in the batch.
            StoreUnavailableError, StoreOperationError.
        """
        sid = check_session_id(session_id)
        rows = encode_key_batch(data, max_size=self.max_value_size)
        if not rows:
            self._check_open()
            return
        await self._call("set_keys", sid, lambda t: self._write_keys(sid, rows, t))

    async def clear_keys(self, session_id: str) -> int:
        """Delete every key of the session, keeping its creds; return how many were deleted."""
        sid = check_session_id(session_id)
        return await self._call("clear_keys", sid, lambda t: self._clear_keys(sid, t))

    async def list_sessions(self) -> list[SessionInfo]:
        """Return every stored session (with creds or keys), ordered by id."""
        return await self._call("list_sessions", None, self._list_sessions)

    async def delete_session(self, session_id: str) -> bool:
        """Delete the session's creds and every key, atomically.

        Returns:
            True if anything was stored for it.
        """
        sid = check_session_id(session_id)
        return await self._call("delete_session", sid, lambda t: self._delete_session(sid, t))

    # -- shared machinery -------------------------------------------------

    def _check_open(self) -> None:
        if not self._is_open:
            raise StoreClosedError(
                f"{self.kind} store is not open: use 'async with store:' or 'await store.open()'"
            )

    async def _call(
        self, op: str, session_id: str | None, attempt: Callable[[float], Awaitable[T]]
    ) -> T:
        self._check_open()
        try:
            return await self.retry.call(
                op,
                session_id,
                attempt,
                is_transient=self._is_transient,
                on_retry=self.on_retry,
                on_giveup=self.on_giveup,
            )
        except SessionStoreError:
            raise
        except Exception as exc:
            target = f" for session {session_id!r}" if session_id is not None else ""
            raise StoreOperationError(
                f"{op}{target} was refused by the {self.kind} database: {describe_error(exc)}"
            ) from exc

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
    async def _write_creds(
        self, session_id: str, blob: bytes, version: int, timeout: float
    ) -> bool:
        """Upsert unless a newer version is stored; True if written."""

    @abstractmethod
    async def _read_keys(
        self, session_id: str, category: str, ids: list[str], timeout: float
    ) -> dict[str, bytes]:
        """The encoded values of the ids that exist."""

    @abstractmethod
    async def _write_keys(self, session_id: str, rows: list[KeyRow], timeout: float) -> None:
        """Upsert and delete ``rows`` in one transaction."""

    @abstractmethod
    async def _clear_keys(self, session_id: str, timeout: float) -> int: ...

    @abstractmethod
    async def _list_sessions(self, timeout: float) -> list[SessionInfo]: ...

    @abstractmethod
    async def _delete_session(self, session_id: str, timeout: float) -> bool: ...
