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
* **Writes**, in ``"barrier"`` mode, are answered at once and stored in one
  ``set_keys`` (one transaction, one round trip) at the next *barrier*:
  :meth:`AuthKeys.flush`, the end of a :meth:`AuthKeys.transaction` block,
  ``auth.flush()``/``auth.aclose()`` (so the SIGTERM handler too), or on their
  own after :attr:`AuthKeys.FLUSH_DELAY` seconds or :attr:`AuthKeys.MAX_PENDING`
  writes. The client's outgoing frames wait for the barrier (the pyaileys
  integration installs that), so nothing that depends on a key change leaves
  the process before the change is stored.
* In ``"write-through"`` mode (the default of a bare ``use_auth_state``,
  whose client installs no barrier) every ``set`` is stored before it
  returns; writes of concurrent tasks share a round trip.

One ordered write log (:class:`~wa_session_store.auth.key_log.WriteLog`) decides
what "newest" means for all of it. Its invariants:

1. Every accepted write (a ``set``, a delete, a ``clear``, a committed
   transaction) gets the next sequence number, and stays in the log until
   the store holds it. Writes reach the store in that order, one flush at a
   time: a flush takes a prefix of the log.
2. A read returns the newest write of its key that has been answered to its
   caller (its own transaction's first), else the cache, else the store: never
   a value older than the newest accepted write.
3. A value read from the store (a ``get`` miss, a ``preload`` page) enters
   the cache only for keys with no write newer than the start of that read,
   and no write whose outcome is unknown.
4. A flush that fails leaves its prefix in place under the newer entries
   (barrier mode: retried at the next barrier), except the writes whose
   callers wait for them (write-through, ``clear()``): those are told the
   error and leave the log. Only a lost lease drops accepted writes, with an
   ERROR line.
5. A transaction that has ended takes no more writes: a task it started
   writes on its own afterwards. ``aclose()`` drains the log until it is
   empty (writes made while it runs are stored as they are made), or raises
   with :attr:`AuthKeys.pending` saying what was not stored.

Where each part lives: the cache's data structures in ``key_cache.py``, the
log's in ``key_log.py``; the write path, which owns the log, its flushes and
their timer (invariants 1 and 4, and the drain of 5), is
:class:`~wa_session_store.auth.key_writer.KeyWriter` in ``key_writer.py``;
transactions (the rest of 5) are in ``transactions.py``. This module keeps
the client's API, the reads and what a read may cache (invariants 2 and 3).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any, Final

from ..backends.lease import Lease
from ..errors import InvalidInputError, InvalidTypeError, shown
from ..store.base import AuthStateStore
from ..store.codec import DEFAULT_MAX_VALUE_SIZE, given_twice, key_batch_entries
from ..store.ids import check_category, check_key_ids
from .key_cache import Cache, Entry, Key, freeze
from .key_log import WriteLog
from .key_writer import KeyWriter, KeyWrites
from .transactions import TRANSACTIONS, KeyTransaction, open_transaction

__all__ = [
    "DEFAULT_KEY_CACHE_BYTES",
    "DEFAULT_PRELOAD",
    "AuthKeys",
    "KeyTransaction",
    "KeyWrites",
    "check_key_options",
]

logger = logging.getLogger("wa_session_store")

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


def check_key_options(key_writes: object, key_cache_bytes: object) -> None:
    """Refuse a ``key_writes`` or ``key_cache_bytes`` that :class:`AuthKeys` would refuse.

    :class:`~wa_session_store.auth.options.SessionOptions` runs it before any I/O.

    Raises:
        InvalidInputError: ``key_writes`` is neither ``"write-through"`` nor
            ``"barrier"``, or ``key_cache_bytes`` is not an int >= 0.
    """
    if key_writes not in ("write-through", "barrier"):
        raise InvalidInputError(
            f"key_writes must be 'write-through' or 'barrier', not {shown(key_writes)}"
        )
    if (
        isinstance(key_cache_bytes, bool)
        or not isinstance(key_cache_bytes, int)
        or key_cache_bytes < 0
    ):
        raise InvalidInputError(
            f"key_cache_bytes must be an int >= 0 (bytes; 0 disables the cache), "
            f"not {shown(key_cache_bytes)}"
        )


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
        "_key_locks",
        "_log",
        "_max_size",
        "_session_id",
        "_store",
        "_writer",
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
        check_key_options(key_writes, cache_bytes)
        self._store = store
        self._session_id = session_id
        self._max_size = int(getattr(store, "max_value_size", DEFAULT_MAX_VALUE_SIZE))
        self._cache = Cache(cache_bytes)
        # The write path: the write log, the flushes and their timer. It reads
        # FLUSH_DELAY, MAX_PENDING and RETRY_DELAY from this class at each use.
        self._writer = KeyWriter(type(self), store, session_id, lease, self._cache, key_writes)
        # The writer's log, which reads consult (a reference on the hot path).
        self._log: WriteLog = self._writer.log
        # Baileys' transaction(key): one block per key at a time.
        self._key_locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def __repr__(self) -> str:
        return (
            f"<AuthKeys session={self._session_id!r} {self.mode} "
            f"pending={self.pending} cached={len(self._cache.entries)}>"
        )

    # -- what a client calls --------------------------------------------------

    @property
    def mode(self) -> KeyWrites:
        """``"write-through"`` or ``"barrier"``."""
        return self._writer.mode

    @property
    def pending(self) -> int:
        """Writes not stored yet: keys with an unstored write (in flight ones
        included), plus unstored clears."""
        return self._log.pending

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
        fails). In write-through mode (and once :meth:`aclose` of the auth
        state has begun) it is stored before this returns; in barrier mode it
        is stored at the next barrier, and reads see it at once.

        Raises:
            InvalidInputError: an invalid id or value anywhere in the batch.
            LeaseLostError: the lease was lost.
            StoreUnavailableError, StoreOperationError: write-through only; the
                write is not retried (its keys are read from the store again).
        """
        await self._set(data, self._current())

    async def clear(self) -> None:
        """Delete every key of the session (its creds stay), pending writes included.

        Not part of a transaction: it is stored before this returns, after
        every write accepted before it, and it empties the open transactions'
        writes too.

        Raises:
            LeaseLostError: the lease was lost.
            StoreUnavailableError, StoreOperationError: it failed. In barrier
                mode it stays pending (reads see it) for the next barrier; in
                write-through mode it is not retried.
        """
        await self._clear(self._current())

    async def flush(self) -> None:
        """Store every write made before this call; wait for it.

        A flush already in flight is joined first. Returns at once when
        nothing is pending (write-through mode: nearly always).

        Raises:
            LeaseLostError: the lease was lost (the writes were dropped).
            StoreUnavailableError, StoreOperationError: the batch failed after
                the store's retries; it stays pending for the next barrier.
        """
        await self._writer.flush()

    def transaction(self, key: str | None = None) -> KeyTransaction:
        """A unit of work: ``async with auth.keys.transaction(): ...`` (Baileys' name).

        See :class:`KeyTransaction`: its writes are stored in one batch when
        the outermost block ends (that is a barrier), nested blocks join the
        outer one, and an exception discards the writes of its block.

        Args:
            key: Baileys' calling convention, ``keys.transaction(key)``
                (default None): blocks given the same key run one at a
                time, as Baileys' ``transaction(work, key)`` serialises
                them (a nested block with a key its enclosing block holds
                joins it rather than waiting for itself).

        Raises:
            InvalidTypeError: ``key`` is not a str or None.
        """
        if key is not None and not isinstance(key, str):
            raise InvalidTypeError(f"a transaction key must be a str or None, not {shown(key)}")
        return KeyTransaction(self, self._current(), key)

    async def preload(self, categories: Iterable[str] = DEFAULT_PRELOAD) -> int:
        """Load whole categories into the cache, a page of rows per query.

        Stops early when the cache budget is full. Keys written before or
        during the preload and not yet stored keep their newer value.

        Args:
            categories: what to load (default :data:`DEFAULT_PRELOAD`: the
                categories a client reads on every send; not pre-keys).

        Returns:
            How many keys were loaded.
        """
        wanted = list(categories)
        loaded = 0
        after: tuple[str, str] | None = None
        while not self._writer.lost:
            start = self._log.begin_read()
            try:
                page = await self._store.load_categories(
                    self._session_id, wanted, after=after, limit=self.PRELOAD_PAGE
                )
                for category, key_id, value in page:
                    entry = freeze(value, category, key_id, self._max_size)
                    if not self._cache.fits(entry.size):
                        logger.debug(
                            "preload of %s stopped at the key cache budget (%d bytes)",
                            self._session_id,
                            self._cache.budget,
                            extra={"session_id": self._session_id, "op": "preload"},
                        )
                        return loaded
                    if self._fill((category, key_id), entry, start):
                        loaded += 1
            finally:
                self._log.end_read(start)
            if len(page) < self.PRELOAD_PAGE:
                break
            after = (page[-1][0], page[-1][1])
        return loaded

    # -- reads ----------------------------------------------------------------

    def _current(self) -> KeyTransaction | None:
        return open_transaction(TRANSACTIONS.get().get(id(self)))

    def _known(self, key: Key, txn: KeyTransaction | None) -> Entry | None:
        if txn is not None:
            entry = txn.lookup(key)
            if entry is not None:
                return entry
        return self._log.lookup(key) or self._cache.get(key)

    async def _get(
        self, category: str, ids: Iterable[str | int], txn: KeyTransaction | None
    ) -> dict[str, Any]:
        cat = check_category(category)
        wanted = check_key_ids(ids)
        txn = open_transaction(txn)
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
        start = self._log.begin_read()
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
                self._fill(key, freeze(value, cat, key_id, self._max_size), start)
        finally:
            self._log.end_read(start)
        return {key_id: found[key_id] for key_id in wanted}

    def _fill(self, key: Key, entry: Entry, start: int) -> bool:
        """Cache what a read begun at ``start`` found, unless a newer write may
        exist (invariant 3); whether it was cached."""
        if self._writer.lost or not self._log.cacheable(key, start):
            return False
        self._cache.put(key, entry)
        return True

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
        txn = open_transaction(txn)
        if txn is not None:
            txn.writes.update(batch)
            return
        await self._writer.write(batch, barrier=False)

    async def _clear(self, txn: KeyTransaction | None) -> None:
        self._writer.check_lease()
        while txn is not None:
            txn.writes.clear()
            txn = txn.parent
        await self._writer.clear()

    async def _apply(self, batch: dict[Key, Entry], *, barrier: bool) -> None:
        """Log a committed transaction's ``batch`` as one write (``KeyWriter.write``)."""
        await self._writer.write(batch, barrier=barrier)

    # -- life cycle ---------------------------------------------------------------

    async def _close(self) -> None:
        """Drain the log: store every write accepted before the end of this
        call; writes made meanwhile are stored as they are made.

        Raises:
            LeaseLostError, StoreUnavailableError, StoreOperationError: a
                write could not be stored; :attr:`pending` counts what is left.
        """
        await self._writer.close()

    def _drop(self) -> None:
        """The lease was lost: drop what is pending, empty the cache, cache no more."""
        self._writer.drop()
