"""The blocking auth state: :class:`SyncAuthState`, :func:`use_sync_auth_state`
and :func:`restore_all_sync`.

The async :class:`~wa_session_store.AuthState` does the work on the loop
thread; the facade keeps its own creds document for the caller's threads and
hops updates onto the loop. The two functions are generated twins of
:func:`~wa_session_store.use_auth_state` and
:func:`~wa_session_store.restore_all`: they run the coroutine on the store's
loop and wrap the auth states it returns, which the store closes with itself.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

from typing_extensions import Self, Unpack

from ..auth.keys import DEFAULT_KEY_CACHE_BYTES, KeyWrites
from ..auth.restore import RestoreResult, restore_all
from ..auth.state import (
    AuthState,
    AuthStateOptions,
    UrgentPredicate,
    prekey_counters_changed,
    use_auth_state,
)
from ..backends.lease import Lease
from ..errors import (
    InvalidInputError,
    InvalidTypeError,
    LeaseUnavailableError,
    StoreClosedError,
    describe_error,
)
from ..store.contract import AuthStateStore
from .keys import SyncAuthKeys
from .loop import _Facade
from .store import SyncStore

__all__ = ["SyncAuthState", "SyncRestoreResult", "restore_all_sync", "use_sync_auth_state"]

T = TypeVar("T")

logger = logging.getLogger("wa_session_store")


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
