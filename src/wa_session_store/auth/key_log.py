"""The key store's ordered write log: what "newest" means for a session's keys.

Each :class:`~wa_session_store.auth.keys.AuthKeys` has one :class:`WriteLog`,
which its writer (:class:`~wa_session_store.auth.key_writer.KeyWriter`) owns. Every
accepted write (a ``set``, a delete, a ``clear``, a committed transaction)
is appended with the next sequence number and stays in the log until the
store has it. The log alone answers the questions that the cache, the
pending batch, the flush in flight, transactions, ``clear()`` and
``preload()`` used to answer each in their own way:

* which unstored value a read must see (:meth:`WriteLog.lookup`);
* what the next flush stores (:meth:`WriteLog.take`: a prefix of the log);
* what a failed flush leaves (:meth:`WriteLog.failed`: the prefix, in place
  under the newer entries, or, for a write whose caller is told, nothing);
* whether a value read from the store may enter the cache
  (:meth:`WriteLog.cacheable`: only for a key with no write newer than what
  the store held when the read began).

Sequence numbers start at 1. ``durable`` is the highest number up to which
every write is resolved (stored, or refused to its caller): the store holds
the effect of every stored write numbered up to it. No I/O here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Final

from .key_cache import ABSENT, Entry, Key

__all__ = ["Write", "WriteLog"]


class Write:
    """One accepted write: a batch of keys (``None`` values delete), or a clear.

    Attributes:
        seq: its place in the log.
        batch: ``{(category, id): entry}``; None for a clear of every key.
        visible: whether reads see it before it is stored (barrier mode:
            the caller has been answered). A write whose caller awaits its
            round trip is not seen until it lands.
        retained: whether a failed store keeps it in the log for the next
            flush (barrier mode) or drops it, its caller told (awaited writes).
        error: why it was dropped, once it has been; None otherwise.
        done: True once stored or dropped.
    """

    __slots__ = ("batch", "done", "error", "retained", "seq", "visible")

    def __init__(
        self, seq: int, batch: dict[Key, Entry] | None, *, visible: bool, retained: bool
    ) -> None:
        self.seq = seq
        self.batch = batch
        self.visible = visible
        self.retained = retained
        self.error: BaseException | None = None
        self.done = False

    def __repr__(self) -> str:
        what = "clear" if self.batch is None else f"{len(self.batch)} keys"
        return f"<Write {self.seq}: {what}{' visible' if self.visible else ''}>"

    @property
    def keys(self) -> Iterable[Key]:
        return () if self.batch is None else self.batch.keys()


class WriteLog:
    """The unstored writes of one auth state's keys, in the order they were accepted.

    Invariants (checked by the property test in ``tests/test_write_log.py``):

    1. Sequence numbers grow by one per accepted write; ``entries`` is in
       sequence order and holds exactly the writes not yet resolved.
    2. ``index[key]`` is the newest unresolved write of ``key``.
    3. ``newest(key)`` is at least the sequence number of the newest write
       of ``key`` (a clear writes every key) that a read in flight, or the
       cache, could still be older than.
    4. A flush takes a prefix of ``entries`` (:meth:`take`); on success the
       prefix leaves the log (:meth:`stored`); on failure the retained writes
       of the prefix stay where they were, under every newer entry, and the
       others leave it with their error (:meth:`failed`).
    5. A key whose store outcome is unknown (a dropped write may have
       committed) is never filled into the cache from a read until a later
       write of it is stored: ``uncertain`` (or ``uncertain_all`` after a
       dropped clear).
    """

    #: Prune the per-key sequence numbers once they exceed this many more
    #: than the log holds (amortises the pruning to O(1) per write).
    PRUNE_SLACK: Final = 1024

    __slots__ = (
        "_reads",
        "_touched",
        "clear_seq",
        "entries",
        "index",
        "seq",
        "uncertain",
        "uncertain_all",
        "visible_clear",
    )

    def __init__(self) -> None:
        self.seq = 0
        self.entries: deque[Write] = deque()
        self.index: dict[Key, Write] = {}
        self.clear_seq = 0
        # The newest unresolved clear that reads already see (barrier mode), or 0.
        self.visible_clear = 0
        self.uncertain: set[Key] = set()
        self.uncertain_all = False
        # The newest write's number per key, kept while a read or the cache may need it.
        self._touched: dict[Key, int] = {}
        # The starts (``durable`` then) of the reads in flight, with their counts.
        self._reads: dict[int, int] = {}

    @property
    def pending(self) -> int:
        """Keys with an unresolved write, plus unresolved clears."""
        # A snapshot: metrics scrapes read this from another thread.
        return len(self.index) + sum(1 for w in tuple(self.entries) if w.batch is None)

    @property
    def durable(self) -> int:
        """Every write numbered up to this is resolved."""
        return self.entries[0].seq - 1 if self.entries else self.seq

    # -- accepting ------------------------------------------------------------

    def append(self, batch: dict[Key, Entry] | None, *, visible: bool, retained: bool) -> Write:
        """Accept a write (``batch``, or None for a clear): number it, log it."""
        self.seq += 1
        write = Write(self.seq, batch, visible=visible, retained=retained)
        self.entries.append(write)
        if batch is None:
            self.clear_seq = write.seq
            if visible:
                self.visible_clear = write.seq
        else:
            for key in batch:
                self.index[key] = write
                self._touched[key] = write.seq
        return write

    def lookup(self, key: Key) -> Entry | None:
        """The newest visible unresolved value of ``key`` (:data:`ABSENT` after
        a visible clear), or None (nothing visible is logged)."""
        write = self.index.get(key)
        if write is not None and write.visible and write.seq > self.visible_clear:
            return write.batch[key] if write.batch is not None else None
        if self.visible_clear > (write.seq if write is not None else 0):
            return ABSENT
        if write is None:
            return None
        # Rare: an awaited write over a visible one (a barrier-mode store closing).
        for older in reversed(self.entries):
            if older.seq >= write.seq or not older.visible:
                continue
            if older.batch is None:
                return ABSENT
            if key in older.batch:
                return older.batch[key]
        return None

    def newest(self, key: Key) -> int:
        """A number at least that of the newest write of ``key`` a reader could miss."""
        return max(self._touched.get(key, 0), self.clear_seq)

    # -- reads from the store --------------------------------------------------

    def begin_read(self) -> int:
        """Note a read of the store starting; returns its start (for :meth:`cacheable`)."""
        start = self.durable
        self._reads[start] = self._reads.get(start, 0) + 1
        return start

    def end_read(self, start: int) -> None:
        count = self._reads.pop(start) - 1
        if count:
            self._reads[start] = count
        self._prune()

    def cacheable(self, key: Key, start: int) -> bool:
        """Whether the store's answer to a read begun at ``start`` may be cached for ``key``.

        Only if no write of ``key`` (nor a clear) is newer than ``start``: the
        store held every write up to ``start`` when the read began, and may
        or may not hold any later one.
        """
        if self.uncertain_all or key in self.uncertain:
            return False
        return self.newest(key) <= start

    # -- flushing -------------------------------------------------------------

    def take(self) -> list[Write]:
        """The prefix the next flush stores: the whole log, or up to its last
        clear (the writes before a clear need not be stored: it removes them)."""
        last_clear = None
        for i, write in enumerate(self.entries):
            if write.batch is None:
                last_clear = i
        if last_clear is None:
            return list(self.entries)
        return [self.entries[i] for i in range(last_clear + 1)]

    @staticmethod
    def merged(prefix: list[Write]) -> dict[Key, Write]:
        """The newest write of every key in ``prefix`` (a prefix without a clear)."""
        newest: dict[Key, Write] = {}
        for write in prefix:
            for key in write.keys:
                newest[key] = write
        return newest

    def stored(self, prefix: list[Write]) -> None:
        """The store holds ``prefix`` (the front of the log): remove it."""
        for write in prefix:
            if not self.entries or self.entries.popleft() is not write:
                raise RuntimeError("a flush stores a prefix of the write log")
            write.done = True
            for key in write.keys:
                if self.index.get(key) is write:
                    del self.index[key]
                self.uncertain.discard(key)
            if write.batch is None:
                # Every write before it is moot; so is every doubt about a key.
                self.uncertain.clear()
                self.uncertain_all = False
        if prefix and prefix[-1].batch is None and self.visible_clear <= prefix[-1].seq:
            self.visible_clear = 0
        self._prune()

    def failed(self, prefix: list[Write], error: BaseException) -> None:
        """Storing ``prefix`` failed: keep its retained writes in place, drop
        the others (their callers are told ``error``).

        A dropped write may have committed before the connection failed: its
        keys become uncertain (not cached from reads until written again).
        """
        dropped = [w for w in prefix if not w.retained]
        if not dropped:
            return
        gone = {id(w) for w in dropped}
        self.entries = deque(w for w in self.entries if id(w) not in gone)
        for write in dropped:
            write.done = True
            write.error = error
            if write.batch is None:
                self.uncertain_all = True
            for key in write.keys:
                self.uncertain.add(key)
                if self.index.get(key) is write:
                    older = self._newest_logged(key)
                    if older is None:
                        del self.index[key]
                    else:
                        self.index[key] = older

    def _newest_logged(self, key: Key) -> Write | None:
        for write in reversed(self.entries):
            if write.batch is not None and key in write.batch:
                return write
        return None

    def drop_all(self) -> None:
        """Empty the log (the lease was lost)."""
        for write in self.entries:
            write.done = True
        self.entries.clear()
        self.index.clear()
        self.visible_clear = 0

    def _prune(self) -> None:
        """Forget per-key numbers no read in flight, nor the cache, can be older than."""
        if len(self._touched) <= len(self.index) + self.PRUNE_SLACK and (
            self._reads or self.entries
        ):
            return
        bound = min([self.durable, *self._reads])
        self._touched = {k: s for k, s in self._touched.items() if s > bound}
