"""Maintenance of a whole store: scans in pages, reencryption, health reports.

The functions work over many rows or sessions at a time, on top of the
single calls of :class:`~wa_session_store.store.base.BaseStore`, which hands
them its retried reads and writes as plain callables: nothing here knows a
backend, so each runs (and is tested) against any function that returns
rows. :class:`MaintenanceCalls` is the part of ``BaseStore`` that does so:
its ``health()``, ``schema_version()`` and ``reencrypt()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import InvalidInputError, describe_error, shown
from .calls import StoreCalls
from .crypto import Cipher
from .records import CredsPage, CredsRow, ReencryptProgress, RowKey, StoreHealth
from .rows import RowCodec

__all__ = [
    "MaintenanceCalls",
    "creds_pages",
    "health_report",
    "health_timeout",
    "reencrypt_rows",
]

#: ``scan(table, after, limit)``: up to ``limit`` rows of ``table`` after ``after``.
Scan = Callable[[str, "RowKey | None", int], Awaitable[list[tuple[RowKey, bytes]]]]
#: ``rewrite(table, changes)``: compare-and-set of ``(key, old, new)``; rows replaced.
Rewrite = Callable[[str, list[tuple[RowKey, bytes, bytes]]], Awaitable[int]]


P = TypeVar("P", bound=CredsPage)

#: Rows decoded between two yields to the event loop while a page decodes.
DECODE_SLICE = 100


async def creds_pages(
    fetch: Callable[[str | None], Awaitable[tuple[P, list[CredsRow]] | None]],
    decode: Callable[[P, list[CredsRow]], None],
) -> AsyncIterator[P]:
    """Every page of creds, decoded, with the next page read while one is decoded.

    ``fetch(after)`` reads the page after ``after``: the page, its
    ``next_after`` set (None for the last) but nothing decoded yet, and its
    stored creds rows; or None when there is nothing after ``after`` (the
    page after an exact multiple). ``decode(page, rows)`` decodes rows into
    the page (``RowCodec.decode_creds``). At most two fetches are in flight
    (two pooled connections). A fetch still in flight when the iteration
    ends is cancelled.

    Decoding is CPU work that would keep the event loop, and with it the next
    page's fetch, waiting: the server would fill the socket's buffers and stop
    sending. A page is therefore decoded :data:`DECODE_SLICE` rows at a time,
    with a yield to the loop between slices, so the next page keeps streaming
    in while this one decodes (its rows arrive while the CPU is busy here).
    """

    def start(after: str | None) -> asyncio.Task[tuple[P, list[CredsRow]] | None]:
        return asyncio.ensure_future(fetch(after))

    pending: asyncio.Task[tuple[P, list[CredsRow]] | None] | None = start(None)
    try:
        while pending is not None:
            fetched = await pending
            if fetched is None:
                return
            page, rows = fetched
            pending = None if page.next_after is None else start(page.next_after)
            for first in range(0, len(rows), DECODE_SLICE):
                if first:
                    await asyncio.sleep(0)
                decode(page, rows[first : first + DECODE_SLICE])
            yield page
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending


async def reencrypt_rows(
    rows: RowCodec,
    scan: Scan,
    rewrite: Rewrite,
    *,
    batch_size: object,
    progress: Callable[[ReencryptProgress], None] | None,
) -> ReencryptProgress:
    """Seal again with the active key every row not sealed with it (see ``BaseStore.reencrypt``).

    Raises:
        InvalidInputError: ``rows`` has no cipher, or a bad ``batch_size``.
        DecryptionError: a row that does not open (nothing of its batch is rewritten).
    """
    cipher: Cipher | None = rows.cipher
    if cipher is None:
        raise InvalidInputError("reencrypt() needs a store opened with cipher=...")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be an int >= 1, not {shown(batch_size)}")
    counts = ReencryptProgress()
    for table in ("creds", "keys"):
        after: RowKey | None = None
        while True:
            found = await scan(table, after, batch_size)
            if not found:
                break
            after = found[-1][0]
            counts.scanned += len(found)
            changes = rows.resealed(table, found, cipher)
            if changes:
                counts.rewritten += await rewrite(table, changes)
            if progress is not None:
                progress(counts)
    return counts


def health_timeout(timeout: object, default: float) -> float:
    """The seconds a health check may take: ``timeout``, or ``default`` for None.

    Raises:
        InvalidInputError: not a number of seconds > 0.
    """
    if timeout is None:
        return default
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not (timeout > 0 and timeout < math.inf)
    ):
        raise InvalidInputError(f"timeout must be seconds > 0, not {timeout!r}")
    return float(timeout)


async def health_report(
    kind: str,
    pool: dict[str, int] | None,
    is_open: bool,
    probe: Callable[[], Awaitable[dict[str, Any]]],
) -> StoreHealth:
    """What ``probe()`` found (or why it failed) as a :class:`StoreHealth`; never raises."""
    facts: dict[str, Any] = {"backend": kind, "pool": pool}
    if not is_open:
        return StoreHealth(ok=False, error=f"{kind} store is not open", **facts)
    try:
        facts.update(await probe())
    except Exception as exc:
        return StoreHealth(ok=False, error=describe_error(exc), **facts)
    # Why the server would refuse a write (a standby, a read-only server), if it would.
    refused = facts.pop("refuses_writes", None)
    expected = facts.get("expected_schema_version")
    error = refused
    if facts.get("schema_version") != expected:
        error = f"schema version {facts.get('schema_version')}, expected {expected}"
    return StoreHealth(ok=error is None, error=error, **facts)


class MaintenanceCalls(StoreCalls):
    """The maintenance calls of :class:`~wa_session_store.store.base.BaseStore`:
    health, schema version, reencryption. Mixed into it, which supplies the
    row codec."""

    if TYPE_CHECKING:  # supplied by BaseStore
        _rows: RowCodec

    #: Seconds :meth:`health` waits for the database at most, by default.
    HEALTH_TIMEOUT = 5.0

    async def health(self, *, timeout: float | None = None) -> StoreHealth:
        """Check the store in one attempt, without raising: for a ``/healthz``.

        Measures one statement's round trip and reads the schema version (and,
        on PostgreSQL, the server that answered, its version, whether it
        accepts writes, found without writing, and the pool's usage). Never
        retries and never raises for an unreachable or closed store: ``ok``
        is False and ``error`` says why. ``ok`` is False too for a server
        that refuses writes (a standby, a read-only primary): ``role`` says
        which (see :class:`StoreHealth`).

        Args:
            timeout: seconds to wait at most (default None: the smaller of
                ``HEALTH_TIMEOUT``, 5.0, and the retry policy's timeout).

        Raises:
            InvalidInputError: a bad ``timeout``.
        """
        seconds = health_timeout(timeout, min(self.HEALTH_TIMEOUT, self.retry.timeout))
        report = await health_report(
            self.kind, self._pool_usage(), self._is_open, partial(self._health, seconds)
        )
        if self._is_open:
            self._up = report.ok  # the store_up gauge of the metrics
        return report

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

        def scan(
            table: str, after: RowKey | None, limit: int
        ) -> Awaitable[list[tuple[RowKey, bytes]]]:
            return self._call("reencrypt", None, partial(self._scan, table, after, limit))

        def rewrite(table: str, changes: list[tuple[RowKey, bytes, bytes]]) -> Awaitable[int]:
            return self._call("reencrypt", None, partial(self._rewrite, table, changes))

        return await reencrypt_rows(
            self._rows, scan, rewrite, batch_size=batch_size, progress=progress
        )
