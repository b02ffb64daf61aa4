"""One session's creds on their way to the store: the only place that knows
what is unsaved and decides when to save it.

A :class:`CredsSaver` holds the latest creds document (the one snapshot cell:
the current document, and a shallow copy of the last one reported, which the
``urgent`` predicate compares against) and one pending state: a generation
counter bumped by every change, and the generation the last successful save
captured. A change is pending while they differ.

When to save is decided here, and only here:

- a change is handed to the :class:`~wa_session_store.Throttler` (at most one
  save per ``throttle`` seconds, the last change always saved);
- an urgent change (the ``urgent`` predicate, by default the pre-key
  counters) is saved at once, and a barrier waits for it;
- the :class:`~wa_session_store.BackupScheduler` saves what is still pending;
- a save that failed is saved again while it is pending, and only then: the
  throttler keeps no record of what is unsaved and asks this one
  (:meth:`_owed`) whenever it would run on its own (a due timer, the end of
  a run, a flush). So the next change (subject to the interval), the
  throttler's automatic retry (``max(throttle, 1 s)`` after the failed save
  started), a backup, :meth:`flush` and :meth:`aclose` save the then latest
  document, and none does once nothing is owed (saved, or dropped for a
  replaced owner).

Every save is one :meth:`AuthStateStore.save_creds` call, whose retries are
the store's :class:`~wa_session_store.RetryPolicy`: the only retry of one
save. Lease fencing goes through :func:`~wa_session_store.backends.lease.fenced`.
One exception: a save refused with :class:`~wa_session_store.CredsConflictError`
(another process saved with a clock running ahead) is made once more at once,
as it would have landed without the skew; the store versions it above the
stored creds. If that fails too, the error surfaces and the change stays
pending, like any failed save.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

from ..backends.lease import Lease, fenced
from ..errors import CredsConflictError, InvalidInputError, InvalidTypeError, StoreClosedError
from ..metrics import metrics_of
from ..store.base import AuthStateStore
from .backup import BackupScheduler
from .throttle import Throttler

__all__ = ["CredsSaver", "UrgentPredicate", "as_creds", "check_urgent", "prekey_counters_changed"]

logger = logging.getLogger("wa_session_store")

UrgentPredicate = Callable[[Mapping[str, Any] | None, Mapping[str, Any]], bool]
"""``urgent(previous, current) -> bool``: True saves at once, bypassing the throttle."""

_PREKEY_COUNTERS = (
    "nextPreKeyId",
    "firstUnuploadedPreKeyId",
    "next_pre_key_id",
    "first_unuploaded_pre_key_id",
)


def prekey_counters_changed(previous: Mapping[str, Any] | None, current: Mapping[str, Any]) -> bool:
    """The default ``urgent`` predicate: the pre-key counters moved (or creds are new).

    The counters (``nextPreKeyId``, ``firstUnuploadedPreKeyId`` or their
    snake_case spellings) must reach the database before the pre-keys they
    count are handed out, or a restart reuses pre-key ids ("Invalid PreKey ID").
    """
    if previous is None:
        return True
    return any(previous.get(name) != current.get(name) for name in _PREKEY_COUNTERS)


def check_urgent(urgent: object) -> None:
    """Refuse an ``urgent`` that is neither callable nor None (InvalidTypeError)."""
    if urgent is not None and not callable(urgent):
        raise InvalidTypeError(f"urgent must be a callable or None, not {type(urgent).__name__}")


def as_creds(creds: object) -> dict[str, Any]:
    """``creds`` as the current document: a dict as is (later in-place changes
    are seen), another mapping copied.

    Raises:
        InvalidTypeError: ``creds`` is not a mapping.
    """
    if not isinstance(creds, Mapping):
        raise InvalidTypeError(f"creds must be a mapping (dict), not {type(creds).__name__}")
    return creds if isinstance(creds, dict) else dict(creds)


class CredsSaver:
    """The creds-save pipeline of one auth state (built by :class:`AuthState`).

    Args:
        store: the store saves go to.
        session_id: the session.
        creds: the loaded document, or None for a new session.
        throttle, backup_interval, initial_delay, backup_jitter, urgent,
            lease: as for :func:`~wa_session_store.use_auth_state`.

    Raises:
        InvalidTypeError, InvalidInputError: a bad timing option (``urgent``
            is checked by the caller, :func:`check_urgent`).
    """

    __slots__ = (
        "_generation",
        "_last_saved",
        "_lease",
        "_previous",
        "_saved_generation",
        "_scheduler",
        "_store",
        "_throttler",
        "_urgent",
        "_urgent_generation",
        "creds",
        "owner",
        "session_id",
    )

    def __init__(
        self,
        store: AuthStateStore,
        session_id: str,
        creds: dict[str, Any] | None,
        *,
        throttle: float,
        backup_interval: float | None,
        initial_delay: float,
        backup_jitter: float,
        urgent: UrgentPredicate | None,
        lease: Lease | None,
    ) -> None:
        self._store = store
        self.session_id = session_id
        self.creds = creds
        # The object this saver works for (its AuthState), held strongly: a
        # save owed (a timer on the loop) keeps the auth state alive, so the
        # weak registries that close forgotten auth states at exit
        # (close_all, the sync facade's) still find it and save its creds.
        self.owner: object = None
        self._lease = lease
        self._urgent = urgent
        self._previous: dict[str, Any] | None = dict(creds) if creds is not None else None
        # A change is pending while the generation handed out by a change is
        # ahead of the one the last successful save captured.
        self._generation = 0
        self._saved_generation = 0
        # The generation of the last urgent change: what a barrier waits for.
        self._urgent_generation = 0
        self._last_saved: float | None = None
        self._throttler = Throttler(self._save, throttle, name=session_id, owed=self._owed)
        self._scheduler = (
            BackupScheduler(
                self._backup, backup_interval, initial_delay, backup_jitter, name=session_id
            )
            if backup_interval
            else None
        )

    @property
    def pending(self) -> bool:
        """Whether a change has not been saved yet."""
        return self._generation != self._saved_generation

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._throttler.closed

    @property
    def throttler(self) -> Throttler:
        """The throttler of the saves."""
        return self._throttler

    @property
    def last_saved(self) -> float | None:
        """The ``time.time()`` of the last successful save, or None."""
        return self._last_saved

    def start(self) -> None:
        """Start the backups (needs a running loop)."""
        if self._scheduler is not None:
            self._scheduler.start()

    def changed(self, creds: Mapping[str, Any] | None = None) -> bool:
        """Record a change (``creds`` becomes current, if given) and schedule its save.

        Returns:
            False when there is no document to save (nothing was recorded).

        Raises:
            InvalidTypeError: ``creds`` is not a mapping.
            StoreClosedError: after :meth:`aclose`.
        """
        if creds is not None:
            self.creds = as_creds(creds)
        if self.creds is None:
            return False
        self._generation += 1
        metrics = metrics_of(self._store)
        if metrics is not None:
            metrics.creds_update(self._store_kind())
        urgent = self._urgent is not None and self._urgent(self._previous, self.creds)
        self._previous = dict(self.creds)
        if urgent:
            self._urgent_generation = self._generation
        self._throttler.trigger(urgent=urgent)
        return True

    def differs(self, document: Mapping[str, Any]) -> bool:
        """Whether ``document`` (a fresh one, as an integration converts it)
        differs from the last one reported: an unchanged one needs no save."""
        return document != self._previous

    async def save_now(self, creds: Mapping[str, Any] | None = None) -> None:
        """Save now, bypassing the throttle; ``creds``, if given, becomes current first.

        Raises:
            StoreClosedError: after :meth:`aclose`.
            InvalidInputError: no creds, or creds the store refuses (the
                previous document is put back then, unless a change came meanwhile).
            StoreUnavailableError, StoreOperationError: the save failed; it stays pending.
        """
        if self._throttler.closed:
            raise StoreClosedError(f"auth state of {self.session_id!r} is closed")
        before = (self.creds, self._previous, self._generation)
        if creds is not None:
            self.creds = as_creds(creds)
            self._previous = dict(self.creds)
        if self.creds is None:
            raise InvalidInputError(f"no creds to save for {self.session_id!r}")
        self._generation += 1
        generation = self._generation
        self._throttler.trigger(urgent=True)
        try:
            await self._throttler.flush()
        except InvalidInputError:
            # Refused before anything was written: put the previous document
            # back, unless another update arrived meanwhile.
            if self._generation == generation:
                self.creds, self._previous, self._generation = before
            raise

    def flush(self) -> Awaitable[None]:
        """Save what is pending now (or join the save in flight)."""
        return self._throttler.flush()

    def urgent_owed(self) -> Awaitable[None] | None:
        """The save a barrier waits for (an urgent change not yet saved), or None."""
        if self._saved_generation < self._urgent_generation and not self._lost():
            return self._throttler.flush()
        return None

    def drop(self) -> None:
        """Forget what is pending: it belongs to a replaced owner (a lost lease)."""
        self._saved_generation = self._generation

    async def stop_backups(self) -> None:
        """Stop the backups, waiting for one in progress."""
        if self._scheduler is not None:
            await self._scheduler.stop()

    async def aclose(self) -> None:
        """Save what is pending, then refuse further changes (see :meth:`Throttler.aclose`)."""
        await self._throttler.aclose()

    def _lost(self) -> bool:
        return self._lease is not None and self._lease.lost

    def _owed(self) -> bool:
        """Whether a save is owed: the throttler's ``owed``."""
        return self.creds is not None and self.pending and not self._lost()

    async def _save(self) -> None:
        creds, generation = self.creds, self._generation
        if creds is None or not self._owed():
            return
        save = partial(fenced, self._lease, partial(self._store.save_creds, self.session_id, creds))
        try:
            await save()
        except CredsConflictError as exc:
            # Another process saved with a clock running ahead. This document
            # is the newest this one has, and the store now versions a save
            # above the stored creds: saved at once, an urgent change (and
            # the barrier waiting for it) is not held back a throttle period.
            logger.warning(
                "%s. Saving this process's creds again, above them",
                exc,
                extra={"session_id": self.session_id, "op": "save_creds"},
            )
            await save()
        self._saved_generation = max(self._saved_generation, generation)
        self._last_saved = time.time()
        metrics = metrics_of(self._store)
        if metrics is not None:
            metrics.creds_save(self._store_kind())

    async def _backup(self) -> None:
        metrics = metrics_of(self._store)
        if metrics is not None:
            metrics.backup(self._store_kind())
        # Saves only what is owed (the throttler asks _owed), never overlapping a save.
        # A failed save: the throttler logged it (one ERROR line a failed
        # save) and the change stays pending for its retry; raised on, the
        # scheduler would log the same failure a second time.
        with contextlib.suppress(Exception):
            await self._throttler.flush()

    def _store_kind(self) -> str:
        return str(getattr(self._store, "kind", "store"))
