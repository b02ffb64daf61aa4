"""One session's auth state, :class:`AuthState`: what a bot holds while it runs.

It hands the client the creds document and the Signal key store
(:class:`~wa_session_store.AuthKeys`, ``keys.py``), saves creds changes
through its :class:`~wa_session_store.auth.creds_saver.CredsSaver` (the
throttle, the backups, the urgent saves), answers the barrier that the
client's outgoing frames wait for, drops what is pending when its lease is
lost, and closes with a last save (releasing a lease that ``restore_all``
took). :func:`~wa_session_store.use_auth_state` (``state.py``) loads one;
its options are checked in ``options.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from ..backends.lease import Lease
from ..backends.lease_workers import LeaseRenewer
from ..errors import (
    InvalidInputError,
    LeaseLostError,
    SessionStoreError,
    StoreClosedError,
    describe_error,
)
from ..metrics import open_auth_states
from ..store.base import AuthStateStore
from ..store.retry import within
from .creds_saver import CredsSaver, UrgentPredicate, check_urgent, prekey_counters_changed
from .keys import DEFAULT_KEY_CACHE_BYTES, AuthKeys, KeyWrites
from .throttle import Throttler

__all__ = ["AuthState"]


logger = logging.getLogger("wa_session_store")

# Every AuthState not yet closed, for install_shutdown_handler() and close_all()
# (and the metrics' gauges, whose module keeps the set).
_open_states = open_auth_states


class AuthState:
    """One session's auth state; build it with :func:`use_auth_state`.

    Attributes:
        session_id: the session.
        creds: the current creds document, or ``None`` until the client pairs.
        keys: the Signal key store, :class:`AuthKeys`.
    """

    __slots__ = (
        "__weakref__",
        "_lease",
        "_on_lost",
        "_renewer",
        "_saver",
        "_store",
        "keys",
        "session_id",
    )

    #: Seconds the release of a lease that :func:`restore_all` took may take
    #: when its auth state closes (one statement for all of them in
    #: :func:`close_all`); one that does not land expires after its ttl.
    LEASE_RELEASE_TIMEOUT = 1.0

    def __init__(
        self,
        store: AuthStateStore,
        session_id: str,
        creds: dict[str, Any] | None,
        *,
        throttle: float = 30.0,
        backup_interval: float | None = 300.0,
        initial_delay: float = 10.0,
        backup_jitter: float = 0.0,
        urgent: UrgentPredicate | None = prekey_counters_changed,
        lease: Lease | None = None,
        on_lost: Callable[[AuthState], None] | None = None,
        key_writes: KeyWrites = "write-through",
        key_cache_bytes: int = DEFAULT_KEY_CACHE_BYTES,
    ) -> None:
        check_urgent(urgent)
        _check_lease_of(lease, session_id)
        self._store = store
        self.session_id = session_id
        self.keys = AuthKeys(
            store, session_id, lease, key_writes=key_writes, cache_bytes=key_cache_bytes
        )
        self._lease = lease
        self._on_lost = on_lost
        # The renewer keeping the lease alive when restore_all took it: this
        # auth state then releases the lease when it closes.
        self._renewer: LeaseRenewer | None = None
        self._saver = CredsSaver(
            store,
            session_id,
            creds,
            throttle=throttle,
            backup_interval=backup_interval,
            initial_delay=initial_delay,
            backup_jitter=backup_jitter,
            urgent=urgent,
            lease=lease,
        )
        self._saver.owner = self

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("pending" if self.pending else "saved")
        return f"<AuthState session={self.session_id!r} {state}>"

    @property
    def creds(self) -> dict[str, Any] | None:
        """The current creds document, or ``None`` until the client pairs."""
        return self._saver.creds

    @creds.setter
    def creds(self, creds: dict[str, Any] | None) -> None:
        self._saver.creds = creds

    @property
    def pending(self) -> bool:
        """Whether a creds change has not been saved yet."""
        return self._saver.pending

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._saver.closed

    @property
    def last_saved_at(self) -> datetime | None:
        """When this process last saved the creds (UTC), or None if it has not yet."""
        saved = self._saver.last_saved
        return None if saved is None else datetime.fromtimestamp(saved, timezone.utc)

    @property
    def consecutive_failures(self) -> int:
        """Creds saves that failed in a row (0 after a successful one)."""
        return self._saver.throttler.failures

    @property
    def lease(self) -> Lease | None:
        """The lease fencing this auth state's writes, if any."""
        return self._lease

    @property
    def lost(self) -> bool:
        """Whether the lease was lost: this process no longer owns the session.

        Disconnect the client: its creds updates are no longer saved.
        """
        return self._lease is not None and self._lease.lost

    def _lease_lost(self, lease: Lease, reason: BaseException) -> None:
        if self.pending:
            logger.error(
                "dropping unsaved creds of %s: its lease (token %d) was replaced",
                self.session_id,
                lease.token,
                extra={"session_id": self.session_id, "op": "lease"},
            )
        # They belong to a replaced owner: saving them would break the new one.
        self._saver.drop()
        self.keys._drop()
        if self._on_lost is not None:
            try:
                self._on_lost(self)
            except Exception:
                logger.exception("on_lost callback of %s raised; ignored", self.session_id)

    @property
    def throttler(self) -> Throttler:
        """The throttler of creds saves (for its counters: ``runs``, ``failures``)."""
        return self._saver.throttler

    def _start(self) -> None:
        if self._lease is not None:
            self._lease.on_lost(self._lease_lost)
            if self._renewer is not None:
                self._renewer.add(self._lease)
        self._saver.start()
        _open_states.add(self)

    def creds_updated(self, creds: Mapping[str, Any] | None = None) -> None:
        """The hook for the client's ``creds.update`` event: non-blocking, never raises.

        ``creds``, when given, becomes the current document (a dict is kept as
        is, so later in-place changes are seen; another mapping is copied).
        Without it, the current document is taken as changed in place. The
        throttled save stores whatever is current when it runs; a change of
        the pre-key counters (see ``urgent``) is saved at once.
        """
        try:
            if not self._saver.changed(creds):
                logger.warning(
                    "creds_updated() for %s before any creds exist; nothing to save",
                    self.session_id,
                    extra={"session_id": self.session_id, "op": "creds_updated"},
                )
        except StoreClosedError:
            logger.error(
                "creds_updated() for %s after aclose(); the update is not saved",
                self.session_id,
                extra={"session_id": self.session_id, "op": "creds_updated"},
            )
        except Exception as exc:
            logger.error(
                "creds_updated() for %s failed: %s",
                self.session_id,
                describe_error(exc),
                extra={"session_id": self.session_id, "op": "creds_updated"},
            )

    async def save_creds(self, creds: Mapping[str, Any] | None = None) -> None:
        """Save now, bypassing the throttle (right after pairing or connecting).

        ``creds``, when given, becomes the current document first.

        Raises:
            InvalidInputError: bad creds (nothing is written).
            StoreClosedError: after :meth:`aclose`.
            StoreUnavailableError, StoreOperationError: the save failed; the
                change stays pending and is retried by the throttle and backups.
        """
        await self._saver.save_now(creds)

    async def flush(self) -> None:
        """Store the pending key writes and save the pending creds change now; wait for both.

        Raises:
            LeaseLostError: the lease was lost.
            StoreUnavailableError, StoreOperationError: a write failed (it stays pending).
        """
        await self._both(self._saver.flush())

    async def barrier(self) -> None:
        """Wait until what an outgoing frame may depend on is stored.

        That is every key write made before the call (:meth:`AuthKeys.flush`)
        and an urgent creds save that is owed or in flight (the pre-key
        counters, which must be stored before the frame that uploads the
        pre-keys they count). Non-urgent creds changes stay throttled. Both
        are written at once, so a barrier costs one round trip. Returns at
        once when nothing is pending. The pyaileys integration makes every
        outgoing frame wait for this; a frame whose barrier raises must not
        be sent.

        Raises:
            LeaseLostError: the lease was lost: this process no longer owns the session.
            StoreUnavailableError, StoreOperationError: a write failed after
                its retries; it stays pending for the next barrier.
        """
        await self._both(self._saver.urgent_owed())

    async def _both(self, creds: Awaitable[None] | None) -> None:
        """Flush the keys and, concurrently, ``creds``; raise the first error."""
        if creds is None:
            await self.keys.flush()
            return
        await _first_error(self.keys.flush(), creds)

    async def aclose(self, deadline: float = 10.0) -> None:
        """Stop the backups, save what is pending, refuse further saves.

        Args:
            deadline: seconds the final save may take (default 10.0).

        When the lease was lost, what is pending belongs to a replaced owner
        and is dropped (logged at ERROR), not raised. A lease that
        :func:`restore_all` took is released after the final save (whether
        it landed or not), within ``LEASE_RELEASE_TIMEOUT`` (1.0) more
        seconds; one that a caller passed in stays the caller's.

        Raises:
            TimeoutError: the final save did not finish within ``deadline``.
            StoreUnavailableError, StoreOperationError: it failed. Either way
                the auth state ends closed, and the loss is logged at ERROR.
        """
        try:
            await self._close(deadline)
        finally:
            await _release_restored_leases([self])

    async def _close(self, deadline: float) -> None:
        """:meth:`aclose` but for the release of a lease restore_all took."""
        _open_states.discard(self)
        try:
            await self._saver.stop_backups()
            await within(_first_error(self.keys._close(), self._saver.aclose()), deadline)
        except LeaseLostError:
            # A save that was already running when the lease was lost: its
            # creds were dropped and the loss reported (see _lease_lost).
            if not self.lost:
                raise
        except BaseException as exc:
            if self.pending or self.keys.pending:
                logger.error(
                    "closing %s with unsaved %s: %s",
                    self.session_id,
                    "creds" if self.pending else f"key writes ({self.keys.pending})",
                    describe_error(exc),
                    extra={"session_id": self.session_id, "op": "aclose"},
                )
            raise


async def _release_restored_leases(states: Iterable[AuthState]) -> None:
    """Release the leases that :func:`restore_all` took for ``states``: one
    statement per restore, each within ``AuthState.LEASE_RELEASE_TIMEOUT``.

    A release that fails is logged (the lease expires after its ttl), never raised.
    """
    leases: dict[LeaseRenewer, list[Lease]] = {}
    for state in states:
        renewer, state._renewer = state._renewer, None
        if renewer is not None and state._lease is not None:
            leases.setdefault(renewer, []).append(state._lease)

    async def release(renewer: LeaseRenewer, held: list[Lease]) -> None:
        try:
            await within(renewer.release(held), AuthState.LEASE_RELEASE_TIMEOUT)
        except (SessionStoreError, TimeoutError) as exc:
            logger.warning(
                "could not release %d leases of restored sessions (they expire in %gs): %s",
                len(held),
                max(lease.ttl for lease in held),
                describe_error(exc),
                extra={"op": "lease"},
            )

    await asyncio.gather(*(release(renewer, held) for renewer, held in leases.items()))


async def _first_error(*writes: Awaitable[None]) -> None:
    """Run ``writes`` concurrently, each to its end; raise the first error."""
    outcomes = await asyncio.gather(*writes, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


def _check_lease_of(lease: Lease | None, session_id: str) -> None:
    """Refuse a lease of another session (InvalidInputError)."""
    if lease is not None and lease.session_id != session_id:
        raise InvalidInputError(
            f"the lease is for session {lease.session_id!r}, not {session_id!r}"
        )
