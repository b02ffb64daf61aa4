"""One owner per session: leases with fencing tokens, on PostgreSQL.

A :class:`Lease` grants a session to one owner until ``ttl`` seconds pass
without renewal. Every grant carries a fencing token, strictly increasing per
session and never reused; writes made with ``fence=lease`` (which
``use_auth_state(..., lease=lease)`` does for every write) land only while
that token is still the newest, checked in the same statement as the write.
So a replaced owner — a container that lived on past its deploy, a process
that was paused — can no longer overwrite the new owner's ratchets.

Leases need no session state on the server (no advisory locks held across
transactions, no LISTEN), so they work through PgBouncer in transaction mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from typing_extensions import Self

from ._codec import _check_name
from .errors import InvalidInputError, LeaseLostError, SessionStoreError, describe_error, shown
from .retry import finite

if TYPE_CHECKING:
    from .backends.postgres import PostgresStore

__all__ = [
    "Lease",
    "LeaseInfo",
    "LeaseRenewer",
    "LossCallback",
    "SessionWorker",
    "check_lease_args",
    "fenced",
]

logger = logging.getLogger("wa_session_store")

LossCallback = Callable[["Lease", BaseException], None]
"""Called once when a lease is lost, with the lease and why (LeaseLostError or expiry)."""

MAX_TTL = 86_400.0


def check_lease_args(owner: object, ttl: object, wait: object = 0.0) -> tuple[str, float]:
    """Validate ``owner`` (1 to 255 characters), ``ttl`` and ``wait`` seconds."""
    owner = _check_name("owner", owner, 255)
    if (
        isinstance(ttl, bool)
        or not isinstance(ttl, (int, float))
        or not (finite(ttl) and 0 < ttl <= MAX_TTL)
    ):
        raise InvalidInputError(f"ttl must be seconds > 0 and <= {MAX_TTL:.0f}, not {shown(ttl)}")
    if wait is not None and (
        isinstance(wait, bool)
        or not isinstance(wait, (int, float))
        or not (finite(wait) and wait >= 0)
    ):
        raise InvalidInputError(f"wait must be None (forever) or seconds >= 0, not {shown(wait)}")
    return owner, float(ttl)


T = TypeVar("T")


async def fenced(lease: Lease | None, write: Callable[..., Awaitable[T]]) -> T:
    """``write()``, or ``write(fence=lease)`` with a lease; a lost lease is reported to it.

    The one place writes are fenced (creds saves and key batches alike):
    without a lease the store is called without ``fence`` at all, so stores
    that know nothing of leases work unchanged.

    Raises:
        LeaseLostError: the lease is no longer the newest; it is marked lost first.
    """
    if lease is None:
        return await write()
    try:
        return await write(fence=lease)
    except LeaseLostError as exc:
        lease.mark_lost(exc)
        raise


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """The newest lease of a session, as ``PostgresStore.list_leases`` reports it.

    Attributes:
        session_id: the session.
        owner: who was granted it last.
        token: its fencing token.
        expires_at: when it expires or expired (server time, UTC).
        expired: whether it had expired when read (by the server's clock):
            nobody owns the session, until a worker claims it.
    """

    session_id: str
    owner: str
    token: int
    expires_at: datetime
    expired: bool


class Lease:
    """A session granted to an owner; get one from ``PostgresStore.acquire_lease``.

    Attributes:
        session_id: the session.
        owner: who holds it.
        token: the fencing token, strictly increasing per session.
        expires_at: when it expires unless renewed (server time, UTC).
        ttl: the seconds each renewal extends it by.

    Use it as an async context manager to release it on exit.
    """

    __slots__ = (
        "_keeper",
        "_lost",
        "_on_lost",
        "_store",
        "expires_at",
        "owner",
        "session_id",
        "token",
        "ttl",
    )

    #: The share of ``ttl`` between keep-alive renewals.
    RENEW_FRACTION = 1 / 3

    def __init__(
        self,
        store: PostgresStore,
        session_id: str,
        owner: str,
        token: int,
        expires_at: datetime,
        ttl: float,
    ) -> None:
        self._store = store
        self.session_id = session_id
        self.owner = owner
        self.token = token
        self.expires_at = expires_at
        self.ttl = ttl
        self._lost: BaseException | None = None
        self._on_lost: list[LossCallback] = []
        self._keeper: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        state = "lost" if self._lost else f"until {self.expires_at.isoformat(timespec='seconds')}"
        return f"<Lease {self.session_id!r} owner={self.owner!r} token={self.token} {state}>"

    @property
    def lost(self) -> bool:
        """Whether the lease is known to be lost (a fenced write or renewal failed)."""
        return self._lost is not None

    def on_lost(self, callback: LossCallback) -> None:
        """Call ``callback(lease, reason)`` once when the lease is lost (at once if it is)."""
        if self._lost is not None:
            _notify(callback, self, self._lost)
        else:
            self._on_lost.append(callback)

    def mark_lost(self, reason: BaseException) -> None:
        """Record the loss (idempotent) and tell the callbacks; stops the keep-alive."""
        if self._lost is not None:
            return
        self._lost = reason
        metrics = self._store.metrics
        if metrics is not None:
            replaced = isinstance(reason, LeaseLostError)
            metrics.lease_lost(self._store.kind, "replaced" if replaced else "expired")
        logger.error(
            "lease of %s (owner %s, token %d) lost: %s",
            self.session_id,
            self.owner,
            self.token,
            describe_error(reason),
            extra={"session_id": self.session_id, "op": "lease", "owner": self.owner},
        )
        keeper, self._keeper = self._keeper, None
        if keeper is not None and keeper is not _current_task():
            keeper.cancel()
        callbacks, self._on_lost = self._on_lost, []
        for callback in callbacks:
            _notify(callback, self, reason)

    async def renew(self) -> None:
        """Extend the lease by ``ttl`` from now (server time).

        Raises:
            LeaseLostError: someone else holds it now (the lease is marked lost).
            StoreUnavailableError: the database could not be reached.
        """
        try:
            self.expires_at = await self._store._renew_lease(self)
        except LeaseLostError as exc:
            self.mark_lost(exc)
            raise

    async def release(self) -> None:
        """Give the session up at once (a no-op if it was already taken over).

        Stops the keep-alive first. The token is kept: the next grant gets a
        higher one.
        """
        await self.stop_keep_alive()
        if self._lost is None:
            await self._store._release_lease(self)
            self._released()

    def _released(self) -> None:
        """Record a release made by this process: lost to us, without loss callbacks."""
        self._lost = LeaseLostError(self.session_id, self.token, None, None)
        self._on_lost.clear()
        metrics = self._store.metrics
        if metrics is not None:
            metrics.leases_released(self._store.kind)

    def keep_alive(
        self, *, every: float | None = None, on_lost: LossCallback | None = None
    ) -> None:
        """Renew in the background every ``every`` seconds (default ``ttl / 3``).

        A renewal that fails for a transient reason is tried again sooner; if
        none succeeds before the lease would expire, or someone else took it,
        the lease is marked lost and ``on_lost`` (and any other loss callback)
        is called. Needs a running event loop.
        """
        if on_lost is not None:
            self.on_lost(on_lost)
        if self._keeper is None and self._lost is None:
            interval = every if every is not None else self.ttl * self.RENEW_FRACTION
            if not (isinstance(interval, (int, float)) and 0 < interval < self.ttl):
                raise InvalidInputError(f"every must be seconds in (0, ttl), not {shown(every)}")
            self._keeper = asyncio.get_running_loop().create_task(self._keep(float(interval)))

    async def stop_keep_alive(self) -> None:
        """Stop the background renewal, if running; returns once it has ended."""
        keeper, self._keeper = self._keeper, None
        if keeper is not None and keeper is not _current_task():
            await _cancel_and_wait(keeper)

    async def _keep(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        # Local estimate of the expiry: the server's clock is not ours.
        deadline = loop.time() + self.ttl
        delay = interval
        me = _current_task()
        # A keeper replaced or stopped ends at its next step even if the
        # cancellation that stop_keep_alive() sent was lost on the way.
        while self._keeper is me:
            await asyncio.sleep(delay)
            if self._keeper is not me:
                return
            try:
                await self.renew()
            except LeaseLostError:
                return
            except SessionStoreError as exc:
                if loop.time() >= deadline:
                    self.mark_lost(exc)
                    return
                delay = min(interval, max(0.05, (deadline - loop.time()) / 3))
                logger.warning(
                    "renewing the lease of %s failed, retrying in %.1fs: %s",
                    self.session_id,
                    delay,
                    describe_error(exc),
                    extra={"session_id": self.session_id, "op": "lease"},
                )
            else:
                deadline = loop.time() + self.ttl
                delay = interval

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()


def _current_task() -> asyncio.Task[object] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


async def _cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling it again while it runs.

    A single cancel() is not enough: an await inside the task may swallow it
    (``asyncio.wait_for`` before Python 3.12 does when its result arrives in
    the same loop iteration), and the task would go on forever.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=_RECANCEL_EVERY)
    if not task.cancelled():
        task.exception()  # retrieved: a failure of a cancelled task is not news


#: Seconds between cancellations of a task that has not ended yet.
_RECANCEL_EVERY = 0.1


def _notify(callback: LossCallback, lease: Lease, reason: BaseException) -> None:
    try:
        callback(lease, reason)
    except Exception:
        logger.exception("lease loss callback %r raised; ignored", callback)


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
    process's clock) is marked lost as expired.

    Args:
        store: an open :class:`~wa_session_store.PostgresStore`.
        every: seconds between renewals (default 10.0); keep it below a third
            of the shortest ttl of the leases added.

    Raises:
        InvalidInputError: ``every`` is not a positive number of seconds.
    """

    def __init__(self, store: PostgresStore, *, every: float = 10.0) -> None:
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
        leases = list(self._deadlines)
        if not leases:
            return []
        started = asyncio.get_running_loop().time()
        lost = await self.store.renew_leases(leases)
        for lease in leases:
            if lease in self._deadlines and not lease.lost:
                self._deadlines[lease] = started + lease.ttl
        return lost

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
        store: PostgresStore,
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
            await asyncio.wait_for(self.store.release_leases(leases), self.STOP_TIMEOUT)
        except (SessionStoreError, asyncio.TimeoutError) as exc:
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
