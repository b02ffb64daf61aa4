"""The lease capability of the PostgreSQL backend: grants, renewals, releases,
and the fenced write primitives.

Mixed into :class:`~wa_session_store.PostgresStore`; the other backends have
neither leases nor fence parameters. A write made with ``fence=lease`` is
sent by :class:`~wa_session_store.BaseStore` to the primitives here, which
check the lease's token in the same statement as the write.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from psycopg import sql

from ..errors import (
    InvalidInputError,
    InvalidTypeError,
    LeaseLostError,
    LeaseUnavailableError,
    shown,
)
from ..metrics.instrumentation import Metrics
from ..store.codec import KeyRow
from ..store.ids import check_session_id
from ..store.maintenance import creds_pages
from ..store.records import CredsRow
from ..store.rows import RowCodec, check_page, page_end
from .lease import Lease, LeasedCredsPage, LeaseInfo, check_lease_args
from .postgres_schema import Schema

__all__ = ["PostgresLeases", "lease_capability"]

T = TypeVar("T")


class PostgresLeases:
    """The lease capability of :class:`~wa_session_store.PostgresStore`.

    Grants, renewals and releases (one statement each, however many leases),
    and the fenced write primitives that :class:`~wa_session_store.BaseStore`
    uses for a write made with ``fence=lease``. Mixed into the store, which
    supplies ``schema``, ``metrics``, ``kind`` and the retried ``_call`` /
    single-attempt ``_query``.
    """

    schema: Schema
    metrics: Metrics | None
    kind: str

    #: The most statements one :meth:`claim_sessions` makes: the first, and
    #: one more each time concurrent claims took sessions it had picked.
    CLAIM_ATTEMPTS = 3

    if TYPE_CHECKING:  # supplied by BaseStore and PostgresStore
        CREDS_PAGE_SIZE: int
        _rows: RowCodec

        async def _call(
            self, op: str, session_id: str | None, attempt: Callable[[float], Awaitable[T]]
        ) -> T: ...

        async def _query(
            self,
            timeout: float,
            statement: sql.Composed,
            params: Any = None,
            *,
            fetch: str = "none",
            binary: bool = False,
        ) -> Any: ...

        async def _write_statement(
            self, statement: sql.Composed, params: dict[str, Any], timeout: float
        ) -> int: ...

    #: Seconds between attempts while ``acquire_lease`` waits for a holder.
    LEASE_POLL_INTERVAL = 0.2

    async def acquire_lease(
        self, session_id: str, *, owner: str, ttl: float = 30.0, wait: float | None = 0.0
    ) -> Lease:
        """Grant the session to ``owner`` until ``ttl`` seconds pass without renewal.

        If another live owner holds it, try again every
        ``LEASE_POLL_INTERVAL`` seconds for up to ``wait`` seconds (``None``:
        forever) until it is released or expires. Acquiring a lease one
        already holds grants a new one with a higher token.

        Returns:
            The :class:`~wa_session_store.Lease`, with a fencing token higher
            than any granted for this session before.

        Raises:
            LeaseUnavailableError: still held by someone else after ``wait``,
                naming the holder and when its lease expires.
            InvalidInputError: a bad session id, owner, ttl or wait.
        """
        sid = check_session_id(session_id)
        owner, ttl = check_lease_args(owner, ttl, wait)
        loop = asyncio.get_running_loop()
        deadline = None if wait is None else loop.time() + wait
        params = {"sid": sid, "owner": owner, "ttl": ttl}
        while True:
            row = await self._call(
                "acquire_lease",
                sid,
                partial(
                    self._query, statement=self.schema.acquire_lease, params=params, fetch="one"
                ),
            )
            if row is None:
                # A first grant raced this one: its insert committed after this
                # statement's snapshot, which then has no holder to name. The
                # next statement sees it.
                continue
            granted, holder, token, expires_at = row
            if granted:
                if self.metrics is not None:
                    self.metrics.leases_granted(self.kind)
                return Lease(self, sid, holder, token, expires_at, ttl)
            remaining = math.inf if deadline is None else deadline - loop.time()
            if remaining <= 0:
                raise LeaseUnavailableError(sid, holder, expires_at)
            await asyncio.sleep(min(self.LEASE_POLL_INTERVAL, remaining))

    async def claim_sessions(self, owner: str, *, limit: int, ttl: float = 30.0) -> list[Lease]:
        """Lease up to ``limit`` stored sessions whose lease is free or expired.

        Several workers claiming at once split the sessions between them
        (``FOR UPDATE SKIP LOCKED``); a session is never granted twice. One
        statement, unless a concurrent claim took sessions this one had
        picked (its snapshot predated that grant): it then asks again for as
        many, up to ``CLAIM_ATTEMPTS`` (3) statements in all, so that it does
        not come back short while sessions are free.

        Raises:
            InvalidInputError: a bad owner, limit or ttl.
        """
        owner, ttl = check_lease_args(owner, ttl)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidInputError(f"limit must be an int >= 1, not {shown(limit)}")
        leases: list[Lease] = []
        for _ in range(self.CLAIM_ATTEMPTS):
            params = {"owner": owner, "limit": limit - len(leases), "ttl": ttl}
            rows = await self._call(
                "claim_sessions",
                None,
                partial(
                    self._query, statement=self.schema.claim_sessions, params=params, fetch="all"
                ),
            )
            granted = [
                Lease(self, sid, holder, token, expires, ttl)
                for _, sid, holder, token, expires in rows
                if sid is not None
            ]
            if granted and self.metrics is not None:
                self.metrics.leases_granted(self.kind, len(granted))
            leases += granted
            candidates = rows[0][0]
            if len(granted) == candidates or len(leases) >= limit:
                break
        return leases

    async def lease_creds_page(
        self, owner: str, *, after: str | None = None, limit: int | None = None, ttl: float = 30.0
    ) -> LeasedCredsPage:
        """Lease up to ``limit`` sessions whose id sorts after ``after``, then read their creds.

        The leased form of :meth:`~wa_session_store.store.base.BaseStore.load_creds_page`,
        for bringing many sessions back under leases (``restore_all(...,
        owner=...)``): one statement grants every session of the page that
        has creds to ``owner``, as :meth:`acquire_lease` would (``wait=0``: a
        session whose lease is free, expired or ``owner``'s own gets a new
        token; one held by another live owner is reported in ``held``), and a
        second statement then reads the creds of those granted. Read after
        the grant, they hold everything a previous owner saved: a save it
        made before the grant is read, one after fails its fence.

        Args:
            owner: who the leases are granted to (1 to 255 characters).
            after: start after this session id (default None: from the first).
            limit: the most sessions in the page (default None:
                ``CREDS_PAGE_SIZE``, 1000; at most 100,000).
            ttl: lease seconds (default 30.0).

        Returns:
            The :class:`~wa_session_store.backends.lease.LeasedCredsPage`. Its
            ``leases`` include sessions granted whose document did not decode
            (in ``failed``) or was deleted before the read: release the leases
            of the sessions you do not run.

        Raises:
            InvalidInputError: a bad owner, ``after``, ``limit`` or ttl.
            StoreUnavailableError, StoreOperationError: a statement failed (a
                lease granted by the first expires after ``ttl``).
        """
        owner, ttl = check_lease_args(owner, ttl)
        after, size = check_page(after, limit, self.CREDS_PAGE_SIZE)
        page, rows = await self._lease_page(owner, after, size, ttl)
        self._rows.decode_creds(page, rows)
        return page

    def _lease_pages(self, owner: str, ttl: float) -> AsyncIterator[LeasedCredsPage]:
        """Every page of :meth:`lease_creds_page` (owner and ttl checked), the
        next one granted and read while one decodes (``creds_pages``), as
        ``iter_creds_pages`` reads. A page still in flight when the iteration
        ends is cancelled: the leases it may have granted expire after ``ttl``."""
        size = self.CREDS_PAGE_SIZE

        async def fetch(after: str | None) -> tuple[LeasedCredsPage, list[CredsRow]] | None:
            page, rows = await self._lease_page(owner, after, size, ttl)
            return (page, rows) if page.leases or page.held else None

        return creds_pages(fetch, self._rows.decode_creds)

    async def _lease_page(
        self, owner: str, after: str | None, size: int, ttl: float
    ) -> tuple[LeasedCredsPage, list[CredsRow]]:
        """The two statements of :meth:`lease_creds_page`: the page with its
        leases and held sessions, not yet decoded, and the creds rows read."""
        params = {"owner": owner, "ttl": ttl, "after": after or "", "limit": size}
        rows = await self._call(
            "lease_creds_page",
            None,
            partial(self._query, statement=self.schema.grant_page, params=params, fetch="all"),
        )
        page = LeasedCredsPage(next_after=page_end(rows, size))
        leases, held = page.leases, page.held
        for sid, granted, holder, token, expires_at in rows:
            if granted:
                leases[sid] = Lease(self, sid, holder, token, expires_at, ttl)
            elif holder is not None:
                held[sid] = LeaseUnavailableError(sid, holder, expires_at)
        if leases and self.metrics is not None:
            self.metrics.leases_granted(self.kind, len(leases))
        for sid, *_ in rows:
            if sid not in leases and sid not in held:
                # Leased for the first time by a grant that committed while this
                # one ran: its row is newer than this statement's snapshot.
                try:
                    leases[sid] = await self.acquire_lease(sid, owner=owner, ttl=ttl)
                except LeaseUnavailableError as exc:
                    held[sid] = exc
        creds: list[CredsRow] = []
        if leases:
            creds = await self._call(
                "lease_creds_page",
                None,
                partial(
                    self._query,
                    statement=self.schema.read_creds_of,
                    params=(sorted(leases),),
                    fetch="all",
                    binary=True,
                ),
            )
        return page, creds

    async def lease_holder(self, session_id: str) -> tuple[str, int, datetime] | None:
        """The newest lease of the session: (owner, token, expires_at), or None."""
        sid = check_session_id(session_id)
        params = {"sid": sid}

        row = await self._call(
            "lease_holder",
            sid,
            partial(self._query, statement=self.schema.lease_holder, params=params, fetch="one"),
        )
        return None if row is None else (row[0], row[1], row[2])

    async def list_leases(self) -> list[LeaseInfo]:
        """The newest lease of every session that ever had one, ordered by session id.

        A released lease reads as expired: its row outlives it, so that tokens
        keep increasing.
        """
        rows = await self._call(
            "list_leases",
            None,
            partial(self._query, statement=self.schema.list_leases, fetch="all"),
        )
        return [LeaseInfo(*row) for row in rows]

    async def _renew_lease(self, lease: Lease) -> datetime:
        rows = await self._renew_batch("renew_lease", lease.session_id, {lease.session_id: lease})
        ((sid, expires_at, holder, holder_token),) = rows
        if expires_at is None:
            raise LeaseLostError(sid, lease.token, holder, holder_token)
        if self.metrics is not None:
            self.metrics.leases_renewed(self.kind, 1)
        return expires_at

    async def _release_lease(self, lease: Lease) -> None:
        await self._release_batch("release_lease", lease.session_id, {lease.session_id: lease})

    async def _renew_batch(
        self, op: str, session_id: str | None, leases: dict[str, Lease]
    ) -> list[tuple[str, datetime | None, str | None, int | None]]:
        """One statement renewing ``leases``: (session, new expiry or None, holder, token)."""
        params = {
            "sids": list(leases),
            "tokens": [lease.token for lease in leases.values()],
            "ttls": [lease.ttl for lease in leases.values()],
        }
        rows: list[tuple[str, datetime | None, str | None, int | None]] = await self._call(
            op,
            session_id,
            partial(self._query, statement=self.schema.renew_leases, params=params, fetch="all"),
        )
        return rows

    async def _release_batch(
        self, op: str, session_id: str | None, leases: dict[str, Lease]
    ) -> int:
        params = {"sids": list(leases), "tokens": [lease.token for lease in leases.values()]}
        count = await self._call(
            op,
            session_id,
            partial(self._query, statement=self.schema.release_leases, params=params),
        )
        return int(count)

    async def renew_leases(self, leases: Iterable[Lease]) -> list[Lease]:
        """Renew many leases in one statement; return those found lost.

        Each lease is extended by its own ``ttl`` from now (server time) if its
        token is still the session's newest, exactly as :meth:`Lease.renew`
        fences it. A lease that is not renewed is marked lost individually
        (:meth:`Lease.mark_lost` with a :class:`LeaseLostError` naming the
        current holder); the others are unaffected. Leases already known to
        be lost are skipped.

        Raises:
            StoreUnavailableError, StoreOperationError: the statement failed;
                no lease is marked lost then (the caller decides, by expiry).
        """
        live = {lease.session_id: lease for lease in leases if not lease.lost}
        if not live:
            return []
        rows = await self._renew_batch("renew_leases", None, live)
        lost: list[Lease] = []
        for sid, expires_at, holder, holder_token in rows:
            lease = live[sid]
            if expires_at is not None:
                lease.expires_at = expires_at
            elif not lease.lost:
                lease.mark_lost(LeaseLostError(sid, lease.token, holder, holder_token))
                lost.append(lease)
        if self.metrics is not None:
            self.metrics.leases_renewed(self.kind, len(rows) - len(lost))
        return lost

    async def release_leases(self, leases: Iterable[Lease]) -> int:
        """Release many leases in one statement (see :meth:`Lease.release`).

        Leases already lost or released are skipped; the others end released
        (``lease.lost`` turns True, without loss callbacks) even when they had
        been taken over meanwhile. Stop their keep-alives first.

        Returns:
            How many were still held and are now free.

        Raises:
            StoreUnavailableError, StoreOperationError: the statement failed
                (nothing is marked released).
        """
        live = {lease.session_id: lease for lease in leases if not lease.lost}
        if not live:
            return 0
        count = await self._release_batch("release_leases", None, live)
        for lease in live.values():
            lease._released()
        return count

    # -- fenced writes (see BaseStore: a write made with fence=lease) -----------------

    def _fencing(self) -> PostgresLeases:
        return self

    async def _write_creds_fenced(
        self, session_id: str, blob: bytes, version: int, token: int, timeout: float
    ) -> bool:
        params = {"sid": session_id, "token": token, "value": blob, "version": version}
        return await self._write_statement(self.schema.write_creds_fenced, params, timeout) > 0

    async def _write_keys_fenced(
        self, session_id: str, rows: list[KeyRow], token: int, timeout: float
    ) -> None:
        params = {"sid": session_id, "token": token, **Schema.key_batch_params(rows)}
        await self._write_statement(self.schema.key_batch(rows, fenced=True), params, timeout)

    async def _clear_keys_fenced(self, session_id: str, token: int, timeout: float) -> int:
        params = {"sid": session_id, "token": token}
        return await self._write_statement(self.schema.clear_keys_fenced, params, timeout)


def lease_capability(store: object) -> PostgresLeases:
    """``store``'s lease capability (a :class:`~wa_session_store.PostgresStore`).

    Raises:
        InvalidTypeError: the store has no leases (SQLite, memory, any other).
    """
    if not isinstance(store, PostgresLeases):
        raise InvalidTypeError(f"{type(store).__name__} has no leases: they need a PostgresStore")
    return store
