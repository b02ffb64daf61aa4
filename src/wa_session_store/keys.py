"""The Signal key store a client is handed: a read cache, and writes that are
stored before anything that depends on them leaves the process.

A client calls its key store the way it encrypts: pyaileys makes one
``get("session", [addr])`` and one ``set({"session": {addr: record}})`` per
recipient device. Sent straight to a database, a message to 100 devices costs
200 round trips. :class:`AuthKeys` keeps that down to one per send:

* **Reads** come from a byte-bounded LRU cache after the first read (or after
  :meth:`AuthKeys.preload`), and see every write made before them, stored or
  not. The cache is correct because an auth state is its session's only
  writer: two processes on one session without a lease are unsupported, and
  with a lease the cache lives only while the lease is held (it is emptied
  when the lease is lost).
* **Writes**, in ``"barrier"`` mode, update the cache and join a pending batch
  that is written in one ``set_keys`` (one transaction, one round trip) at the
  next *barrier*: :meth:`AuthKeys.flush`, the end of a
  :meth:`AuthKeys.transaction` block, ``auth.flush()``/``auth.aclose()`` (so
  the SIGTERM handler too), or on their own after :attr:`AuthKeys.FLUSH_DELAY`
  seconds or :attr:`AuthKeys.MAX_PENDING` writes. The client's outgoing frames
  wait for the barrier (the pyaileys integration installs that), so nothing
  that depends on a key change leaves the process before the change is stored.
  A batch that fails stays pending, under any newer writes, and is retried at
  the next barrier: it is never dropped (only a lost lease drops it, with an
  ERROR line).
* In ``"write-through"`` mode (the default of a bare ``use_auth_state``,
  whose client installs no barrier) every ``set`` is stored before it
  returns, in one round trip, and the cache is only updated once it is.

This module is longer than most because the cache, the pending batch and
the transactions are one state machine (what a read sees depends on all
three), and its docstrings are the key store's API reference; the cache's
data structures are in ``key_cache.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from functools import partial
from types import MappingProxyType, TracebackType
from typing import Any, Final, Literal

from ._codec import (
    DEFAULT_MAX_VALUE_SIZE,
    check_category,
    check_key_ids,
    given_twice,
    key_batch_entries,
)
from .backends.lease import Lease, fenced
from .errors import (
    InvalidInputError,
    LeaseLostError,
    describe_error,
    shown,
)
from .key_cache import Cache, Entry, Key, freeze, grouped
from .store import AuthStateStore

__all__ = [
    "DEFAULT_KEY_CACHE_BYTES",
    "DEFAULT_PRELOAD",
    "AuthKeys",
    "KeyTransaction",
    "KeyWrites",
]

logger = logging.getLogger("wa_session_store")

KeyWrites = Literal["write-through", "barrier"]
"""How :class:`AuthKeys` stores writes: at once, or at the next barrier."""

#: The categories a client reads on every send: what ``preload=True`` loads.
DEFAULT_PRELOAD: Final = (
    "session",
    "identity-key",
    "sender-key",
    "sender-key-memory",
    "device-list",
    "lid-mapping",
    "tctoken",
)

#: The default read-cache budget of one auth state, in bytes (8 MiB: about
#: 5,000 Signal session records).
DEFAULT_KEY_CACHE_BYTES: Final = 8 * 1024 * 1024

# The open transactions of the running task, by the AuthKeys they belong to.
_TRANSACTIONS: ContextVar[Mapping[int, KeyTransaction]] = ContextVar(
    "wa_session_store_key_transactions", default=MappingProxyType({})
)


class KeyTransaction:
    """A unit of work on the keys: ``async with auth.keys.transaction():``.

    Writes made inside the block (by this task and the tasks it starts) are
    held by the transaction and seen by its reads; when the outermost block
    ends they are written in one batch (in barrier mode: added to the pending
    batch, which is then flushed). A nested block joins the outer one. An
    exception discards the writes of the block it leaves, the cache untouched
    by them.
    """

    __slots__ = ("_keys", "_token", "parent", "writes")

    def __init__(self, keys: AuthKeys, parent: KeyTransaction | None) -> None:
        self._keys = keys
        self.parent = parent
        self.writes: dict[Key, Entry] = {}
        self._token: Any = None

    def __repr__(self) -> str:
        return f"<KeyTransaction of {self._keys!r} writes={len(self.writes)}>"

    def lookup(self, key: Key) -> Entry | None:
        txn: KeyTransaction | None = self
        while txn is not None:
            entry = txn.writes.get(key)
            if entry is not None:
                return entry
            txn = txn.parent
        return None

    async def commit(self) -> None:
        """Hand the writes to the enclosing transaction, or store them (outermost)."""
        writes, self.writes = self.writes, {}
        if self.parent is not None:
            self.parent.writes.update(writes)
            return
        await self._keys._apply(writes, barrier=True)

    async def __aenter__(self) -> KeyTransaction:
        current = _TRANSACTIONS.get()
        self._token = _TRANSACTIONS.set(MappingProxyType({**current, id(self._keys): self}))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _TRANSACTIONS.reset(self._token)
        if exc_type is None:
            await self.commit()
        else:
            self.writes.clear()


class AuthKeys:
    """The Signal key store a client is handed: async ``get``, ``set``, ``clear``.

    The shape matches pyaileys' ``SignalKeyStore`` and Baileys' ``keys``;
    build it through :func:`~wa_session_store.use_auth_state`. With a lease,
    writes are fenced by it: a replaced owner's writes raise
    :class:`LeaseLostError` and do not land.

    Args:
        store: an open store.
        session_id: the session.
        lease: the lease that fences every write (default None).
        key_writes: ``"write-through"`` (default: each ``set`` is stored
            before it returns) or ``"barrier"`` (stored at the next barrier;
            see the module documentation).
        cache_bytes: the read cache's budget in bytes, for this auth state
            (default :data:`DEFAULT_KEY_CACHE_BYTES`, 8 MiB; 0 disables it).

    Raises:
        InvalidInputError, InvalidTypeError: an option out of range.
    """

    #: Seconds a pending batch waits for a barrier before it is flushed on its own.
    FLUSH_DELAY = 0.05
    #: Pending writes that start a flush at once.
    MAX_PENDING = 1000
    #: Seconds before a batch whose flush failed is tried again on its own.
    RETRY_DELAY = 1.0
    #: Rows per query while preloading.
    PRELOAD_PAGE = 2000

    __slots__ = (
        "__weakref__",
        "_cache",
        "_closed",
        "_flush_task",
        "_inflight",
        "_io",
        "_lease",
        "_lost",
        "_max_size",
        "_mode",
        "_pending",
        "_raced",
        "_reads",
        "_session_id",
        "_stale_reads",
        "_store",
        "_timer",
        "_writing",
    )

    def __init__(
        self,
        store: AuthStateStore,
        session_id: str,
        lease: Lease | None = None,
        *,
        key_writes: KeyWrites = "write-through",
        cache_bytes: int = DEFAULT_KEY_CACHE_BYTES,
    ) -> None:
        if key_writes not in ("write-through", "barrier"):
            raise InvalidInputError(
                f"key_writes must be 'write-through' or 'barrier', not {shown(key_writes)}"
            )
        if isinstance(cache_bytes, bool) or not isinstance(cache_bytes, int) or cache_bytes < 0:
            raise InvalidInputError(
                f"key_cache_bytes must be an int >= 0 (bytes; 0 disables the cache), "
                f"not {shown(cache_bytes)}"
            )
        self._store = store
        self._session_id = session_id
        self._lease = lease
        self._mode: KeyWrites = key_writes
        self._max_size = int(getattr(store, "max_value_size", DEFAULT_MAX_VALUE_SIZE))
        self._cache = Cache(cache_bytes)
        self._pending: dict[Key, Entry] = {}
        self._inflight: dict[Key, Entry] = {}
        self._flush_task: asyncio.Task[Exception | None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._io = asyncio.Lock()
        self._closed = False
        self._lost = False
        # Reads in flight, and the keys written while they were: a read's
        # answer for such a key may be older than the write and is not cached.
        self._reads = 0
        self._raced: set[Key] | None = None
        self._stale_reads = False
        # Write-through writes in flight, per key: while two race, neither is cached.
        self._writing: dict[Key, int] = {}

    def __repr__(self) -> str:
        return (
            f"<AuthKeys session={self._session_id!r} {self._mode} "
            f"pending={self.pending} cached={len(self._cache.entries)}>"
        )

    # -- what a client calls --------------------------------------------------

    @property
    def mode(self) -> KeyWrites:
        """``"write-through"`` or ``"barrier"``."""
        return self._mode

    @property
    def pending(self) -> int:
        """Writes not stored yet (barrier mode), in flight ones included."""
        return len(self._pending) + len(self._inflight)

    @property
    def cached_bytes(self) -> int:
        """Bytes the read cache holds (values as encoded, plus bookkeeping)."""
        return self._cache.bytes

    async def get(self, category: str, ids: Iterable[str | int]) -> dict[str, Any]:
        """``{id: value or None}`` for every id asked for.

        Served from the cache and the writes not yet stored where it can be;
        what is missing is read in one query (and cached).
        """
        return await self._get(category, ids, self._current())

    async def set(self, data: Mapping[str, Mapping[Any, Any]]) -> None:
        """Write ``{category: {id: value or None}}`` atomically; ``None`` deletes.

        The whole batch is validated first (nothing is kept of a batch that
        fails). In write-through mode it is stored before this returns; in
        barrier mode it is stored at the next barrier, and reads see it at once.

        Raises:
            InvalidInputError: an invalid id or value anywhere in the batch.
            LeaseLostError: the lease was lost.
            StoreUnavailableError, StoreOperationError: write-through only.
        """
        await self._set(data, self._current())

    async def clear(self) -> None:
        """Delete every key of the session (its creds stay), pending writes included.

        Not part of a transaction: it is stored at once, and it empties the
        open transactions' writes too.
        """
        await self._clear(self._current())

    async def _clear(self, txn: KeyTransaction | None) -> None:
        while txn is not None:
            txn.writes.clear()
            txn = txn.parent
        async with self._io:  # after a flush in flight, which it would undo
            saved, self._pending = self._pending, {}
            self._cancel_timer()
            self._forget()
            try:
                await fenced(self._lease, partial(self._store.clear_keys, self._session_id))
            except BaseException:
                self._pending = {**saved, **self._pending}
                raise

    async def flush(self) -> None:
        """Store every write made before this call, in one batch; wait for it.

        A flush already in flight is joined first. Returns at once when
        nothing is pending (write-through mode: always).

        Raises:
            LeaseLostError: the lease was lost (the writes were dropped).
            StoreUnavailableError, StoreOperationError: the batch failed after
                the store's retries; it stays pending for the next barrier.
        """
        task = self._flush_task
        if task is not None:
            # A flush that fails here is reported, not repeated at once: it
            # just spent its whole retry budget.
            error = await asyncio.shield(task)
            if error is not None:
                raise error
        self._check_lease()
        if not self._pending:
            return
        error = await asyncio.shield(self._start_flush())
        if error is not None:
            raise error

    def transaction(self) -> KeyTransaction:
        """A unit of work: ``async with auth.keys.transaction(): ...`` (Baileys' name).

        See :class:`KeyTransaction`: its writes are stored in one batch when
        the outermost block ends (that is a barrier), nested blocks join the
        outer one, and an exception discards the writes of its block.
        """
        return KeyTransaction(self, self._current())

    async def preload(self, categories: Iterable[str] = DEFAULT_PRELOAD) -> int:
        """Load whole categories into the cache, a page of rows per query.

        Stops early when the cache budget is full. Keys written meanwhile keep
        their newer value.

        Args:
            categories: what to load (default :data:`DEFAULT_PRELOAD`: the
                categories a client reads on every send; not pre-keys).

        Returns:
            How many keys were loaded.
        """
        wanted = list(categories)
        loaded = 0
        after: tuple[str, str] | None = None
        self._begin_read()
        try:
            while not self._lost:
                page = await self._store.load_categories(
                    self._session_id, wanted, after=after, limit=self.PRELOAD_PAGE
                )
                for category, key_id, value in page:
                    key = (category, key_id)
                    entry = freeze(value, category, key_id, self._max_size)
                    if not self._cache.fits(entry.size):
                        logger.debug(
                            "preload of %s stopped at the key cache budget (%d bytes)",
                            self._session_id,
                            self._cache.budget,
                            extra={"session_id": self._session_id, "op": "preload"},
                        )
                        return loaded
                    if self._cacheable(key):
                        self._cache.put(key, entry)
                        loaded += 1
                if len(page) < self.PRELOAD_PAGE:
                    break
                after = (page[-1][0], page[-1][1])
        finally:
            self._end_read()
        return loaded

    # -- reads ----------------------------------------------------------------

    def _current(self) -> KeyTransaction | None:
        return _TRANSACTIONS.get().get(id(self))

    def _known(self, key: Key, txn: KeyTransaction | None) -> Entry | None:
        if txn is not None:
            entry = txn.lookup(key)
            if entry is not None:
                return entry
        return self._pending.get(key) or self._inflight.get(key) or self._cache.get(key)

    async def _get(
        self, category: str, ids: Iterable[str | int], txn: KeyTransaction | None
    ) -> dict[str, Any]:
        cat = check_category(category)
        wanted = check_key_ids(ids)
        found: dict[str, Any] = {}
        missing: list[str] = []
        for key_id in wanted:
            entry = self._known((cat, key_id), txn)
            if entry is None:
                missing.append(key_id)
            else:
                found[key_id] = entry.read()
        if not missing:
            return found  # filled in the order asked for
        self._begin_read()
        try:
            stored = await self._store.get_keys(self._session_id, cat, missing)
            for key_id in missing:
                key = (cat, key_id)
                newer = self._known(key, txn)
                if newer is not None:  # written while the query ran
                    found[key_id] = newer.read()
                    continue
                value = stored.get(key_id)
                found[key_id] = value
                if self._cacheable(key):
                    self._cache.put(key, freeze(value, cat, key_id, self._max_size))
        finally:
            self._end_read()
        return {key_id: found[key_id] for key_id in wanted}

    def _begin_read(self) -> None:
        self._reads += 1
        if self._raced is None:
            self._raced = set()

    def _end_read(self) -> None:
        self._reads -= 1
        if self._reads == 0:
            self._raced = None
            self._stale_reads = False

    def _cacheable(self, key: Key) -> bool:
        if self._lost:
            return False
        return self._raced is None or not (self._stale_reads or key in self._raced)

    def _touch(self, keys: Iterable[Key]) -> None:
        if self._raced is not None:
            self._raced.update(keys)

    def _forget(self) -> None:
        """Empty the cache; answers of reads in flight predate this and are not cached."""
        self._cache.clear()
        if self._reads:
            self._stale_reads = True

    # -- writes -----------------------------------------------------------------

    def _freeze_batch(self, data: object) -> dict[Key, Entry]:
        batch: dict[Key, Entry] = {}
        for category, key_id, value in key_batch_entries(data):
            entry = freeze(value, category, key_id, self._max_size)
            earlier = batch.get((category, key_id))
            if earlier is not None and not earlier.same(entry):
                raise given_twice(category, key_id)
            batch[category, key_id] = entry
        return batch

    async def _set(self, data: Mapping[str, Mapping[Any, Any]], txn: KeyTransaction | None) -> None:
        batch = self._freeze_batch(data)
        if txn is not None:
            txn.writes.update(batch)
            return
        await self._apply(batch, barrier=False)

    async def _apply(self, batch: dict[Key, Entry], *, barrier: bool) -> None:
        """Store ``batch`` (write-through), or make it pending (barrier mode) and,
        with ``barrier``, flush it."""
        if not batch:
            return
        self._check_lease()
        if self._mode == "write-through" or self._closed:
            await self._write_through(batch)
            return
        self._touch(batch)
        self._pending.update(batch)
        for key, entry in batch.items():
            self._cache.put(key, entry)
        if barrier:
            await self.flush()
        elif len(self._pending) >= self.MAX_PENDING:
            self._start_flush()
        else:
            self._arm(self.FLUSH_DELAY)

    def _check_lease(self) -> None:
        lease = self._lease
        if lease is None or not (self._lost or lease.lost):
            return
        reason = lease.reason
        raise LeaseLostError(
            self._session_id,
            lease.token,
            getattr(reason, "holder", None),
            getattr(reason, "holder_token", None),
        )

    async def _write_through(self, batch: dict[Key, Entry]) -> None:
        self._touch(batch)
        for key in batch:
            self._cache.discard(key)
            self._writing[key] = self._writing.get(key, 0) + 1
        try:
            await self._store_batch(batch)
        finally:
            raced = set()
            for key in batch:
                count = self._writing.pop(key)
                if count > 1:
                    self._writing[key] = count - 1
                    raced.add(key)
        for key, entry in batch.items():
            if key not in raced and key not in self._writing and self._cacheable(key):
                self._cache.put(key, entry)

    async def _store_batch(self, batch: dict[Key, Entry]) -> None:
        """Store ``batch`` in one fenced ``set_keys``."""
        data = grouped(batch)
        await fenced(self._lease, partial(self._store.set_keys, self._session_id, data))

    def _arm(self, delay: float) -> None:
        if self._timer is not None or self._flush_task is not None:
            return
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        if self._pending and self._flush_task is None:
            self._start_flush()

    def _start_flush(self) -> asyncio.Task[Exception | None]:
        task = self._flush_task
        if task is None:
            self._cancel_timer()
            task = asyncio.get_running_loop().create_task(self._flush_batch())
            self._flush_task = task
        return task

    async def _flush_batch(self) -> Exception | None:
        """Write what is pending in one ``set_keys``; the error, or None."""
        error: Exception | None = None
        try:
            async with self._io:
                batch, self._pending = self._pending, {}
                if not batch:
                    return None
                self._inflight = batch
                try:
                    await self._store_batch(batch)
                except BaseException as exc:
                    if not self._lost:
                        # Kept, beneath anything written since.
                        self._pending = {**batch, **self._pending}
                    if not isinstance(exc, Exception):
                        raise
                    error = exc
                finally:
                    self._inflight = {}
            if error is not None and not isinstance(error, LeaseLostError):
                logger.error(
                    "storing %d key writes of %s failed; they stay pending for the "
                    "next barrier: %s",
                    len(batch),
                    self._session_id,
                    describe_error(error),
                    extra={"session_id": self._session_id, "op": "flush_keys"},
                )
        finally:
            self._flush_task = None
        # What was written meanwhile, or what failed, goes at the next timer
        # if no barrier comes first.
        if self._pending and not self._lost and not self._closed:
            self._arm(self.FLUSH_DELAY if error is None else self.RETRY_DELAY)
        return error

    # -- life cycle ---------------------------------------------------------------

    async def _close(self) -> None:
        """Flush what is pending; later writes are stored as they are made."""
        try:
            await self.flush()
        finally:
            self._closed = True
            self._cancel_timer()

    def _drop(self) -> None:
        """The lease was lost: drop what is pending, empty the cache, cache no more."""
        dropped = len(self._pending) + len(self._inflight)
        if dropped:
            logger.error(
                "dropping %d unsaved key writes of %s: its lease was replaced",
                dropped,
                self._session_id,
                extra={"session_id": self._session_id, "op": "lease"},
            )
        self._lost = True
        self._cancel_timer()
        self._pending = {}
        self._inflight = {}
        self._forget()
