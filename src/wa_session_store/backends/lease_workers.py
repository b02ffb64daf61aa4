"""Running many sessions on leases: :class:`LeaseRenewer` and :class:`SessionWorker`.

Both are built on the lease capability of the PostgreSQL backend
(:class:`~wa_session_store.backends.postgres_leases.PostgresLeases`): one
statement renews or releases every lease they hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from ..errors import InvalidInputError, SessionStoreError, describe_error, shown
from ..store.retry import finite, within
from .lease import Lease, _cancel_and_wait, check_lease_args
from .postgres_leases import PostgresLeases

__all__ = ["LeaseRenewer", "SessionHandler", "SessionWorker"]

logger = logging.getLogger("wa_session_store")


class LeaseRenewer:
    """Keeps many leases of one store alive with one statement per period.

    :meth:`Lease.keep_alive` costs one round trip per lease every ``ttl / 3``:
    1,000 sessions with the default 30 s ttl are 100 statements a second. A
    renewer renews every lease it holds in one statement
    (``PostgresStore.renew_leases``) every ``every`` seconds, fenced lease by
    lease exactly as :meth:`Lease.renew`. A lease the batch does not renew
    (someone else holds it now) is marked lost on its own, with its loss
    callbacks. When the statement fails for a transient reason it is tried
    again sooner; a lease that no renewal reached within its ``ttl`` (by this
    process's clock) is marked lost as expired. The background task runs
    while there is a lease to renew: it ends when the last one is discarded,
    released or lost, and :meth:`add` starts it again.

    Args:
        store: an open :class:`~wa_session_store.PostgresStore`.
        every: seconds between renewals (default 10.0); keep it below a third
            of the shortest ttl of the leases added.

    Raises:
        InvalidInputError: ``every`` is not a positive number of seconds.
    """

    def __init__(self, store: PostgresLeases, *, every: float = 10.0) -> None:
        if (
            isinstance(every, bool)
            or not isinstance(every, (int, float))
            or not (finite(every) and every > 0)
        ):
            raise InvalidInputError(f"every must be seconds > 0, not {shown(every)}")
        self.store = store
        self.every = float(every)
        # Each lease with the loop time by which a renewal must land.
        self._deadlines: dict[Lease, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # Held by a renewal statement in flight, so that a release waits for it:
        # a renewal landing after a release would extend the released lease.
        self._renewing = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._deadlines)

    @property
    def leases(self) -> list[Lease]:
        """The leases kept alive now."""
        return list(self._deadlines)

    def add(self, lease: Lease) -> None:
        """Keep ``lease`` alive from now on (needs a running event loop).

        Raises:
            InvalidInputError: the renewer is closed, or the lease is of another store.
        """
        if self._closed:
            raise InvalidInputError("the lease renewer is closed")
        if lease._store is not self.store:
            raise InvalidInputError("the lease was granted by another store")
        loop = asyncio.get_running_loop()
        if lease.lost:
            return
        self._deadlines[lease] = loop.time() + lease.ttl
        lease.on_lost(self._forget)
        if self._task is None:
            self._task = loop.create_task(self._keep())

    def discard(self, lease: Lease) -> None:
        """Stop renewing ``lease`` (it stays held until it expires or is released)."""
        self._deadlines.pop(lease, None)

    def _forget(self, lease: Lease, _reason: BaseException) -> None:
        self._deadlines.pop(lease, None)

    async def renew(self) -> list[Lease]:
        """Renew every lease now, in one statement; return those found lost.

        Raises:
            StoreUnavailableError, StoreOperationError: the statement failed.
        """
        async with self._renewing:
            leases = list(self._deadlines)
            if not leases:
                return []
            started = asyncio.get_running_loop().time()
            lost = await self.store.renew_leases(leases)
            for lease in leases:
                if lease in self._deadlines and not lease.lost:
                    self._deadlines[lease] = started + lease.ttl
            return lost

    async def release(self, leases: Iterable[Lease]) -> int:
        """Stop renewing ``leases`` and release them in one statement.

        The release waits for a renewal in flight to end, so that no renewal
        can extend a lease after it was released. Leases already lost or
        released are skipped (see ``PostgresStore.release_leases``).

        Returns:
            How many were still held and are now free.

        Raises:
            StoreUnavailableError, StoreOperationError: the statement failed
                (the leases are no longer renewed, and expire after their ttl).
        """
        leases = list(leases)
        for lease in leases:
            self._deadlines.pop(lease, None)
        async with self._renewing:
            return await self.store.release_leases(leases)

    async def aclose(self) -> None:
        """Stop renewing (the leases stay held until released or expired)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _keep(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self.every
        while True:
            await asyncio.sleep(delay)
            if not self._deadlines:
                self._task = None  # add() starts a new one
                return
            try:
                await self.renew()
            except SessionStoreError as exc:
                now = loop.time()
                for lease, deadline in list(self._deadlines.items()):
                    if now >= deadline:
                        lease.mark_lost(exc)
                soonest = min(self._deadlines.values(), default=now + self.every)
                delay = min(self.every, max(0.05, (soonest - now) / 3))
                logger.warning(
                    "renewing %d leases failed, retrying in %.1fs: %s",
                    len(self._deadlines),
                    delay,
                    describe_error(exc),
                    extra={"op": "lease"},
                )
            else:
                delay = self.every


SessionHandler = Callable[[Lease], Awaitable[object]]


class SessionWorker:
    """Claims free sessions, runs a handler for each, renews, releases.

    N workers started against one database split the sessions between them
    (``claim_sessions`` uses ``FOR UPDATE SKIP LOCKED``), and a dead worker's
    sessions are claimed by the others once its leases expire.

    Args:
        store: an open :class:`~wa_session_store.PostgresStore`.
        owner: this worker's name (unique among workers: host and pid, say).
        handler: ``async handler(lease)`` runs one session until it returns or
            is cancelled; it is cancelled when the lease is lost or the worker
            stops. Use ``use_auth_state(store, lease.session_id, lease=lease)``.
        capacity: the most sessions this worker runs at once (default 100).
        ttl: lease seconds (default 30.0); renewed every ``ttl / 3``.
        claim_every: seconds between claims of free sessions (default ``ttl / 3``).
        claim_batch: the most sessions claimed at a time (default 10), so that
            workers starting together interleave their claims and share the
            sessions instead of the first one taking up to ``capacity``.

    Every lease of the worker is renewed by one :class:`LeaseRenewer`: one
    statement per ``ttl / 3`` whatever the number of sessions. :meth:`stop`
    releases them all in one statement.
    """

    def __init__(
        self,
        store: PostgresLeases,
        owner: str,
        handler: SessionHandler,
        *,
        capacity: int = 100,
        ttl: float = 30.0,
        claim_every: float | None = None,
        claim_batch: int = 10,
    ) -> None:
        owner, ttl = check_lease_args(owner, ttl)
        for name, value in (("capacity", capacity), ("claim_batch", claim_batch)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be an int >= 1, not {shown(value)}")
        self.claim_batch = claim_batch
        self.store = store
        self.owner = owner
        self.handler = handler
        self.capacity = capacity
        self.ttl = ttl
        self.claim_every = claim_every if claim_every is not None else ttl / 3
        self.renewer = LeaseRenewer(store, every=ttl * Lease.RENEW_FRACTION)
        self._running: dict[str, tuple[Lease, asyncio.Task[None]]] = {}
        self._stopping = asyncio.Event()

    @property
    def sessions(self) -> list[str]:
        """The sessions this worker runs now."""
        return sorted(self._running)

    async def run(self) -> None:
        """Claim and run sessions until :meth:`stop`.

        A claim in flight when :meth:`stop` is called is abandoned (its leases,
        if it got any, expire), and no session is started after it.
        """
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                free = min(self.capacity - len(self._running), self.claim_batch)
                if free > 0:
                    for lease in await self._claim(free, stopping):
                        self._start(lease)
                await asyncio.wait({stopping}, timeout=self.claim_every)
        finally:
            stopping.cancel()

    async def _claim(self, free: int, stopping: asyncio.Future[Any]) -> list[Lease]:
        claim = asyncio.ensure_future(
            self.store.claim_sessions(self.owner, limit=free, ttl=self.ttl)
        )
        await asyncio.wait({claim, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not claim.done() or self._stopping.is_set():
            await _cancel_and_wait(claim)
            return []
        try:
            return claim.result()
        except SessionStoreError as exc:
            logger.warning(
                "worker %s could not claim sessions: %s",
                self.owner,
                describe_error(exc),
                extra={"op": "claim", "owner": self.owner},
            )
            return []

    def _start(self, lease: Lease) -> None:
        task = asyncio.get_running_loop().create_task(self._run_one(lease))
        self._running[lease.session_id] = (lease, task)

        def stop_handler(_lease: Lease, _reason: BaseException) -> None:
            task.cancel()

        lease.on_lost(stop_handler)
        self.renewer.add(lease)

    async def _run_one(self, lease: Lease) -> None:
        try:
            await self.handler(lease)
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            logger.error(
                "handler of %s failed: %s",
                lease.session_id,
                describe_error(exc),
                extra={"session_id": lease.session_id, "op": "worker", "owner": self.owner},
            )
        finally:
            self.renewer.discard(lease)
            if not self._stopping.is_set():  # stop() releases every lease at once
                self._running.pop(lease.session_id, None)
                with contextlib.suppress(SessionStoreError):
                    await lease.release()

    #: Seconds :meth:`stop` waits for the handlers to end, and then for the
    #: leases to be released, before it cancels what is left (tests lower it).
    STOP_TIMEOUT = 5.0

    async def stop(self) -> None:
        """Stop claiming, cancel every handler, release every lease in one statement.

        The leases are renewed until the handlers have ended (their last
        saves are fenced by them), for at most ``STOP_TIMEOUT`` seconds (5.0);
        handlers still running then are cancelled until they end (an await
        away). Then renewal stops and every lease is released in one
        statement, given at most ``STOP_TIMEOUT`` seconds too. So a stop
        returns within twice ``STOP_TIMEOUT`` plus those awaits; with 1,000
        idle sessions at 1 ms one way it takes about 20 ms. A lease whose
        release did not land expires on its own after ``ttl``; the next
        owner's token fences it anyway.
        """
        self._stopping.set()
        held = dict(self._running)
        tasks = [task for _, task in held.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self.STOP_TIMEOUT)
            if late:
                logger.warning(
                    "worker %s: %d sessions did not end within %.1fs of stop(); cancelled, "
                    "their leases expire on their own",
                    self.owner,
                    len(late),
                    self.STOP_TIMEOUT,
                    extra={"op": "worker", "owner": self.owner},
                )
            await asyncio.gather(*(_cancel_and_wait(task) for task in late))
        await self.renewer.aclose()
        leases = [lease for lease, _ in held.values()]
        try:
            await within(self.store.release_leases(leases), self.STOP_TIMEOUT)
        except (SessionStoreError, TimeoutError) as exc:
            logger.warning(
                "worker %s could not release %d leases (they expire in %gs): %s",
                self.owner,
                len(leases),
                self.ttl,
                describe_error(exc),
                extra={"op": "lease", "owner": self.owner},
            )
        for session_id in held:
            self._running.pop(session_id, None)
