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

One loop thread (``loop.py``) serves every open facade of the
process: the first :meth:`SyncStore.open` starts it, the last
:meth:`SyncStore.close` stops it (so a closed program leaves no thread
behind). Stores wrapped here are opened, used and closed on that loop, so
several facades over one database share its connections' loop safely. A
facade still open when the interpreter exits is closed then, so pending
creds are saved.

One module per facade, each with its generated twins next to its own life
cycle: ``store.py`` (:class:`SyncStore`, :func:`open_sync_store`, the exit
hook), ``auth_state.py`` (:class:`SyncAuthState`,
:func:`use_sync_auth_state`, :func:`restore_all_sync`), ``keys.py``
(:class:`SyncAuthKeys`) and ``workers.py`` (:class:`SyncSessionWorker`);
``loop.py`` holds the loop thread and what every facade shares. The public
path is this package: import the names from ``wa_session_store.sync``.
"""

from __future__ import annotations

from .auth_state import SyncAuthState, SyncRestoreResult, restore_all_sync, use_sync_auth_state
from .keys import SyncAuthKeys
from .loop import THREAD_NAME, BlockingCallInLoopError, InheritedFacadeError
from .store import SyncStore, open_sync_store
from .workers import SyncSessionHandler, SyncSessionWorker

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
