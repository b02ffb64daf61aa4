"""The write path of the key store: the writes of one session's keys, stored in order.

A :class:`KeyWriter` serves one :class:`~wa_session_store.AuthKeys`. It owns
the session's :class:`~wa_session_store.auth.key_log.WriteLog`, the flush
task and the flush timer: it accepts each write into the log, stores a
prefix of the log per round trip (one ``set_keys`` or ``clear_keys``, fenced
by the lease), one flush at a time, tells each caller that waits what
became of its write, keeps a failed prefix for the next barrier, drains the
log when its auth state closes, and drops what is pending when the lease
is lost. The write log's invariants are stated, all five, in ``keys.py``'s
module docstring: this class keeps 1 and 4 and the drain of 5; the reads
and what a read may cache (2 and 3) are ``AuthKeys``'.

The cache is shared with ``AuthKeys``: the writer puts what reads must see
at once (barrier mode), caches an awaited write once it is stored, and
forgets what a failed write may have changed.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Literal, Protocol

from ..backends.lease import Lease, fenced
from ..errors import LeaseLostError, describe_error
from ..store.base import AuthStateStore
from .key_cache import Cache, Entry, Key, grouped
from .key_log import Write, WriteLog

__all__ = ["KeyWriter", "KeyWrites", "Timing"]

logger = logging.getLogger("wa_session_store")

KeyWrites = Literal["write-through", "barrier"]
"""How :class:`~wa_session_store.AuthKeys` stores writes: at once, or at the next barrier."""


class Timing(Protocol):
    """The tunables a writer reads each time it needs one: the ``AuthKeys``
    class it serves (whose constants a subclass or a test may change)."""

    FLUSH_DELAY: float
    MAX_PENDING: int
    RETRY_DELAY: float


class KeyWriter:
    """Orders and stores the key writes of one session; see the module documentation.

    Args:
        timing: the ``AuthKeys`` served, for ``FLUSH_DELAY``, ``MAX_PENDING``
            and ``RETRY_DELAY``.
        store: an open store.
        session_id: the session.
        lease: the lease that fences every write, or None.
        cache: the read cache of the ``AuthKeys`` served.
        mode: ``"write-through"`` or ``"barrier"``.

    Attributes:
        log: the write log.
        mode: ``"write-through"`` or ``"barrier"``.
        lost: whether the lease was lost (:meth:`drop`): nothing is stored or
            cached any more.
    """

    __slots__ = (
        "_cache",
        "_closed",
        "_closing",
        "_flush_task",
        "_lease",
        "_session_id",
        "_store",
        "_timer",
        "_timing",
        "log",
        "lost",
        "mode",
    )

    def __init__(
        self,
        timing: Timing,
        store: AuthStateStore,
        session_id: str,
        lease: Lease | None,
        cache: Cache,
        mode: KeyWrites,
    ) -> None:
        self._timing = timing
        self._store = store
        self._session_id = session_id
        self._lease = lease
        self._cache = cache
        self.mode: KeyWrites = mode
        self.log = WriteLog()
        self._flush_task: asyncio.Task[Exception | None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._closed = False
        self.lost = False

    # -- accepting writes -------------------------------------------------------

    async def write(self, batch: dict[Key, Entry], *, barrier: bool) -> None:
        """Log ``batch`` as one write: stored before returning (write-through,
        or closing), or pending for the next barrier (and, with ``barrier``,
        flushed now)."""
        if not batch:
            return
        self.check_lease()
        if self._awaited():
            await self._wait_for(self.log.append(batch, visible=False, retained=False))
            return
        write = self.log.append(batch, visible=True, retained=True)
        for key, entry in batch.items():
            self._cache.put(key, entry)
        if barrier:
            await self._flush_through(write.seq)
        elif len(self.log.index) >= self._timing.MAX_PENDING:
            self._start_flush()
        else:
            self._arm(self._timing.FLUSH_DELAY)

    async def clear(self) -> None:
        """Log a clear of every key, stored before returning (see ``AuthKeys.clear``)."""
        if self._awaited():
            await self._wait_for(self.log.append(None, visible=False, retained=False))
            return
        # Barrier mode: seen at once, like any write; kept if it fails (a
        # retried clear is harmless, a dropped one might have half-landed).
        write = self.log.append(None, visible=True, retained=True)
        self._cache.clear()
        await self._flush_through(write.seq)

    async def flush(self) -> None:
        """Store every write accepted before this call (see ``AuthKeys.flush``)."""
        await self._flush_through(self.log.seq)

    def _awaited(self) -> bool:
        """Whether a write is stored before its caller is answered."""
        return self.mode == "write-through" or self._closing

    def check_lease(self) -> None:
        """Raise :class:`LeaseLostError` if the lease was lost."""
        lease = self._lease
        if lease is None or not (self.lost or lease.lost):
            return
        reason = lease.reason
        raise LeaseLostError(
            self._session_id,
            lease.token,
            getattr(reason, "holder", None),
            getattr(reason, "holder_token", None),
        )

    # -- flushing ---------------------------------------------------------------

    async def _wait_for(self, write: Write) -> None:
        """Flush until ``write`` is stored (return) or dropped (raise its error).

        A round that fails before reaching ``write`` (older writes kept for
        the next barrier) drops it too: its caller is told, once.
        """
        while not write.done:
            self.check_lease()
            error = await asyncio.shield(self._start_flush())
            if error is not None and not write.done and not self.lost:
                self.log.failed([write], error)
                self._forget_uncertain()
        self.check_lease()
        if write.error is not None:
            raise write.error

    async def _flush_through(self, seq: int) -> None:
        """Flush until every write numbered up to ``seq`` is resolved.

        A round that fails is reported, not repeated at once: it just spent
        its whole retry budget.
        """
        while True:
            self.check_lease()
            if self.log.durable >= seq:
                return
            error = await asyncio.shield(self._start_flush())
            if error is not None:
                raise error

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
        if self.log.entries and self._flush_task is None:
            self._start_flush()

    def _start_flush(self) -> asyncio.Task[Exception | None]:
        task = self._flush_task
        if task is None:
            self._cancel_timer()
            task = asyncio.get_running_loop().create_task(self._flush_round())
            self._flush_task = task
        return task

    async def _flush_round(self) -> Exception | None:
        """Store the log's next prefix in one round trip; the error, or None."""
        error: Exception | None = None
        try:
            prefix = self.log.take()
            if prefix:
                error = await self._store_round(prefix)
            return error
        finally:
            self._flush_task = None
            # What was written meanwhile, or what failed, goes at the next
            # timer if no barrier comes first.
            if self.log.entries and not self.lost and not self._closed:
                timing = self._timing
                self._arm(timing.FLUSH_DELAY if error is None else timing.RETRY_DELAY)

    async def _store_round(self, prefix: list[Write]) -> Exception | None:
        # The newest write of each key, once: what set_keys stores and what is cached after.
        newest = None if prefix[-1].batch is None else WriteLog.merged(prefix)
        try:
            await self._store_prefix(newest)
        except BaseException as exc:
            if not self.lost:
                self.log.failed(prefix, exc)
                self._forget_uncertain()
            if not isinstance(exc, Exception):
                raise
            if not isinstance(exc, LeaseLostError):
                self._log_failure(prefix, exc)
            return exc
        if not self.lost:
            self._cache_stored(newest)
            self.log.stored(prefix)
        return None

    async def _store_prefix(self, newest: dict[Key, Write] | None) -> None:
        """One fenced ``clear_keys`` (None: a prefix ending in a clear) or
        ``set_keys`` of ``newest``, the newest write of each key in the prefix."""
        if newest is None:
            await fenced(self._lease, partial(self._store.clear_keys, self._session_id))
            return
        data = grouped({key: write.batch[key] for key, write in newest.items() if write.batch})
        await fenced(self._lease, partial(self._store.set_keys, self._session_id, data))

    def _cache_stored(self, newest: dict[Key, Write] | None) -> None:
        """The cache after a prefix landed: emptied by a clear (None); awaited
        writes (not cached while in flight) cached unless a newer write exists."""
        if newest is None:
            self._cache.clear()
            return
        for key, write in newest.items():
            if not write.visible and write.batch and self.log.newest(key) == write.seq:
                self._cache.put(key, write.batch[key])

    def _forget_uncertain(self) -> None:
        """Drop from the cache what a failed, dropped write may have changed."""
        if self.log.uncertain_all:
            self._cache.clear()
        for key in self.log.uncertain:
            self._cache.discard(key)

    def _log_failure(self, prefix: list[Write], error: Exception) -> None:
        retained = [w for w in prefix if w.retained]
        if not retained:
            return  # every caller is told
        logger.error(
            "storing %d key writes of %s failed; they stay pending for the next barrier: %s",
            sum(len(w.batch or ()) for w in retained),
            self._session_id,
            describe_error(error),
            extra={"session_id": self._session_id, "op": "flush_keys"},
        )

    # -- life cycle ---------------------------------------------------------------

    async def close(self) -> None:
        """Drain the log: store every write accepted before the end of this
        call; writes made meanwhile are stored as they are made.

        Raises:
            LeaseLostError, StoreUnavailableError, StoreOperationError: a
                write could not be stored; ``log.pending`` counts what is left.
        """
        self._closing = True
        try:
            while self.log.entries and not self.lost:
                await self._flush_through(self.log.seq)
            self.check_lease()
        finally:
            self._closed = True
            self._cancel_timer()

    def drop(self) -> None:
        """The lease was lost: drop what is pending, empty the cache, store and cache no more."""
        dropped = self.log.pending
        if dropped:
            logger.error(
                "dropping %d unsaved key writes of %s: its lease was replaced",
                dropped,
                self._session_id,
                extra={"session_id": self._session_id, "op": "lease"},
            )
        self.lost = True
        self._cancel_timer()
        self.log.drop_all()
        self._cache.clear()
