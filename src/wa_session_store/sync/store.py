"""The blocking store: :class:`SyncStore` and :func:`open_sync_store`.

A :class:`SyncStore` opens, uses and closes its async store on the shared
loop thread (``loop.py``); its thin methods, the twins of
:class:`~wa_session_store.store.base.BaseStore` and of PostgreSQL's leases,
are generated. A facade still open when the interpreter exits is closed
then (the exit hook at the end of this module), so pending creds are saved.
"""

from __future__ import annotations

import atexit
import concurrent.futures.thread  # noqa: F401  # registers its exit hook before ours (below)
import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any

from typing_extensions import Self

from ..auth.restore import close_all
from ..auth.state import AuthState
from ..backends.lease import Lease, LeasedCredsPage, LeaseInfo, LossCallback
from ..backends.open import DEFAULT_URL, open_store
from ..backends.postgres_leases import PostgresLeases, lease_capability
from ..errors import InvalidTypeError, describe_error
from ..store.base import (
    BaseStore,
    CredsPage,
    ReencryptProgress,
    SessionExport,
    SessionInfo,
    StoreHealth,
)
from ..store.contract import AuthStateStore, Fence
from .loop import _acquire, _Facade, _refuse_in_running_loop, _release

__all__ = ["SyncStore", "open_sync_store"]

logger = logging.getLogger("wa_session_store")


class SyncStore(_Facade):
    """A blocking :class:`~wa_session_store.AuthStateStore`: every method without ``await``.

    Wrap an *unopened* store (it is opened, used and closed on the facade's
    loop thread) or build one from a URL with :func:`open_sync_store`. Use it
    as a context manager (``with SyncStore(store) as sync:``) or call
    :meth:`open` and :meth:`close`. Methods may be called from any number of
    threads at once; they run concurrently on the loop.

    Hooks given to the async store (``on_retry``, ``reencrypt(progress=...)``)
    run on the loop thread; a facade method called from one raises
    :class:`BlockingCallInLoopError` instead of deadlocking.

    Args:
        store: the async store to drive.

    Raises:
        InvalidTypeError: ``store`` is not an :class:`~wa_session_store.AuthStateStore`.
    """

    __slots__ = ("_lease_lock", "_leased", "_states", "_store")

    def __init__(self, store: AuthStateStore) -> None:
        if not isinstance(store, AuthStateStore):
            raise InvalidTypeError(
                "store must be an AuthStateStore (e.g. open_store(url)), "
                f"not {type(store).__name__}"
            )
        self._store = store
        self._process = None  # bound to a process while open
        self._leased = False
        self._lease_lock = threading.Lock()
        # The auth states made through this facade, closed before the store. An
        # auth state with an unsaved change stays alive through its timers.
        self._states: weakref.WeakSet[AuthState] = weakref.WeakSet()

    @property
    def store(self) -> AuthStateStore:
        """The async store this facade drives."""
        return self._store

    @property
    def is_open(self) -> bool:
        """Whether :meth:`open` was called and :meth:`close` not since."""
        return self._leased

    def __repr__(self) -> str:
        return f"<SyncStore {self._store!r}>"

    # -- life cycle -----------------------------------------------------------

    def open(self) -> None:
        """Start the loop thread if needed, and open the store on it.

        Opening an open facade does nothing. If the store's ``open()`` raises
        (the same error reaches the caller), the loop thread is not kept.

        Raises:
            InheritedFacadeError: the facade was open when this process was
                forked from the one that opened it.
        """
        self._refuse_if_inherited("open")
        _refuse_in_running_loop("SyncStore.open")
        with self._lease_lock:
            if self._leased:
                return
            # Bound before the store opens, so that a child forked meanwhile
            # refuses the half-open store instead of waiting for this lock.
            self._bind()
            _acquire()
            try:
                self._run("open", self._store.open)
            except BaseException:
                self._process = None
                _release()
                raise
            self._leased = True
            _open_facades.add(self)

    def close(self) -> None:
        """Close the auth states made from this facade, then the store; stop the loop thread.

        The auth states save what is pending first (within 8 s; a save that
        fails is logged at ERROR by the auth state). The loop thread stops
        once no open facade uses it. Closing a closed facade does nothing. If
        the store's ``close()`` raises, the error reaches the caller and the
        facade ends closed anyway.

        In a process forked while the facade was open, closing it does
        nothing: the store, its connections and its auth states are the
        parent's, which closes them (the child exits without waiting for them).
        """
        if self._inherited():
            return
        _refuse_in_running_loop("SyncStore.close")
        with self._lease_lock:
            if not self._leased:
                return
            try:
                states = [state for state in self._states if not state.closed]
                if states:
                    self._run("close", lambda: close_all(states))
                self._run("close", self._store.close)
            finally:
                self._leased = False
                self._process = None
                _open_facades.discard(self)
                _release()

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _base_store(self) -> BaseStore:
        """The store, for what only :class:`~wa_session_store.store.base.BaseStore` has."""
        if not isinstance(self._store, BaseStore):
            raise InvalidTypeError(
                f"{type(self._store).__name__} is not a BaseStore, which this method needs"
            )
        return self._store

    # -- generated from BaseStore by `python tools/sync_twins.py --write`: do not edit -------------
    def load_creds(self, session_id: str) -> dict[str, Any] | None:
        """Return the session's creds document, or ``None`` if it has none.

        Blocking twin of :meth:`~wa_session_store.store.base.BaseStore.load_creds`: the same
        arguments, result and errors.
        """
        return self._run("load_creds", lambda: self._store.load_creds(session_id))

    def load_creds_page(self, after: str | None = None, *, limit: int | None = None) -> CredsPage:
        """The creds of up to ``limit`` sessions whose id sorts after ``after``, in one
        statement.

        Blocking twin of :meth:`~wa_session_store.store.base.BaseStore.load_creds_page`: the
        same arguments, result and errors.
        """
        return self._run(
            "load_creds_page", lambda: self._base_store().load_creds_page(after, limit=limit)
        )

    def save_creds(
        self, session_id: str, creds: Mapping[str, Any], *, fence: Fence | None = None
    ) -> None:
        """Store ``creds`` as the session's creds document.

        Blocking twin of :meth:`~wa_session_store.store.base.BaseStore.save_creds`: the same
        arguments, result and errors.
        """
        return self._run(
            "save_creds", lambda: self._store.save_creds(session_id, creds, fence=fence)
        )

    def get_keys(self, session_id: str, category: str, ids: Iterable[str | int]) -> dict[str, Any]:
        """Return ``{key_id: value or None}`` for every id asked for, in one query.

        Blocking twin of :meth:`~wa_session_store.store.base.BaseStore.get_keys`: the same
        arguments, result and errors.
        """
        return self._run("get_keys", lambda: self._store.get_keys(session_id, category, ids))

    def load_categories(
        self,
        session_id: str,
        categories: Iterable[str],
        *,
        after: tuple[str, str] | None = None,
        limit: int = 1000,
    ) -> list[tuple[str, str, Any]]:
        """Return one page of the session's keys in ``categories``, in one query.

        Blocking twin of :meth:`~wa_session_store.store.base.BaseStore.load_categories`: the
        same arguments, result and errors.
        """
        return self._run(
            "load_categories",
            lambda: self._store.load_categories(session_id, categories, after=after, limit=limit),
        )

    def set_keys(
        self, session_id: str, data: Mapping[str, Mapping[Any, Any]], *, fence: Fence | None = None
    ) -> None:
        """Write a batch ``{category: {key_id: value}}``; a ``None`` value deletes.

        Blocking twin of :meth:`~wa_session_store.store.base.BaseStore.set_keys`: the same
        arguments, result and errors.
        """
        return self._run("set_keys", lambda: self._store.set_keys(session_id, data, fence=fence))

    def clear_keys(self, session_id: str, *, fence: Fence | None = None) -> int:
        """Delete every key of the session, keeping its creds; return how many were deleted.

        Blocking twin of :meth:`~wa_session_store.store.base.BaseStore.clear_keys`: the same
        arguments, result and errors.
        """
        return self._run("clear_keys", lambda: self._store.clear_keys(session_id, fence=fence))

    def list_sessions(self) -> list[SessionInfo]:
        """Return every stored session (with creds or keys), ordered by id.

        Blocking twin of :meth:`~wa_session_store.store.base.BaseStore.list_sessions`: the same
        arguments, result and errors.
        """
        return self._run("list_sessions", lambda: self._store.list_sessions())

    def delete_session(self, session_id: str) -> bool:
        """Delete the session's creds and every key, atomically.

        Blocking twin of :meth:`~wa_session_store.store.base.BaseStore.delete_session`: the same
        arguments, result and errors.
        """
        return self._run("delete_session", lambda: self._store.delete_session(session_id))

    def import_session(
        self,
        session_id: str,
        creds: Mapping[str, Any] | None,
        keys: Mapping[str, Mapping[Any, Any]],
        *,
        overwrite: bool = False,
    ) -> None:
        """Write a whole session — creds and every key — in one transaction.

        Blocking twin of :meth:`~wa_session_store.store.base.BaseStore.import_session`: the same
        arguments, result and errors.
        """
        return self._run(
            "import_session",
            lambda: self._store.import_session(session_id, creds, keys, overwrite=overwrite),
        )

    def export_session(self, session_id: str) -> SessionExport | None:
        """Read a whole session — creds and every key — in one snapshot.

        Blocking twin of :meth:`~wa_session_store.store.base.BaseStore.export_session`: the same
        arguments, result and errors.
        """
        return self._run("export_session", lambda: self._store.export_session(session_id))

    def health(self, *, timeout: float | None = None) -> StoreHealth:
        """Check the store in one attempt, without raising: for a ``/healthz``.

        Blocking twin of :meth:`~wa_session_store.store.base.BaseStore.health`: the same
        arguments, result and errors.
        """
        return self._run("health", lambda: self._base_store().health(timeout=timeout))

    def schema_version(self) -> int | None:
        """The schema version in the database (None for stores without a schema).

        Blocking twin of :meth:`~wa_session_store.store.base.BaseStore.schema_version`: the same
        arguments, result and errors.
        """
        return self._run("schema_version", lambda: self._base_store().schema_version())

    def reencrypt(
        self, *, batch_size: int = 500, progress: Callable[[ReencryptProgress], None] | None = None
    ) -> ReencryptProgress:
        """Rewrite every row not sealed with the cipher's active key.

        Blocking twin of :meth:`~wa_session_store.store.base.BaseStore.reencrypt`: the same
        arguments, result and errors.
        """
        return self._run(
            "reencrypt",
            lambda: self._base_store().reencrypt(batch_size=batch_size, progress=progress),
        )

    # -- end of generated code ---------------------------------------------------------------------

    # -- leases (PostgreSQL) ----------------------------------------------------

    def _postgres_store(self) -> PostgresLeases:
        """The store, for what only :class:`~wa_session_store.PostgresStore` has (leases)."""
        return lease_capability(self._store)

    def keep_alive(
        self, lease: Lease, *, every: float | None = None, on_lost: LossCallback | None = None
    ) -> None:
        """Renew ``lease`` in the background on the loop thread, for code without a loop.

        :meth:`Lease.keep_alive <wa_session_store.Lease.keep_alive>` started
        on the facade's loop (``every`` defaults to ``ttl / 3``): renewals run
        there until :meth:`release_lease`, and ``on_lost`` (like any loss
        callback of the lease) is called on the loop thread, so it must not
        block or call the facade.

        Raises:
            InvalidInputError: ``every`` is not in (0, ttl).
        """

        async def start() -> None:
            lease.keep_alive(every=every, on_lost=on_lost)

        self._run("keep_alive", start)

    def release_lease(self, lease: Lease) -> None:
        """Give the session up at once: :meth:`Lease.release
        <wa_session_store.Lease.release>` (its keep-alive stops first), on the loop thread.

        Raises:
            StoreUnavailableError: the database could not be reached.
        """
        self._run("release_lease", lease.release)

    # -- generated from PostgresLeases by `python tools/sync_twins.py --write`: do not edit --------
    def acquire_lease(
        self, session_id: str, *, owner: str, ttl: float = 30.0, wait: float | None = 0.0
    ) -> Lease:
        """Grant the session to ``owner`` until ``ttl`` seconds pass without renewal.

        Blocking twin of :meth:`~wa_session_store.PostgresStore.acquire_lease`: the same
        arguments, result and errors.
        """
        return self._run(
            "acquire_lease",
            lambda: self._postgres_store().acquire_lease(
                session_id, owner=owner, ttl=ttl, wait=wait
            ),
        )

    def claim_sessions(self, owner: str, *, limit: int, ttl: float = 30.0) -> list[Lease]:
        """Lease up to ``limit`` stored sessions whose lease is free or expired.

        Blocking twin of :meth:`~wa_session_store.PostgresStore.claim_sessions`: the same
        arguments, result and errors.
        """
        return self._run(
            "claim_sessions",
            lambda: self._postgres_store().claim_sessions(owner, limit=limit, ttl=ttl),
        )

    def lease_creds_page(
        self, owner: str, *, after: str | None = None, limit: int | None = None, ttl: float = 30.0
    ) -> LeasedCredsPage:
        """Lease up to ``limit`` sessions whose id sorts after ``after``, then read their creds.

        Blocking twin of :meth:`~wa_session_store.PostgresStore.lease_creds_page`: the same
        arguments, result and errors.
        """
        return self._run(
            "lease_creds_page",
            lambda: self._postgres_store().lease_creds_page(
                owner, after=after, limit=limit, ttl=ttl
            ),
        )

    def lease_holder(self, session_id: str) -> tuple[str, int, datetime] | None:
        """The newest lease of the session: (owner, token, expires_at), or None.

        Blocking twin of :meth:`~wa_session_store.PostgresStore.lease_holder`: the same
        arguments, result and errors.
        """
        return self._run("lease_holder", lambda: self._postgres_store().lease_holder(session_id))

    def list_leases(self) -> list[LeaseInfo]:
        """The newest lease of every session that ever had one, ordered by session id.

        Blocking twin of :meth:`~wa_session_store.PostgresStore.list_leases`: the same
        arguments, result and errors.
        """
        return self._run("list_leases", lambda: self._postgres_store().list_leases())

    def renew_leases(self, leases: Iterable[Lease]) -> list[Lease]:
        """Renew many leases in one statement; return those found lost.

        Blocking twin of :meth:`~wa_session_store.PostgresStore.renew_leases`: the same
        arguments, result and errors.
        """
        return self._run("renew_leases", lambda: self._postgres_store().renew_leases(leases))

    def release_leases(self, leases: Iterable[Lease]) -> int:
        """Release many leases in one statement (see :meth:`Lease.release`).

        Blocking twin of :meth:`~wa_session_store.PostgresStore.release_leases`: the same
        arguments, result and errors.
        """
        return self._run("release_leases", lambda: self._postgres_store().release_leases(leases))

    # -- end of generated code ---------------------------------------------------------------------


# Facades still open (kept alive until closed, as they hold a thread and
# connections) are closed at interpreter exit, so that a script that forgot
# close() does not lose pending creds.
_open_facades: set[SyncStore] = set()


def _close_forgotten_facades() -> None:
    for facade in list(_open_facades):
        try:
            facade.close()
        except Exception as exc:
            logger.error("closing %r at exit failed: %s", facade, describe_error(exc))


# Not atexit: by then concurrent.futures has refused new work (SQLite's I/O
# thread, the loop's executor), so nothing could be saved. Threading's exit
# hooks run earlier, last registered first, as concurrent.futures uses them.
getattr(threading, "_register_atexit", atexit.register)(_close_forgotten_facades)


def open_sync_store(url: str = DEFAULT_URL, **options: Any) -> SyncStore:
    """A :class:`SyncStore` (not yet opened) over :func:`~wa_session_store.open_store` ``(url)``.

    ``url`` and ``options`` are those of :func:`~wa_session_store.open_store`.
    Use it as ``with open_sync_store(url) as store:``.

    Raises:
        InvalidTypeError, InvalidInputError: as :func:`~wa_session_store.open_store`.
    """
    return SyncStore(open_store(url, **options))
