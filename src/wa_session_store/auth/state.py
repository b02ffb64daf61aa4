"""What a bot author calls: :func:`use_auth_state`, an auth state bound to a store and a session.

:func:`use_auth_state` is the counterpart of Baileys' ``useMultiFileAuthState``
over any :class:`~wa_session_store.AuthStateStore`: it checks every option
(:class:`SessionOptions`, ``options.py``) before any I/O, reads the creds,
builds the :class:`AuthState` (``auth_state.py``), preloads its key cache if
asked, and starts it. Signal keys go through :class:`~wa_session_store.AuthKeys`
(a read cache; writes stored at once, or at the next barrier that the
client's outgoing frames wait for); the creds document is saved through a
:class:`~wa_session_store.Throttler` (at most one save per ``throttle``
seconds, the last update always saved) and re-saved by a
:class:`~wa_session_store.BackupScheduler` while a change is unsaved.

The auth state's names are imported from here (``AuthState``, ``AuthKeys``,
``SessionOptions``, ``AuthStateOptions``), wherever they live; the
many-session functions (``restore_all``, ``close_all``, the shutdown
handler) are in ``restore.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..backends.lease import Lease
from ..store.base import AuthStateStore
from .auth_state import AuthState, _check_lease_of
from .creds_saver import UrgentPredicate, prekey_counters_changed
from .keys import DEFAULT_KEY_CACHE_BYTES, AuthKeys, KeyWrites
from .options import AuthStateOptions, SessionOptions

__all__ = [
    "AuthKeys",
    "AuthState",
    "AuthStateOptions",
    "SessionOptions",
    "UrgentPredicate",
    "load_auth_state",
    "prekey_counters_changed",
    "use_auth_state",
]


async def use_auth_state(
    store: AuthStateStore,
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
) -> AuthState:
    """Load a session's auth state from ``store`` and keep it saved.

    Args:
        store: an open store.
        session_id: the session (one WhatsApp account).
        throttle: at most one creds save per this many seconds from
            :meth:`AuthState.creds_updated`; the last update is always saved
            (default 30.0; 0 saves on every update).
        backup_interval: seconds between backups that re-save unsaved creds
            (default 300.0; None or 0 disables them).
        initial_delay: seconds before the first backup (default 10.0).
        backup_jitter: up to this many seconds added to or taken from each
            backup delay, so that many sessions spread out (default 0.0).
        urgent: ``urgent(previous, current)``; True saves at once. Default:
            :func:`prekey_counters_changed`. None: never.
        lease: a :class:`~wa_session_store.Lease` of this session (from
            ``PostgresStore.acquire_lease``): every write — creds saves, key
            batches, backups — lands only while it is the newest lease. When
            it is lost, unsaved creds are dropped with an ERROR log,
            :attr:`AuthState.lost` turns True and ``on_lost`` is called.
        on_lost: ``on_lost(auth)`` when the lease is lost: disconnect the client.
        key_writes: ``"write-through"`` (default: each ``keys.set`` is stored
            before it returns, one round trip each) or ``"barrier"`` (stored
            in one batch at the next barrier: :meth:`AuthKeys.flush`, a
            transaction's end, :meth:`AuthState.barrier`, :meth:`AuthState.flush`,
            :meth:`AuthState.aclose`, or on their own after
            ``AuthKeys.FLUSH_DELAY`` seconds). Use ``"barrier"`` only when the
            client's outgoing frames wait for :meth:`AuthState.barrier`, as
            the pyaileys integration arranges.
        preload: load the categories a client reads on every send into the
            key cache before returning, a page of rows per query: True for
            :data:`~wa_session_store.auth.keys.DEFAULT_PRELOAD` (``session``,
            ``identity-key``, ``sender-key``, ``sender-key-memory``,
            ``device-list``, ``lid-mapping``, ``tctoken``), or the categories
            to load (default False).
        key_cache_bytes: the key read cache's budget for this auth state, in
            bytes (default 8 MiB; 0 disables the cache).

    Returns:
        The :class:`AuthState`; ``auth.creds`` is None for a new session (pair it).

    Raises:
        InvalidInputError: an invalid session id or option (see
            :class:`SessionOptions`), checked before anything is read.
        StoreUnavailableError, StoreOperationError, DecodeError: loading failed.
    """
    options = SessionOptions(
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
    )
    return await load_auth_state(store, session_id, options)


async def load_auth_state(
    store: AuthStateStore, session_id: str, options: SessionOptions
) -> AuthState:
    """:func:`use_auth_state` with its options already gathered (the pyaileys
    integration's entry point too). Everything is checked before the read."""
    categories = options.categories()
    _check_lease_of(options.lease, session_id)
    creds = await store.load_creds(session_id)
    state = AuthState(store, session_id, creds, **options.state_options())
    return await _started(state, categories)


async def _started(state: AuthState, categories: list[str]) -> AuthState:
    """Preload ``categories`` into the new state's key cache, then start it."""
    if categories:
        try:
            await state.keys.preload(categories)
        except BaseException:
            await state.aclose(deadline=1.0)
            raise
    state._start()
    return state
