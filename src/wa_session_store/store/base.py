"""The one implementation of the store contract: :class:`BaseStore`, which
every backend subclasses.

:class:`AuthStateStore` (:mod:`~wa_session_store.store.contract`) is what the
rest of the library (and any client integration) programs against.
:class:`BaseStore` implements it once, in three layers, each in its own
module: a call is turned into encoded, sealed rows (and rows back into
values) by the I/O-free :class:`~wa_session_store.store.rows.RowCodec`; it
is sent by the one retried, instrumented call of
:class:`~wa_session_store.store.calls.StoreCalls`; and a backend only
supplies single attempts of a few primitive operations on those rows
(:class:`~wa_session_store.store.primitives.StorePrimitives`). So every
backend refuses the same inputs with the same errors, and a fix to the codec
or the retry rules reaches all of them.

Here are its options and the calls on a session's creds and keys: the creds
versions that keep a late save from replacing a newer one, and where a
fenced write goes. The calls on whole sessions are mixed in from
:class:`~wa_session_store.store.sessions.SessionCalls`, the maintenance calls
(health, schema version, reencryption) from
:class:`~wa_session_store.store.maintenance.MaintenanceCalls`; the value
types are in :mod:`~wa_session_store.store.records`. The public methods'
docstrings, inherited ones included, are the API reference and what
``tools/sync_twins.py`` generates the blocking twins from.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from functools import partial
from typing import Any

from ..errors import CredsConflictError, InvalidInputError, InvalidTypeError
from ..metrics.instrumentation import Metrics
from .codec import DEFAULT_MAX_VALUE_SIZE, MAX_WRITE_SIZE
from .contract import AuthStateStore, Fence, FencedWrites
from .crypto import Cipher
from .ids import check_category, check_key_ids, check_session_id
from .maintenance import MaintenanceCalls, creds_pages
from .records import (
    CredsPage,
    CredsRow,
    ReencryptProgress,
    SessionExport,
    SessionInfo,
    StoreHealth,
    StoreOptions,
)
from .retry import RetryPolicy
from .retry_report import RetryHook
from .rows import RowCodec, category_query, check_page, check_page_limit, page_end
from .sessions import SessionCalls

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


class BaseStore(SessionCalls, MaintenanceCalls):
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
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidInputError(f"retry must be a RetryPolicy, not {type(retry).__name__}")
        self._rows = RowCodec(
            max_value_size=max_value_size, cipher=cipher, allow_plaintext=allow_plaintext
        )
        self.retry = retry if retry is not None else RetryPolicy()
        self.on_retry = on_retry
        self.on_giveup = on_giveup
        self.metrics = metrics
        self._clock = self._rows.clock
        super().__init__()

    @property
    def cipher(self) -> Cipher | None:
        """The cipher sealing every value, or None."""
        return self._rows.cipher

    @cipher.setter
    def cipher(self, cipher: Cipher | None) -> None:
        self._rows.cipher = cipher

    @property
    def allow_plaintext(self) -> bool:
        """With a cipher, whether unsealed values are read too."""
        return self._rows.allow_plaintext

    @allow_plaintext.setter
    def allow_plaintext(self, allow: bool) -> None:
        self._rows.allow_plaintext = bool(allow)

    @property
    def max_value_size(self) -> int:
        """The largest encoded value accepted, in bytes."""
        return self._rows.max_value_size

    @max_value_size.setter
    def max_value_size(self, size: int) -> None:
        self._rows.max_value_size = size

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
        row = await self._call("load_creds", sid, partial(self._read_creds, sid))
        if row is None:
            return None
        blob, version = row
        self._clock.observe(version)
        return self._rows.creds(sid, blob)

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
        after, size = check_page(after, limit, self.CREDS_PAGE_SIZE)
        rows = await self._call(
            "load_creds_page", None, partial(self._read_creds_page, after, size)
        )
        return self._rows.creds_page(rows, size)

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
        limit = check_page_limit(self.CREDS_PAGE_SIZE if page_size is None else page_size)

        async def fetch(after: str | None) -> tuple[CredsPage, list[CredsRow]] | None:
            rows = await self._call(
                "load_creds_page", None, partial(self._read_creds_page, after, limit)
            )
            return (CredsPage(next_after=page_end(rows, limit)), rows) if rows else None

        return creds_pages(fetch, self._rows.decode_creds)

    async def save_creds(
        self, session_id: str, creds: Mapping[str, Any], *, fence: Fence | None = None
    ) -> None:
        """Store ``creds`` as the session's creds document.

        With ``fence`` (a :class:`~wa_session_store.Lease` of this session),
        the save lands only while that lease is the newest for the session,
        checked in the same statement; otherwise :class:`LeaseLostError`.

        Each save carries a version taken when it is called; a save retried
        late never replaces one that was called after it. A save that does not
        land says so: when the store holds creds of a version it may not
        replace, written by another process (whose clock may run ahead), it
        raises :class:`CredsConflictError`, and this store's next save of the
        session is versioned above them. A save overtaken by a later save of
        this store returns normally (it was stored, then replaced). Deciding
        that costs a second round trip, only when the write was refused.

        Raises:
            InvalidInputError: an invalid session id, creds that are not a
                mapping or hold values that would not read back equal, or a
                document over ``max_value_size``. Nothing is written then.
            CredsConflictError: the store holds creds this save may not replace.
            LeaseLostError: with ``fence``, the lease is no longer the newest.
            StoreUnavailableError, StoreOperationError: as for every call.
        """
        sid = check_session_id(session_id)
        blob = self._rows.creds_value(sid, creds)
        fencing = self._fence(sid, fence)
        with self._clock.saving(sid) as version:
            if fencing is None:
                write = partial(self._write_creds, sid, blob, version)
            else:
                writes, token = fencing
                write = partial(writes._write_creds_fenced, sid, blob, version, token)
            if not await self._call("save_creds", sid, write):
                await self._unwritten_creds(sid, blob, version)

    async def _unwritten_creds(self, session_id: str, blob: bytes, version: int) -> None:
        """Decide a creds write the version check refused: return if it is stored
        after all, else raise :class:`CredsConflictError`.

        Refused means the store held a version at least ``version``: this
        call's own (an earlier attempt landed and its answer was lost), a
        later save of this store's, or another process's. One read tells
        them apart; a version that changed again since is judged as it is now.
        """
        row = await self._call("load_creds", session_id, partial(self._read_creds, session_id))
        if row is None:
            raise CredsConflictError(session_id, version, None)
        stored_blob, stored = row
        if stored == version and bytes(stored_blob) == blob:
            return
        self._clock.observe(stored)
        if self._clock.overtaken(session_id, version, stored):
            return
        raise CredsConflictError(session_id, version, stored)

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
        found = await self._call("get_keys", sid, partial(self._read_keys, sid, cat, wanted))
        return {
            key_id: self._rows.key(sid, cat, key_id, found[key_id]) if key_id in found else None
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
        cats, after, limit = category_query(categories, after, limit)
        if not cats:
            self._check_open()
            return []
        rows = await self._call(
            "load_categories", sid, partial(self._read_categories, sid, cats, after, limit)
        )
        return [(c, k, self._rows.key(sid, c, k, v)) for c, k, v in rows]

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

    #: The most bytes of values one write may carry (tests lower it).
    MAX_WRITE_SIZE = MAX_WRITE_SIZE

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
        rows = self._rows.key_rows(sid, data, max_write=self.MAX_WRITE_SIZE)
        if not rows:
            self._check_open()
            return
        fencing = self._fence(sid, fence)
        if fencing is None:
            await self._call("set_keys", sid, partial(self._write_keys, sid, rows))
        else:
            writes, token = fencing
            await self._call("set_keys", sid, partial(writes._write_keys_fenced, sid, rows, token))

    async def clear_keys(self, session_id: str, *, fence: Fence | None = None) -> int:
        """Delete every key of the session, keeping its creds; return how many were deleted.

        With ``fence``, only while that lease is the newest (see :meth:`save_creds`).
        """
        sid = check_session_id(session_id)
        fencing = self._fence(sid, fence)
        if fencing is None:
            return await self._call("clear_keys", sid, partial(self._clear_keys, sid))
        writes, token = fencing
        return await self._call("clear_keys", sid, partial(writes._clear_keys_fenced, sid, token))
