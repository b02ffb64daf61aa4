"""Units of work on the keys: :class:`KeyTransaction`, and its per-key locks.

A transaction holds the writes of its block (and of the tasks it starts),
serves them to its reads, and hands them to its key store in one batch when
the outermost block ends; a keyed block takes that key's lock first, so two
units of work on one record run one after the other. The key store
(:class:`~wa_session_store.AuthKeys`, ``auth/keys.py``, whose writer in
``auth/key_writer.py`` owns the write log) takes the batch; this module knows
it only as a :class:`KeyOwner`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from contextvars import ContextVar
from types import MappingProxyType, TracebackType
from typing import Any, Protocol

from .key_cache import Entry, Key

__all__ = ["TRANSACTIONS", "KeyOwner", "KeyTransaction", "open_transaction"]


class KeyOwner(Protocol):
    """What a transaction needs of its key store."""

    _key_locks: dict[str, tuple[asyncio.Lock, int]]

    async def _apply(self, batch: dict[Key, Entry], *, barrier: bool) -> None: ...


# The open transactions of the running task, by the AuthKeys they belong to.
TRANSACTIONS: ContextVar[Mapping[int, KeyTransaction]] = ContextVar(
    "wa_session_store_key_transactions", default=MappingProxyType({})
)


class KeyTransaction:
    """A unit of work on the keys: ``async with auth.keys.transaction():``.

    Writes made inside the block (by this task and the tasks it starts) are
    held by the transaction and seen by its reads; when the outermost block
    ends they are written in one batch (in barrier mode: logged as one write,
    which is then flushed). A nested block joins the outer one. An exception
    discards the writes of the block it leaves, the cache untouched by them.
    Once a block has ended it takes no more writes: a task it started that
    writes afterwards writes to the enclosing open transaction, if any, or
    on its own.
    """

    __slots__ = ("_held", "_keys", "_token", "ended", "key", "parent", "writes")

    def __init__(
        self, keys: KeyOwner, parent: KeyTransaction | None, key: str | None = None
    ) -> None:
        self._keys = keys
        self.parent = parent
        self.key = key
        self.writes: dict[Key, Entry] = {}
        self.ended = False
        self._token: Any = None
        self._held: asyncio.Lock | None = None

    def __repr__(self) -> str:
        state = "ended" if self.ended else f"writes={len(self.writes)}"
        return f"<KeyTransaction of {self._keys!r} {state}>"

    def lookup(self, key: Key) -> Entry | None:
        txn: KeyTransaction | None = self
        while txn is not None:
            entry = txn.writes.get(key)
            if entry is not None:
                return entry
            txn = txn.parent
        return None

    async def commit(self) -> None:
        """End the block: hand its writes to the enclosing open transaction, or
        store them (outermost). A second call does nothing."""
        if self.ended:
            return
        self.ended = True
        writes, self.writes = self.writes, {}
        parent = open_transaction(self.parent)
        if parent is not None:
            parent.writes.update(writes)
            return
        await self._keys._apply(writes, barrier=True)

    def discard(self) -> None:
        """End the block without storing its writes."""
        self.ended = True
        self.writes.clear()

    def _holds(self, key: str) -> bool:
        """Whether this block or an open one enclosing it holds ``key``'s lock."""
        txn = open_transaction(self.parent)
        while txn is not None:
            if txn.key == key and txn._held is not None:
                return True
            txn = open_transaction(txn.parent)
        return False

    async def __aenter__(self) -> KeyTransaction:
        if self.key is not None and not self._holds(self.key):
            locks = self._keys._key_locks
            lock, users = locks.get(self.key, (asyncio.Lock(), 0))
            locks[self.key] = (lock, users + 1)
            try:
                await lock.acquire()
            except BaseException:
                self._forget_lock(lock)
                raise
            self._held = lock
        current = TRANSACTIONS.get()
        self._token = TRANSACTIONS.set(MappingProxyType({**current, id(self._keys): self}))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        TRANSACTIONS.reset(self._token)
        try:
            if exc_type is None:
                await self.commit()
            else:
                self.discard()
        finally:
            self._release()

    def _release(self) -> None:
        lock, self._held = self._held, None
        if lock is not None:
            lock.release()
            self._forget_lock(lock)

    def _forget_lock(self, lock: asyncio.Lock) -> None:
        """One user less of the key's lock; the last one removes it."""
        assert self.key is not None
        locks = self._keys._key_locks
        _, users = locks[self.key]
        if users > 1:
            locks[self.key] = (lock, users - 1)
        else:
            del locks[self.key]


def open_transaction(txn: KeyTransaction | None) -> KeyTransaction | None:
    """``txn`` or its nearest enclosing transaction that has not ended."""
    while txn is not None and txn.ended:
        txn = txn.parent
    return txn
