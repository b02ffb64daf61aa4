"""The store contract and the machinery every backend shares.

:class:`AuthStateStore` is what the rest of the library (and any client
integration) programs against. :class:`BaseStore` implements it once:
argument validation, encoding, creds versions and retries live here, and a
backend only supplies single attempts of a few primitive operations on
already encoded bytes. So every backend refuses the same inputs with the same
errors, and a fix to the codec or the retry rules reaches all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from types import TracebackType
from typing import Any, Protocol, TypedDict, TypeVar, runtime_checkable

from typing_extensions import Self

from ._codec import (
    DEFAULT_MAX_VALUE_SIZE,
    MAX_WRITE_SIZE,
    KeyRow,
    check_category,
    check_key_id,
    check_key_ids,
    check_session_id,
    decode_value,
    encode_creds,
    encode_key_batch,
)
from .crypto import MAGIC, Cipher, associated_data, sealed_key_id
from .errors import (
    DecodeError,
    DecryptionError,
    InvalidInputError,
    InvalidTypeError,
    SessionExistsError,
    SessionStoreError,
    StoreClosedError,
    StoreOperationError,
    StoreUnavailableError,
    describe_error,
    shown,
)
from .metrics import Metrics
from .retry import RetryDetails, RetryHook, RetryPolicy

__all__ = [
    "AuthStateStore",
    "BaseStore",
    "CredsPage",
    "ReencryptProgress",
    "SessionExport",
    "SessionInfo",
    "StoreHealth",
    "StoreOptions",
]

RowKey = tuple[str, str, str]
"""A row's key: (session id, category, key id); creds rows use ("", "") for the last two."""


def split_session_rows(
    rows: list[tuple[str | None, str | None, bytes]],
) -> tuple[bytes | None, list[tuple[str, str, bytes]]] | None:
    """Split one session's rows, as backends read them in one statement for
    :meth:`BaseStore.export_session`: the creds (the row without a category) and
    the key rows; None when there are no rows."""
    if not rows:
        return None
    creds = next((value for category, _, value in rows if category is None), None)
    keys = [(c, k, v) for c, k, v in rows if c is not None and k is not None]
    return creds, keys


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
        ok: the store answered and its schema is the one this library writes.
        backend: the store kind (``postgresql``, ``sqlite``, ``memory``).
        round_trip_ms: milliseconds of one statement, or None when unreachable.
        schema_version: the schema version found (None: no schema, or unreachable).
        expected_schema_version: the version this library writes (None: no schema).
        server_version: the database server's (PostgreSQL) or library's
            (SQLite) version, or None.
        role: ``"primary"`` or ``"replica"`` (PostgreSQL), else None.
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
    pool: dict[str, int] | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return {name: getattr(self, name) for name in self.__slots__}


#: Rows of one creds page as backends read them: (session id, encoded creds, version).
CredsRow = tuple[str, bytes, int]


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for a synchronous burst of allocations.

    Decoding a page of creds builds tens of thousands of dicts, none of them
    cyclic; left on, the collector runs full passes over them and doubles the
    time. Nothing else runs meanwhile (no await inside), and it is switched
    back on at once.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass(slots=True)
class ReencryptProgress:
    """Counts of :meth:`BaseStore.reencrypt`: rows looked at, and rows sealed again."""

    scanned: int = 0
    rewritten: int = 0


T = TypeVar("T")


def _page_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100_000:
        raise InvalidInputError(f"limit must be an int from 1 to 100000, not {limit!r}")
    return limit


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
            accepted, in bytes (default 64 MiB, at most 512 MiB). One write
            (a key batch, an imported session) carries at most 512 MiB, on
            every backend.
        on_retry: called with :class:`~wa_session_store.RetryDetails` after
            each failed attempt that will be retried.
        on_giveup: called with the details of the last attempt when a call
            gives up.
        cipher: seals every creds document and key value before it is
            written, e.g. :class:`~wa_session_store.AESGCMCipher` (default
            None: values are stored as plain BufferJSON).
        allow_plaintext: with a cipher, read rows that are not sealed too
            (default False: they raise :class:`DecryptionError`). For
            migrating an existing database; run :meth:`reencrypt` after.
        metrics: where every call, retry and give-up is reported (and the
            auth states and leases of this store), e.g.
            :class:`~wa_session_store.metrics.PrometheusMetrics` (default
            None: nothing is recorded, at no cost).

    Raises:
        InvalidTypeError: a ``cipher`` or ``metrics`` of the wrong type.
        InvalidInputError: a bad ``retry`` or ``max_value_size``.
    """

    #: What the store is called in messages and reprs.
    kind = "store"
    #: Whether the store grants leases and fences writes with them (PostgreSQL).
    supports_leases = False

    def __init__(
        self,
        *,
        retry: RetryPolicy | None = None,
        max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
        on_retry: RetryHook | None = None,
        on_giveup: RetryHook | None = None,
        cipher: Cipher | None = None,
        allow_plaintext: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        if metrics is not None and not isinstance(metrics, Metrics):
            raise InvalidTypeError(
                "metrics must be a wa_session_store.metrics.Metrics (PrometheusMetrics(), "
                f"OpenTelemetryMetrics()) or None, not {type(metrics).__name__}"
            )
        if cipher is not None and not isinstance(cipher, Cipher):
            raise InvalidTypeError(
                f"cipher must provide active, seal() and open() (e.g. AESGCMCipher), "
                f"not {type(cipher).__name__}"
            )
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidInputError(f"retry must be a RetryPolicy, not {type(retry).__name__}")
        if (
            isinstance(max_value_size, bool)
            or not isinstance(max_value_size, int)
            or not (1 <= max_value_size <= MAX_WRITE_SIZE)
        ):
            raise InvalidInputError(
                f"max_value_size must be an int of bytes from 1 to {MAX_WRITE_SIZE:,} "
                f"(512 MiB, the same on every backend), not {shown(max_value_size)}"
            )
        self.retry = retry if retry is not None else RetryPolicy()
        self.max_value_size = max_value_size
        self.on_retry = on_retry
        self.on_giveup = on_giveup
        self.cipher = cipher
        self.allow_plaintext = bool(allow_plaintext)
        self.metrics = metrics
        self._clock = VersionClock()
        self._is_open = False
        self._opening: asyncio.Future[None] | None = None
        self._open_waiters = 0

    # -- life cycle -------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """Whether the store is open."""
        return self._is_open

    async def open(self) -> None:
        """Open the store: connect, and create or upgrade the schema.

        Opening an open store does nothing; calls made while an open is in
        flight wait for that one (one set of connections, whoever called).
        A closed store can be opened again.

        Raises:
            StoreConfigurationError: the store cannot work as configured (a
                refused role or password, a missing database, a bad port,
                sslmode or host name); raised at the first attempt.
            StoreClosedError: :meth:`close` was called while this open was
                in flight; the store is closed.
            StoreUnavailableError, StoreOperationError, SchemaVersionError:
                as the backend reports them.
        """
        if self._is_open:
            return
        opening = self._opening
        if opening is None or opening.done():
            opening = self._opening = asyncio.ensure_future(self._open_once())
        self._open_waiters += 1
        try:
            await asyncio.shield(opening)
        except asyncio.CancelledError:
            if opening.cancelled():
                raise StoreClosedError(
                    f"{self.kind} store was closed while it was opening"
                ) from None
            if self._open_waiters == 1:
                # The last caller gave up: the open must not go on unowned.
                opening.cancel()
                await asyncio.wait([opening])
            raise
        finally:
            self._open_waiters -= 1

    async def _open_once(self) -> None:
        await self._open()
        # Set by the task itself, so close() sees it the moment the task is done.
        self._is_open = True

    async def close(self) -> None:
        """Close the store; closing a closed store does nothing.

        A close during an in-flight :meth:`open` cancels that open (which
        releases whatever it had connected) and waits for it: when close
        returns, the store is closed, and that open raises
        :class:`StoreClosedError`.
        """
        opening, self._opening = self._opening, None
        if opening is not None and not opening.done():
            opening.cancel()
            await asyncio.wait([opening])
        if opening is not None and not opening.cancelled():
            opening.exception()  # retrieved here; the waiting open() reports it
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
        return self._decode_creds(sid, blob)

    def _decode_creds(self, session_id: str, blob: bytes) -> dict[str, Any]:
        what = f"creds of session {session_id!r}"
        creds = decode_value(self._unseal(blob, associated_data(session_id), what), what=what)
        if not isinstance(creds, dict):
            raise DecodeError(f"{what} are not a JSON object")
        return creds

    #: Sessions per page of :meth:`iter_creds_pages` (and ``restore_all``).
    CREDS_PAGE_SIZE = 1000

    async def load_creds_page(
        self, after: str | None = None, *, limit: int | None = None
    ) -> CredsPage:
        """The creds of up to ``limit`` sessions whose id sorts after ``after``, in one statement.

        The bulk form of :meth:`load_creds`, for bringing many sessions back
        at once: the same decoding and validation (a session whose document
        does not decode is reported in :attr:`CredsPage.failed`, the others
        are returned), and the stored versions are observed, so saves made
        afterwards land above them. Sessions without creds (keys only) are
        not included. Pages follow the sessions' id order: pass
        :attr:`CredsPage.next_after` to get the next one.

        Args:
            after: start after this session id (default None: from the first).
            limit: the most sessions in the page (default None: ``CREDS_PAGE_SIZE``,
                1000; at most 100,000).

        Raises:
            InvalidInputError: a bad ``limit``.
            StoreUnavailableError, StoreOperationError: as for every call.
        """
        if after is not None and not isinstance(after, str):
            raise InvalidTypeError(f"after must be a session id (str) or None, not {after!r}")
        size = _page_limit(self.CREDS_PAGE_SIZE if limit is None else limit)
        rows = await self._call(
            "load_creds_page", None, partial(self._read_creds_page, after, size)
        )
        return self._creds_page(rows, size)

    def iter_creds_pages(self, *, page_size: int | None = None) -> AsyncIterator[CredsPage]:
        """Every session's creds, page by page (see :meth:`load_creds_page`).

        Use it with ``async for``. One statement per page; the next page is
        read while the current one is decoded, so at most two statements (two
        pooled connections) are in flight. No page is empty: a store without
        creds yields none. (The sync facade has no twin of it: loop over
        ``load_creds_page`` there.)

        Args:
            page_size: sessions per page (default None: ``CREDS_PAGE_SIZE``, 1000).

        Raises:
            InvalidInputError: a bad ``page_size`` (at once, before any statement).
        """
        limit = _page_limit(self.CREDS_PAGE_SIZE if page_size is None else page_size)
        return self._creds_pages(limit)

    async def _creds_pages(self, limit: int) -> AsyncIterator[CredsPage]:
        def fetch(after: str | None) -> asyncio.Task[list[CredsRow]]:
            return asyncio.ensure_future(
                self._call("load_creds_page", None, partial(self._read_creds_page, after, limit))
            )

        pending: asyncio.Task[list[CredsRow]] | None = fetch(None)
        try:
            while pending is not None:
                rows = await pending
                pending = fetch(rows[-1][0]) if len(rows) >= limit else None
                if rows:  # the page after an exact multiple is empty
                    yield self._creds_page(rows, limit)
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending

    def _creds_page(self, rows: list[CredsRow], limit: int) -> CredsPage:
        page = CredsPage(next_after=rows[-1][0] if len(rows) >= limit else None)
        if rows:
            self._clock.observe(max(version for _, _, version in rows))
        with _collector_paused():
            for sid, blob, _ in rows:
                try:
                    page.creds[sid] = self._decode_creds(sid, blob)
                except (DecodeError, DecryptionError) as exc:
                    page.failed[sid] = exc
        return page

    async def save_creds(
        self, session_id: str, creds: Mapping[str, Any], *, fence: Fence | None = None
    ) -> None:
        """Store ``creds`` as the session's creds document.

        With ``fence`` (a :class:`~wa_session_store.Lease` of this session),
        the save lands only while that lease is the newest for the session,
        checked in the same statement; otherwise :class:`LeaseLostError`.

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
        if self.cipher is not None:
            blob = self.cipher.seal(blob, associated_data(sid))
        fencing = self._fence(sid, fence)
        version = self._clock.next()
        if fencing is None:
            await self._call("save_creds", sid, lambda t: self._write_creds(sid, blob, version, t))
        else:
            writes, token = fencing
            await self._call(
                "save_creds",
                sid,
                lambda t: writes._write_creds_fenced(sid, blob, version, token, t),
            )

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
            key_id: self._decode_key(sid, cat, key_id, found[key_id]) if key_id in found else None
            for key_id in wanted
        }

    async def load_categories(
        self,
        session_id: str,
        categories: Iterable[str],
        *,
        after: tuple[str, str] | None = None,
        limit: int = 1000,
    ) -> list[tuple[str, str, Any]]:
        """Return one page of the session's keys in ``categories``, in one query.

        For loading whole categories (an auth state's preload) without a query
        per key: rows come in (category, key id) order, in the database's
        collation, starting after ``after`` (the ``(category, key_id)`` of the
        last row of the previous page; None starts at the beginning). A page
        shorter than ``limit`` is the last one.

        Args:
            session_id: the session.
            categories: the categories to read (e.g. ``["session", "sender-key"]``).
            after: where the previous page ended (default None: the start).
            limit: the most rows to return (default 1000; 1 to 100,000).

        Returns:
            ``[(category, key_id, value), ...]``, values decoded.

        Raises:
            InvalidInputError: an invalid session id, category, ``after`` or ``limit``.
            DecodeError, StoreUnavailableError, StoreOperationError.
        """
        sid = check_session_id(session_id)
        if isinstance(categories, (str, bytes)) or not isinstance(categories, Iterable):
            raise InvalidTypeError(
                f"categories must be an iterable of str, not {type(categories).__name__}"
            )
        cats = sorted({check_category(category) for category in categories})
        if after is not None:
            if not isinstance(after, tuple) or len(after) != 2:
                raise InvalidTypeError(
                    "after must be None or the (category, key_id) of the last row of a page"
                )
            after = (check_category(after[0]), check_key_id(after[1]))
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100_000:
            raise InvalidInputError(f"limit must be an int from 1 to 100,000, not {shown(limit)}")
        if not cats:
            self._check_open()
            return []
        rows = await self._call(
            "load_categories", sid, lambda t: self._read_categories(sid, cats, after, limit, t)
        )
        return [(c, k, self._decode_key(sid, c, k, v)) for c, k, v in rows]

    def _fencing(self) -> FencedWrites | None:
        """The fenced write primitives, for stores with leases (None: none)."""
        return None

    def _fence(self, session_id: str, fence: Fence | None) -> tuple[FencedWrites, int] | None:
        """Where a write with ``fence`` goes, and its token (None: an unfenced write)."""
        if fence is None:
            return None
        writes = self._fencing()
        if writes is None:
            raise InvalidInputError(
                f"{self.kind} stores cannot fence writes with leases; use PostgresStore"
            )
        if fence.session_id != session_id:
            raise InvalidInputError(
                f"the lease is for session {fence.session_id!r}, not {session_id!r}"
            )
        return writes, fence.token

    def _encode_keys(self, session_id: str, data: object, extra: int = 0) -> list[KeyRow]:
        """Validate, encode and seal a key batch; ``extra`` bytes more travel with it."""
        rows = encode_key_batch(data, max_size=self.max_value_size)
        cipher = self.cipher
        if cipher is not None:
            rows = [
                (c, k, None if v is None else cipher.seal(v, associated_data(session_id, c, k)))
                for c, k, v in rows
            ]
        self._check_write_size(session_id, extra + sum(len(v) for _, _, v in rows if v))
        return rows

    #: The most bytes of values one write may carry (tests lower it).
    MAX_WRITE_SIZE = MAX_WRITE_SIZE

    def _check_write_size(self, session_id: str, size: int) -> None:
        # PostgreSQL sends a batch as one statement, which may not exceed 1 GB;
        # the same limit holds on every backend, so none accepts what another refuses.
        if size > self.MAX_WRITE_SIZE:
            raise InvalidInputError(
                f"one write for session {session_id!r} would carry {size:,} bytes; at most "
                f"{self.MAX_WRITE_SIZE:,} are allowed on every backend: split the batch"
            )

    def _decode_key(self, session_id: str, category: str, key_id: str, blob: bytes) -> Any:
        # Hot path (a group send reads hundreds of keys): the message and the
        # associated data are only built when they are used.
        def what() -> str:
            return f"{category} key {key_id!r} of session {session_id!r}"

        if self.cipher is not None or blob[:1] == MAGIC[:1]:
            blob = self._unseal(blob, associated_data(session_id, category, key_id), what())
        return decode_value(blob, what=what)

    def _unseal(self, blob: bytes, aad: bytes, what: str) -> bytes:
        sealed = bytes(blob[: len(MAGIC)]) == MAGIC
        if self.cipher is None:
            if sealed:
                raise DecryptionError(
                    f"{what} is encrypted (key {sealed_key_id(bytes(blob))!r}); open the store "
                    "with cipher=AESGCMCipher(...) holding that key"
                )
            return blob
        if not sealed:
            if self.allow_plaintext:
                return blob
            raise DecryptionError(
                f"{what} is stored unencrypted; pass allow_plaintext=True to read it while "
                "migrating, and run reencrypt() to seal it"
            )
        try:
            return self.cipher.open(bytes(blob), aad)
        except DecryptionError as exc:
            raise DecryptionError(f"{what}: {exc}") from None

    async def set_keys(
        self,
        session_id: str,
        data: Mapping[str, Mapping[Any, Any]],
        *,
        fence: Fence | None = None,
    ) -> None:
        """Write a batch ``{category: {key_id: value}}``; a ``None`` value deletes.

        With ``fence``, the batch lands only while that lease is the newest
        (see :meth:`save_creds`).

        The whole batch is validated and encoded before anything is sent, and
        written in one transaction: all of it lands or none of it.

        Raises:
            InvalidInputError: an invalid id or value anywhere in the batch.
            StoreUnavailableError, StoreOperationError.
        """
        sid = check_session_id(session_id)
        rows = self._encode_keys(sid, data)
        if not rows:
            self._check_open()
            return
        fencing = self._fence(sid, fence)
        if fencing is None:
            await self._call("set_keys", sid, lambda t: self._write_keys(sid, rows, t))
        else:
            writes, token = fencing
            await self._call(
                "set_keys", sid, lambda t: writes._write_keys_fenced(sid, rows, token, t)
            )

    async def clear_keys(self, session_id: str, *, fence: Fence | None = None) -> int:
        """Delete every key of the session, keeping its creds; return how many were deleted.

        With ``fence``, only while that lease is the newest (see :meth:`save_creds`).
        """
        sid = check_session_id(session_id)
        fencing = self._fence(sid, fence)
        if fencing is None:
            return await self._call("clear_keys", sid, lambda t: self._clear_keys(sid, t))
        writes, token = fencing
        return await self._call(
            "clear_keys", sid, lambda t: writes._clear_keys_fenced(sid, token, t)
        )

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

    async def import_session(
        self,
        session_id: str,
        creds: Mapping[str, Any] | None,
        keys: Mapping[str, Mapping[Any, Any]],
        *,
        overwrite: bool = False,
    ) -> None:
        """Write a whole session — creds and every key — in one transaction.

        For imports and migrations between stores. Everything is validated
        and encoded first; then, in one transaction, the session is checked
        for, anything stored for it is removed (with ``overwrite``), and the
        creds and keys are written. ``None`` values in ``keys`` are skipped.

        Raises:
            SessionExistsError: the session holds creds or keys and
                ``overwrite`` is False (nothing is written).
            InvalidInputError: anything invalid (nothing is written).
        """
        sid = check_session_id(session_id)
        blob = None
        if creds is not None:
            blob = encode_creds(creds, session_id=sid, max_size=self.max_value_size)
            if self.cipher is not None:
                blob = self.cipher.seal(blob, associated_data(sid))
        rows = [row for row in self._encode_keys(sid, keys, len(blob or b"")) if row[2] is not None]
        version = self._clock.next()
        written = await self._call(
            "import_session",
            sid,
            lambda t: self._replace_session(sid, blob, version, rows, overwrite, t),
        )
        if not written:
            raise SessionExistsError(
                f"session {sid!r} is already stored; pass overwrite=True to replace it"
            )

    async def export_session(self, session_id: str) -> SessionExport | None:
        """Read a whole session — creds and every key — in one snapshot.

        Returns:
            The :class:`SessionExport`, or None if nothing is stored for it.
        """
        sid = check_session_id(session_id)
        found = await self._call("export_session", sid, lambda t: self._read_session(sid, t))
        if found is None:
            return None
        blob, rows = found
        creds = None
        if blob is not None:
            what = f"creds of session {sid!r}"
            creds = decode_value(self._unseal(blob, associated_data(sid), what), what=what)
            if not isinstance(creds, dict):
                raise DecodeError(f"{what} are not a JSON object")
        keys: dict[str, dict[str, Any]] = {}
        for category, key_id, value in rows:
            keys.setdefault(category, {})[key_id] = self._decode_key(sid, category, key_id, value)
        return SessionExport(creds=creds, keys=keys)

    #: Seconds :meth:`health` waits for the database at most, by default.
    HEALTH_TIMEOUT = 5.0

    async def health(self, *, timeout: float | None = None) -> StoreHealth:
        """Check the store in one attempt, without raising: for a ``/healthz``.

        Measures one statement's round trip and reads the schema version (and,
        on PostgreSQL, the server version, whether it is a replica and the
        pool's usage). Never retries and never raises for an unreachable or
        closed store: ``ok`` is False and ``error`` says why.

        Args:
            timeout: seconds to wait at most (default None: the smaller of
                ``HEALTH_TIMEOUT``, 5.0, and the retry policy's timeout).

        Raises:
            InvalidInputError: a bad ``timeout``.
        """
        if timeout is None:
            timeout = min(self.HEALTH_TIMEOUT, self.retry.timeout)
        elif (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not (timeout > 0 and timeout < math.inf)
        ):
            raise InvalidInputError(f"timeout must be seconds > 0, not {timeout!r}")
        facts: dict[str, Any] = {"backend": self.kind, "pool": self._pool_usage()}
        if not self._is_open:
            return StoreHealth(ok=False, error=f"{self.kind} store is not open", **facts)
        try:
            facts.update(await self._health(float(timeout)))
        except Exception as exc:
            return StoreHealth(ok=False, error=describe_error(exc), **facts)
        expected = facts.get("expected_schema_version")
        ok = facts.get("schema_version") == expected
        error = None if ok else f"schema version {facts.get('schema_version')}, expected {expected}"
        return StoreHealth(ok=ok, error=error, **facts)

    def _pool_usage(self) -> dict[str, int] | None:
        """Pooled connections (size, available, waiting, min, max), for stores with a pool."""
        return None

    async def schema_version(self) -> int | None:
        """The schema version in the database (None for stores without a schema)."""
        return await self._call("schema_version", None, self._schema_version)

    async def reencrypt(
        self,
        *,
        batch_size: int = 500,
        progress: Callable[[ReencryptProgress], None] | None = None,
    ) -> ReencryptProgress:
        """Rewrite every row not sealed with the cipher's active key.

        Rows sealed with an older key of the cipher (and, with
        ``allow_plaintext``, unsealed rows) are read, checked, and sealed
        again with the active key, ``batch_size`` rows per transaction.
        Resumable: rows already under the active key are skipped, so an
        interrupted run just starts again. A row changed by a writer meanwhile
        is left as that writer sealed it (with the active key). Afterwards the
        old key can be removed from the cipher.

        Args:
            batch_size: rows per batch (default 500).
            progress: called after each batch with the counts so far.

        Returns:
            The final counts.

        Raises:
            InvalidInputError: no cipher, or a bad ``batch_size``.
            DecryptionError: a row that does not open (nothing of it is rewritten).
        """
        cipher = self.cipher
        if cipher is None:
            raise InvalidInputError("reencrypt() needs a store opened with cipher=...")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be an int >= 1, not {shown(batch_size)}")
        counts = ReencryptProgress()
        for table in ("creds", "keys"):
            after: RowKey | None = None
            while True:
                rows = await self._call(
                    "reencrypt", None, partial(self._scan, table, after, batch_size)
                )
                if not rows:
                    break
                after = rows[-1][0]
                changes: list[tuple[RowKey, bytes, bytes]] = []
                for key, blob in rows:
                    counts.scanned += 1
                    if sealed_key_id(bytes(blob)) == cipher.active:
                        continue
                    sid, category, key_id = key
                    aad = (
                        associated_data(sid)
                        if table == "creds"
                        else associated_data(sid, category, key_id)
                    )
                    plain = self._unseal(blob, aad, f"{table} row {key!r}")
                    changes.append((key, bytes(blob), cipher.seal(plain, aad)))
                if changes:
                    counts.rewritten += await self._call(
                        "reencrypt", None, partial(self._rewrite, table, changes)
                    )
                if progress is not None:
                    progress(counts)
        return counts

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
        return await self._run(op, session_id, attempt)

    async def _run(
        self, op: str, session_id: str | None, attempt: Callable[[float], Awaitable[T]]
    ) -> T:
        """Retry ``attempt`` by the policy; wrap errors a retry cannot fix.

        The one instrumentation point of store calls: with ``metrics`` set,
        the call's duration and outcome, its retries and its give-up are
        reported here.
        """
        metrics = self.metrics
        if metrics is None:
            return await self._attempts(op, session_id, attempt, self.on_retry, self.on_giveup)
        kind = self.kind
        on_retry, on_giveup = self.on_retry, self.on_giveup

        def retried(details: RetryDetails) -> None:
            metrics.retry(op, kind)
            if on_retry is not None:
                on_retry(details)

        def gave_up(details: RetryDetails) -> None:
            metrics.giveup(op, kind)
            if on_giveup is not None:
                on_giveup(details)

        started = time.perf_counter()
        outcome = "error"
        try:
            result = await self._attempts(op, session_id, attempt, retried, gave_up)
            outcome = "ok"
            return result
        except StoreUnavailableError:
            outcome = "unavailable"
            raise
        finally:
            metrics.call(op, kind, time.perf_counter() - started, outcome)

    async def _attempts(
        self,
        op: str,
        session_id: str | None,
        attempt: Callable[[float], Awaitable[T]],
        on_retry: RetryHook | None,
        on_giveup: RetryHook | None,
    ) -> T:
        try:
            return await self.retry.call(
                op,
                session_id,
                attempt,
                is_transient=self._is_transient,
                on_retry=on_retry,
                on_giveup=on_giveup,
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
