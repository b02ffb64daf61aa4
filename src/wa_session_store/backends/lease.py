"""Leases: one owner per session, with fencing tokens (granted by PostgreSQL).

A :class:`Lease` grants a session to one owner until ``ttl`` seconds pass
without renewal. Every grant carries a fencing token, strictly increasing per
session and never reused; writes made with ``fence=lease`` (which
``use_auth_state(..., lease=lease)`` does for every write) land only while
that token is still the newest, checked in the same statement as the write.
So a replaced owner — a container that lived on past its deploy, a process
that was paused — can no longer overwrite the new owner's ratchets.

A lease is granted by a store with the lease capability
(:class:`~wa_session_store.backends.postgres_leases.PostgresLeases`, mixed
into :class:`~wa_session_store.PostgresStore`) and knows it only as a
:class:`LeaseGrantor`: nothing here imports a backend, so there is no import
cycle. :func:`fenced` is the one place a write is fenced.

Leases need no session state on the server (no advisory locks held across
transactions, no LISTEN), so they work through PgBouncer in transaction mode.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, TypeVar

from typing_extensions import Self

from ..errors import (
    InvalidInputError,
    LeaseLostError,
    LeaseUnavailableError,
    SessionStoreError,
    describe_error,
    shown,
)
from ..metrics.instrumentation import Metrics
from ..store.ids import check_name
from ..store.records import CredsPage
from ..store.retry import finite

__all__ = [
    "Lease",
    "LeaseGrantor",
    "LeaseInfo",
    "LeasedCredsPage",
    "LossCallback",
    "check_lease_args",
    "fenced",
]

logger = logging.getLogger("wa_session_store")

LossCallback = Callable[["Lease", BaseException], None]
"""Called once when a lease is lost, with the lease and why (LeaseLostError or expiry)."""

MAX_TTL = 86_400.0


def check_lease_args(owner: object, ttl: object, wait: object = 0.0) -> tuple[str, float]:
    """Validate ``owner`` (1 to 255 characters), ``ttl`` and ``wait`` seconds."""
    owner = check_name("owner", owner, 255)
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


class LeaseGrantor(Protocol):
    """What a :class:`Lease` needs of the store that granted it (``PostgresLeases``)."""

    kind: str
    metrics: Metrics | None

    async def _renew_lease(self, lease: Lease) -> datetime:
        """Extend ``lease`` by its ttl; its new expiry, or LeaseLostError."""

    async def _release_lease(self, lease: Lease) -> None:
        """Expire ``lease`` now (nothing if it was taken over)."""


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


@dataclass(frozen=True, slots=True)
class LeasedCredsPage(CredsPage):
    """One page of ``PostgresStore.lease_creds_page``: sessions leased, then their creds read.

    Attributes:
        creds: ``{session_id: creds document}`` of the sessions granted that decoded.
        failed: the sessions granted whose stored document did not decode or open.
        next_after: the ``after`` of the next page, or None after the last one.
        leases: the lease granted for every session of the page that was not
            held by another owner, by session id: those in ``creds``, and any
            whose document failed or was deleted meanwhile (release those).
        held: the sessions of the page another live owner holds, each with
            the :class:`~wa_session_store.LeaseUnavailableError` that
            ``acquire_lease`` would raise (their creds are not read).
    """

    leases: dict[str, Lease] = field(default_factory=dict)
    held: dict[str, LeaseUnavailableError] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"<LeasedCredsPage {len(self.creds)} sessions, {len(self.failed)} failed, "
            f"{len(self.held)} held, {'last' if self.next_after is None else 'more'}>"
        )


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
        store: LeaseGrantor,
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

    @property
    def reason(self) -> BaseException | None:
        """Why the lease was lost (a LeaseLostError, or its expiry), or None while held."""
        return self._lost

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
