"""Blocking twins of the store and the auth state, for code without an event loop.

Threaded bots, scripts, notebooks and synchronous WhatsApp clients (whose key
stores are plain methods) use :class:`SyncStore` (or :func:`open_sync_store`)
and :func:`use_sync_auth_state`: the API of the async store and auth state,
without ``await``.

Nothing is implemented twice. The async core is the only implementation: a
blocking method hands the coroutine it mirrors to an event loop on a daemon
thread and waits for its result, so the same exceptions, of the same types,
reach the caller. The thin methods are not written by hand either: the
regions marked "generated" are produced from the coroutines' signatures (as
psycopg generates its sync pool) by ``python tools/sync_twins.py --write``,
whose ``--check`` CI runs (and a test) to fail when they are stale.

One loop thread (``_sync_loop.py``) serves every open facade of the
process: the first :meth:`SyncStore.open` starts it, the last
:meth:`SyncStore.close` stops it (so a closed program leaves no thread
behind). Stores wrapped here are opened, used and closed on that loop, so
several facades over one database share its connections' loop safely. A
facade still open when the interpreter exits is closed then, so pending
creds are saved.

This module is longer than the others because it is the blocking twin of the
whole async API (store, leases, auth state, keys, restore, worker); most of it
is generated, and each facade keeps its generated twins next to its own life
cycle, so a reader sees one facade whole.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures.thread  # noqa: F401  # registers its exit hook before ours (below)
import contextlib
import copy
import logging
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

from typing_extensions import Self, Unpack

from ..auth.keys import DEFAULT_KEY_CACHE_BYTES, DEFAULT_PRELOAD, KeyTransaction, KeyWrites
from ..auth.restore import RestoreResult, close_all, restore_all
from ..auth.state import (
    AuthKeys,
    AuthState,
    AuthStateOptions,
    UrgentPredicate,
    prekey_counters_changed,
    use_auth_state,
)
from ..backends.lease import Lease, LeasedCredsPage, LeaseInfo, LossCallback
from ..backends.lease_workers import SessionHandler, SessionWorker
from ..backends.open import DEFAULT_URL, open_store
from ..backends.postgres_leases import PostgresLeases, lease_capability
from ..errors import (
    InvalidInputError,
    InvalidTypeError,
    LeaseUnavailableError,
    StoreClosedError,
    describe_error,
)
from ..store.base import (
    BaseStore,
    CredsPage,
    ReencryptProgress,
    SessionExport,
    SessionInfo,
    StoreHealth,
)
from ..store.contract import AuthStateStore, Fence
from .loop import (
    THREAD_NAME,
    BlockingCallInLoopError,
    InheritedFacadeError,
    _acquire,
    _Facade,
    _refuse_in_running_loop,
    _release,
)

T = TypeVar("T")

__all__ = [
    "THREAD_NAME",
    "BlockingCallInLoopError",
    "InheritedFacadeError",
    "SyncAuthKeys",
    "SyncAuthState",
    "SyncRestoreResult",
    "SyncSessionHandler",
    "SyncSessionWorker",
    "SyncStore",
    "open_sync_store",
    "restore_all_sync",
    "use_sync_auth_state",
]

logger = logging.getLogger("wa_session_store")

# -- the store ------------------------------------------------------------------


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


# -- the auth state -------------------------------------------------------------


class SyncAuthKeys(_Facade):
    """The blocking Signal key store: ``get``, ``set``, ``clear`` without ``await``.

    For synchronous clients whose key store is plain methods. It behaves as
    the :class:`~wa_session_store.AuthKeys` it drives, in its mode: the same
    cache, write-through or barrier, and transactions (``with
    keys.transaction():``, which belong to the thread that opened them).
    """

    __slots__ = ("_keys", "_local")

    def __init__(self, keys: AuthKeys) -> None:
        self._bind()
        self._keys = keys
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"<SyncAuthKeys of {self._keys!r}>"

    def _transaction(self) -> KeyTransaction | None:
        txn: KeyTransaction | None = getattr(self._local, "transaction", None)
        return txn

    def get(self, category: str, ids: Iterable[str | int]) -> dict[str, Any]:
        """``{id: value or None}`` for every id asked for.

        Blocking twin of :meth:`~wa_session_store.AuthKeys.get`, inside this
        thread's transaction if one is open.
        """
        txn = self._transaction()
        return self._run("get", lambda: self._keys._get(category, ids, txn))

    def set(self, data: Mapping[str, Mapping[Any, Any]]) -> None:
        """Write ``{category: {id: value or None}}`` atomically; ``None`` deletes.

        Blocking twin of :meth:`~wa_session_store.AuthKeys.set`, inside this
        thread's transaction if one is open.
        """
        txn = self._transaction()
        return self._run("set", lambda: self._keys._set(data, txn))

    def clear(self) -> None:
        """Delete every key of the session (its creds stay), pending writes included.

        Blocking twin of :meth:`~wa_session_store.AuthKeys.clear`, emptying
        this thread's open transactions too.
        """
        txn = self._transaction()
        return self._run("clear", lambda: self._keys._clear(txn))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """``with keys.transaction():`` — the blocking twin of
        :meth:`~wa_session_store.AuthKeys.transaction`.

        The ``get`` and ``set`` calls this thread makes inside the block join
        the transaction; its writes are stored in one batch when the
        outermost block ends, and an exception discards the writes of its block.
        """
        parent = self._transaction()
        txn = KeyTransaction(self._keys, parent)
        self._local.transaction = txn
        try:
            yield
        except BaseException:
            txn.discard()
            raise
        finally:
            self._local.transaction = parent
        self._run("transaction", txn.commit)

    # -- generated from AuthKeys by `python tools/sync_twins.py --write`: do not edit --------------
    def flush(self) -> None:
        """Store every write made before this call; wait for it.

        Blocking twin of :meth:`~wa_session_store.AuthKeys.flush`: the same arguments, result
        and errors.
        """
        return self._run("flush", lambda: self._keys.flush())

    def preload(self, categories: Iterable[str] = DEFAULT_PRELOAD) -> int:
        """Load whole categories into the cache, a page of rows per query.

        Blocking twin of :meth:`~wa_session_store.AuthKeys.preload`: the same arguments, result
        and errors.
        """
        return self._run("preload", lambda: self._keys.preload(categories))

    # -- end of generated code ---------------------------------------------------------------------


class SyncAuthState(_Facade):
    """One session's auth state, for synchronous code; build it with :func:`use_sync_auth_state`.

    The async :class:`~wa_session_store.AuthState` (attribute :attr:`state`)
    does the work on the loop thread: throttled saves, backups, urgent saves
    of the pre-key counters.

    :attr:`creds` is this facade's own document, for the caller's threads:
    :meth:`creds_updated` and :meth:`save_creds` hand the loop a deep copy of
    it, so a client may keep changing it in place while a save encodes the
    copy. (The async auth state keeps the caller's dict itself.)

    Attributes:
        session_id: the session.
        creds: the current creds document, or ``None`` until the client pairs.
        keys: the write-through :class:`SyncAuthKeys`.
        state: the async auth state behind this facade.
    """

    __slots__ = ("_hop_lock", "_loop", "_store", "creds", "keys", "session_id", "state")

    def __init__(self, store: SyncStore, state: AuthState, loop: asyncio.AbstractEventLoop) -> None:
        self._bind()
        self._store = store
        self._loop = loop
        self._hop_lock = threading.Lock()
        self.state = state
        self.session_id = state.session_id
        self.creds: dict[str, Any] | None = copy.deepcopy(state.creds)
        self.keys = SyncAuthKeys(state.keys)

    def __repr__(self) -> str:
        return f"<SyncAuthState of {self.state!r}>"

    @property
    def pending(self) -> bool:
        """Whether a creds change has not been saved yet."""
        return self.state.pending

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (or the store closed)."""
        return self.state.closed

    def creds_updated(self, creds: Mapping[str, Any] | None = None) -> None:
        """The hook for the client's ``creds.update`` event, callable from any thread.

        Never blocks and never raises: the update hops onto the loop thread
        (``call_soon_threadsafe``), where
        :meth:`AuthState.creds_updated <wa_session_store.AuthState.creds_updated>`
        throttles the save. ``creds``, when given, becomes :attr:`creds`;
        without it, :attr:`creds` is taken as changed in place. Either way the
        loop gets a deep copy taken now. A refused update (bad creds, a closed
        auth state or store) is logged at ERROR, as by the async hook.
        """
        try:
            # Refused before the lock, which a thread of the parent may have held.
            self._refuse_if_inherited("creds_updated")
            # The lock keeps the hops in the order the copies were taken when
            # several threads report updates at once.
            with self._hop_lock:
                document = self._take(creds)
                if not self._store.is_open:
                    raise StoreClosedError("the store is closed")
                self._loop.call_soon_threadsafe(self.state.creds_updated, document)
        except Exception as exc:
            logger.error(
                "creds_updated() for %s failed; the update is not saved: %s",
                self.session_id,
                describe_error(exc),
                extra={"session_id": self.session_id, "op": "creds_updated"},
            )

    def save_creds(self, creds: Mapping[str, Any] | None = None) -> None:
        """Save now, bypassing the throttle (right after pairing or connecting).

        The blocking twin of :meth:`AuthState.save_creds
        <wa_session_store.AuthState.save_creds>`, with its errors. ``creds``,
        when given, becomes :attr:`creds` first (and is put back if it is
        refused as invalid); the loop saves a deep copy taken now.
        """
        before = self.creds
        document = self._take(creds)
        try:
            self._run("save_creds", lambda: self.state.save_creds(document))
        except InvalidInputError:
            if creds is not None and self.creds is not before:
                self.creds = before
            raise

    def _take(self, creds: Mapping[str, Any] | None) -> Any:
        """Make ``creds`` (if a mapping) the current document; return what the loop gets."""
        if creds is None:
            return copy.deepcopy(self.creds)
        if not isinstance(creds, Mapping):
            return creds  # the async auth state refuses it, saying why
        self.creds = creds if isinstance(creds, dict) else dict(creds)
        return copy.deepcopy(self.creds)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- generated from AuthState by `python tools/sync_twins.py --write`: do not edit -------------
    def flush(self) -> None:
        """Store the pending key writes and save the pending creds change now; wait for both.

        Blocking twin of :meth:`~wa_session_store.AuthState.flush`: the same arguments, result
        and errors.
        """
        return self._run("flush", lambda: self.state.flush())

    def barrier(self) -> None:
        """Wait until what an outgoing frame may depend on is stored.

        Blocking twin of :meth:`~wa_session_store.AuthState.barrier`: the same arguments, result
        and errors.
        """
        return self._run("barrier", lambda: self.state.barrier())

    def close(self, deadline: float = 10.0) -> None:
        """Stop the backups, save what is pending, refuse further saves.

        Blocking twin of :meth:`~wa_session_store.AuthState.aclose`: the same arguments, result
        and errors.
        """
        return self._run("close", lambda: self.state.aclose(deadline))

    # -- end of generated code ---------------------------------------------------------------------


def _on_loop(
    store: SyncStore, name: str, work: Callable[[AuthStateStore], Coroutine[Any, Any, T]]
) -> tuple[T, asyncio.AbstractEventLoop]:
    """Run ``work(store.store)`` on the loop thread: its result, and that loop."""
    if not isinstance(store, SyncStore):
        raise InvalidTypeError(
            f"store must be a SyncStore (e.g. open_sync_store(url)), not {type(store).__name__}"
        )

    async def start() -> tuple[T, asyncio.AbstractEventLoop]:
        return await work(store.store), asyncio.get_running_loop()

    return store._run(name, start)


def _wrapped(store: SyncStore, state: AuthState, loop: asyncio.AbstractEventLoop) -> SyncAuthState:
    """``state`` as a :class:`SyncAuthState`, closed with ``store`` if not before."""
    store._states.add(state)
    return SyncAuthState(store, state, loop)


def _sync_auth_state(
    store: SyncStore, load: Callable[[AuthStateStore], Coroutine[Any, Any, AuthState]]
) -> SyncAuthState:
    """Run ``load(store.store)`` on the loop thread; wrap the auth state it returns."""
    return _wrapped(store, *_on_loop(store, "use_sync_auth_state", load))


# -- generated from use_auth_state by `python tools/sync_twins.py --write`: do not edit ------------
def use_sync_auth_state(
    store: SyncStore,
    session_id: str,
    *,
    throttle: float = 30.0,
    backup_interval: float | None = 300.0,
    initial_delay: float = 10.0,
    backup_jitter: float = 0.0,
    urgent: UrgentPredicate | None = prekey_counters_changed,
    lease: Lease | None = None,
    on_lost: Callable[[AuthState], None] | None = None,
    key_writes: KeyWrites = "write-through",
    preload: bool | Iterable[str] = False,
    key_cache_bytes: int = DEFAULT_KEY_CACHE_BYTES,
) -> SyncAuthState:
    """Load a session's auth state from ``store`` and keep it saved.

    Blocking twin of :func:`~wa_session_store.use_auth_state` (the same arguments and errors,
    ``store`` a SyncStore). The auth states run on the store's loop thread and are closed,
    saving what is pending, by their close() or the store's.
    """
    return _sync_auth_state(
        store,
        lambda async_store: use_auth_state(
            async_store,
            session_id,
            throttle=throttle,
            backup_interval=backup_interval,
            initial_delay=initial_delay,
            backup_jitter=backup_jitter,
            urgent=urgent,
            lease=lease,
            on_lost=on_lost,
            key_writes=key_writes,
            preload=preload,
            key_cache_bytes=key_cache_bytes,
        ),
    )


# -- end of generated code -------------------------------------------------------------------------


@dataclass
class SyncRestoreResult:
    """What :func:`restore_all_sync` brought back.

    Attributes:
        states: the restored sessions' :class:`SyncAuthState` facades by session id.
        failed: the sessions that could not be loaded, with their error.
        held: with ``owner``, the sessions another live owner holds (not restored).

    With ``owner``, the leases are renewed on the loop thread, and released
    when the auth states close (:meth:`SyncAuthState.close`, or the store's
    :meth:`~SyncStore.close`, which releases them all in one statement).
    """

    states: dict[str, SyncAuthState] = field(default_factory=dict)
    failed: dict[str, Exception] = field(default_factory=dict)
    held: dict[str, LeaseUnavailableError] = field(default_factory=dict)


def _sync_restore_all(
    store: SyncStore, restore: Callable[[AuthStateStore], Coroutine[Any, Any, RestoreResult]]
) -> SyncRestoreResult:
    """Run ``restore(store.store)`` on the loop thread; wrap the auth states it returns."""
    result, loop = _on_loop(store, "restore_all_sync", restore)
    states = {sid: _wrapped(store, state, loop) for sid, state in result.states.items()}
    return SyncRestoreResult(states, dict(result.failed), dict(result.held))


# -- generated from restore_all by `python tools/sync_twins.py --write`: do not edit ---------------
def restore_all_sync(
    store: SyncStore,
    *,
    concurrency: int = 16,
    owner: str | None = None,
    ttl: float = 30.0,
    **options: Unpack[AuthStateOptions],
) -> SyncRestoreResult:
    """Bring back every stored session at start-up.

    Blocking twin of :func:`~wa_session_store.restore_all` (the same arguments and errors,
    ``store`` a SyncStore). The auth states run on the store's loop thread and are closed,
    saving what is pending, by their close() or the store's.
    """
    return _sync_restore_all(
        store,
        lambda async_store: restore_all(
            async_store, concurrency=concurrency, owner=owner, ttl=ttl, **options
        ),
    )


# -- end of generated code -------------------------------------------------------------------------


# -- the session worker ---------------------------------------------------------

#: A blocking session handler: ``handler(lease, stopping)`` runs one session
#: in a thread of its own until it returns; ``stopping`` is set when the lease
#: is lost or the worker stops, and the handler should then return soon.
SyncSessionHandler = Callable[[Lease, threading.Event], object]


def _in_own_thread(handler: SyncSessionHandler) -> SessionHandler:
    """The async handler a :class:`~wa_session_store.SessionWorker` runs, for ``handler``.

    Each session gets a daemon thread (the loop's default executor has a few
    threads only, and a worker runs up to ``capacity`` sessions). Cancelling
    the async handler sets ``stopping`` and waits for the thread to return,
    until a second cancellation (the worker's ``STOP_TIMEOUT``) abandons it.
    """

    async def run(lease: Lease) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        stopping = threading.Event()

        def settle(error: BaseException | None) -> None:
            if done.done():
                return
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

        def target() -> None:
            error: BaseException | None = None
            try:
                handler(lease, stopping)
            except BaseException as exc:  # reported by the worker, on the loop
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(settle, error)

        name = f"{THREAD_NAME}-worker:{lease.session_id}"
        threading.Thread(target=target, name=name, daemon=True).start()
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            stopping.set()
            await asyncio.shield(done)  # cancelled again: the thread is abandoned
            raise

    return run


class SyncSessionWorker(_Facade):
    """The blocking :class:`~wa_session_store.SessionWorker`: claims sessions, runs a handler each.

    The async worker does the work on the facade's loop thread (claims,
    renewals in one statement, release in one statement at stop); each
    session's blocking ``handler(lease, stopping)`` runs in a daemon thread of
    its own, and typically calls ``use_sync_auth_state(store,
    lease.session_id, lease=lease)`` and serves the session until
    ``stopping`` is set (the lease was lost, or :meth:`stop` was called).
    An exception from the handler is logged, and its lease released.

    :meth:`run` blocks until :meth:`stop` is called from another thread.
    Stop the worker before closing the store.

    Args:
        store: an open :class:`SyncStore` over a :class:`~wa_session_store.PostgresStore`.
        owner, capacity, ttl, claim_every, claim_batch: as for
            :class:`~wa_session_store.SessionWorker` (defaults 100, 30.0,
            ``ttl / 3`` and 10).
        handler: the blocking :data:`SyncSessionHandler`.

    Raises:
        InvalidTypeError: ``store`` is not a SyncStore over a PostgresStore.
        InvalidInputError: as :class:`~wa_session_store.SessionWorker`.
    """

    __slots__ = ("_store", "worker")

    def __init__(
        self,
        store: SyncStore,
        owner: str,
        handler: SyncSessionHandler,
        *,
        capacity: int = 100,
        ttl: float = 30.0,
        claim_every: float | None = None,
        claim_batch: int = 10,
    ) -> None:
        if not isinstance(store, SyncStore):
            raise InvalidTypeError(
                f"store must be a SyncStore (e.g. open_sync_store(url)), not {type(store).__name__}"
            )
        postgres = store._postgres_store()
        self._bind()
        self._store = store

        async def make() -> SessionWorker:  # on the loop that will run it
            return SessionWorker(
                postgres,
                owner,
                _in_own_thread(handler),
                capacity=capacity,
                ttl=ttl,
                claim_every=claim_every,
                claim_batch=claim_batch,
            )

        #: The async worker this facade drives.
        self.worker: SessionWorker = store._run("SyncSessionWorker", make)

    def __repr__(self) -> str:
        return f"<SyncSessionWorker {self.worker.owner!r} of {self._store!r}>"

    @property
    def sessions(self) -> list[str]:
        """The sessions this worker runs now."""
        return self.worker.sessions

    def run(self) -> None:
        """Claim and run sessions until :meth:`stop`: the blocking
        :meth:`SessionWorker.run <wa_session_store.SessionWorker.run>`."""
        self._run("run", self.worker.run)

    def stop(self) -> None:
        """Stop claiming, stop every handler, release every lease in one statement.

        The blocking :meth:`SessionWorker.stop <wa_session_store.SessionWorker.stop>`:
        ``stopping`` is set for every handler, whose threads get
        ``SessionWorker.STOP_TIMEOUT`` (5.0) seconds to return (a thread still
        running then is abandoned; it is a daemon). Call it from another
        thread than the one in :meth:`run`, or from a signal handler there.
        """
        self._run("stop", self.worker.stop)
