"""Many sessions at once: :func:`restore_all` at start-up, :func:`close_all`
and :func:`install_shutdown_handler` at the end.

A process that runs many bots brings them all back after a deploy and saves
them all before it exits. The restore reads creds in bulk (one statement per
page, the next page streaming in while one decodes) and, with ``owner``,
leases every session in the same pages; the one-session path is
:func:`~wa_session_store.use_auth_state` in :mod:`~wa_session_store.auth.state`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from typing_extensions import Unpack

from ..backends.lease import Lease, LeasedCredsPage, check_lease_args
from ..backends.lease_workers import LeaseRenewer
from ..backends.postgres_leases import PostgresLeases, lease_capability
from ..errors import (
    InvalidInputError,
    LeaseUnavailableError,
    SessionStoreError,
    describe_error,
    shown,
)
from ..metrics import open_auth_states
from ..store.base import AuthStateStore, BaseStore
from ..store.maintenance import DECODE_SLICE
from ..store.rows import collector_paused
from .auth_state import AuthState, _release_restored_leases
from .options import AuthStateOptions, SessionOptions
from .state import _started, load_auth_state

__all__ = ["RestoreResult", "close_all", "install_shutdown_handler", "restore_all"]

logger = logging.getLogger("wa_session_store")


@dataclass
class RestoreResult:
    """What :func:`restore_all` brought back.

    Attributes:
        states: the restored auth states by session id.
        failed: the sessions that could not be loaded, with their error.
        held: with ``owner``, the sessions another live owner holds, each
            with the :class:`~wa_session_store.LeaseUnavailableError` that
            ``acquire_lease`` would raise; they are not restored.
        renewer: with ``owner``, the :class:`~wa_session_store.LeaseRenewer`
            renewing every restored session's lease in one statement per
            ``ttl / 3``; None without. Closing an auth state takes its lease
            out and releases it; once none is left, the renewer's task ends.
    """

    states: dict[str, AuthState] = field(default_factory=dict)
    failed: dict[str, Exception] = field(default_factory=dict)
    held: dict[str, LeaseUnavailableError] = field(default_factory=dict)
    renewer: LeaseRenewer | None = None


async def restore_all(
    store: AuthStateStore,
    *,
    concurrency: int = 16,
    owner: str | None = None,
    ttl: float = 30.0,
    **options: Unpack[AuthStateOptions],
) -> RestoreResult:
    """Bring back every stored session at start-up.

    On the library's stores the creds are read in bulk, one statement per
    page of ``BaseStore.CREDS_PAGE_SIZE`` (1000) sessions, with the next page
    read while the current one is decoded (see ``BaseStore.iter_creds_pages``):
    at most two connections, whatever the pool. Sessions that hold keys but
    no creds (never paired) have nothing to restore and are left out. With
    ``preload``, each session's keys are then read ``concurrency`` (default
    16) sessions at a time. Other :class:`AuthStateStore` implementations are
    loaded one ``load_creds`` per session, ``concurrency`` at a time, each
    with the store's retries.

    With ``owner`` (a :class:`~wa_session_store.PostgresStore` only), every
    session is restored under a lease held by ``owner``, as
    ``use_auth_state(..., lease=...)`` runs one: each page is granted in one
    statement and its creds read by a second
    (``PostgresStore.lease_creds_page``), the next page granted and read while
    one decodes; every write is fenced, and when a lease is lost the auth
    state's unsaved creds are dropped, :attr:`AuthState.lost` turns True and
    ``on_lost`` is called. A session another live owner holds is not restored
    but reported in ``held``. One :class:`~wa_session_store.LeaseRenewer`
    (:attr:`RestoreResult.renewer`) renews all the leases in one statement
    every ``ttl / 3`` seconds. Closing an auth state releases its lease
    (:func:`close_all` and the shutdown handler release all of theirs in one
    statement), so the next instance can restore the sessions at once.

    A session that fails (its document does not decode or open) is reported
    in ``failed`` and logged, and the others go on. If the restore itself
    raises (or is cancelled), the sessions it had opened are closed (and
    their leases released) first. ``options`` are those of
    :func:`use_auth_state` (but ``lease``: use ``owner``), applied to every
    session.

    Args:
        store: an open store.
        concurrency: sessions preloaded at a time (default 16).
        owner: lease every session to this owner (1 to 255 characters,
            unique per process: host and pid, say; default None: no leases).
        ttl: the leases' seconds, as ``acquire_lease``'s (default 30.0).

    Raises:
        InvalidInputError: ``concurrency`` is not a positive int, a bad
            ``owner`` or ``ttl``, a ``lease`` option, or a bad option (see
            :class:`~wa_session_store.auth.state.SessionOptions`).
        InvalidTypeError: ``owner`` for a store without leases (SQLite,
            memory), as their ``acquire_lease`` would, or an option of the
            wrong type.
        StoreUnavailableError, StoreOperationError: reading the sessions failed.

    Every argument and option is checked before the first statement: when
    one is refused, nothing has been read and no session leased.
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise InvalidInputError(f"concurrency must be an int >= 1, not {shown(concurrency)}")
    session_options = SessionOptions(**options)
    if session_options.lease is not None:
        raise InvalidInputError(
            "restore_all takes no lease (a lease is one session's): pass owner= to lease them all"
        )
    result = RestoreResult()
    if owner is not None:
        leases = lease_capability(store)
        owner, ttl = check_lease_args(owner, ttl)
        result.renewer = LeaseRenewer(leases, every=ttl * Lease.RENEW_FRACTION)
    try:
        await _restore(store, concurrency, session_options, result, owner, ttl)
    except BaseException:
        # The caller gets no result to close them with: their backups and
        # timers would keep them alive (and their leases held) for nothing.
        await close_all(result.states.values(), deadline=1.0)
        raise
    logger.info(
        "restored %d sessions (%d failed%s)",
        len(result.states),
        len(result.failed),
        f", {len(result.held)} held by other owners" if owner is not None else "",
        extra={"op": "restore"},
    )
    return result


async def _restore(
    store: AuthStateStore,
    concurrency: int,
    options: SessionOptions,
    result: RestoreResult,
    owner: str | None,
    ttl: float,
) -> None:
    """The work of :func:`restore_all`, into ``result`` (which has a renewer with ``owner``)."""
    gate = asyncio.Semaphore(concurrency)

    def failed(session_id: str, exc: Exception) -> None:
        result.failed[session_id] = exc
        logger.error(
            "could not restore %s: %s",
            session_id,
            describe_error(exc),
            extra={"session_id": session_id, "op": "restore"},
        )

    if not isinstance(store, BaseStore):
        sessions = await store.list_sessions()

        async def restore(session_id: str) -> None:
            async with gate:
                try:
                    result.states[session_id] = await load_auth_state(store, session_id, options)
                except Exception as exc:
                    failed(session_id, exc)

        await asyncio.gather(*(restore(info.session_id) for info in sessions))
        return

    categories = options.categories()

    async def preloaded(state: AuthState) -> None:
        async with gate:
            try:
                result.states[state.session_id] = await _started(state, categories)
            except Exception as exc:
                failed(state.session_id, exc)

    kwargs = options.state_options()  # once: thousands of states share them

    def opened(session_id: str, creds: dict[str, Any], lease: Lease | None) -> AuthState:
        if lease is None:
            return AuthState(store, session_id, creds, **kwargs)
        state = AuthState(store, session_id, creds, **{**kwargs, "lease": lease})
        state._renewer = result.renewer
        return state

    pages = (
        store.iter_creds_pages()
        if owner is None
        else _leased_pages(lease_capability(store), owner, ttl, result)
    )
    # The collector is paused for the whole bulk read, awaits included: it
    # builds hundreds of thousands of long-lived objects, none cyclic, and
    # left on it would run pass after pass over them (a quarter of a 10,000
    # session restore). Other tasks run with it paused only meanwhile.
    with collector_paused():
        async for page in pages:
            leased = page.leases if isinstance(page, LeasedCredsPage) else {}
            items = list(page.creds.items())
            states: list[AuthState] = []
            # CPU work, like the decoding: in slices with a yield in between,
            # so the next page keeps streaming in meanwhile.
            for first in range(0, len(items), DECODE_SLICE):
                if first:
                    await asyncio.sleep(0)
                part = [
                    opened(session_id, creds, leased.get(session_id))
                    for session_id, creds in items[first : first + DECODE_SLICE]
                ]
                if not categories:
                    for state in part:
                        state._start()
                        result.states[state.session_id] = state
                states += part
            if categories:  # one query per session: runs concurrently, bounded
                await asyncio.gather(*(preloaded(state) for state in states))
            for session_id, exc in page.failed.items():
                failed(session_id, exc)


async def _leased_pages(
    store: PostgresLeases, owner: str, ttl: float, result: RestoreResult
) -> AsyncIterator[LeasedCredsPage]:
    """Every page of sessions leased to ``owner`` (see ``PostgresStore.lease_creds_page``),
    the next one granted and read while one decodes.

    The sessions held by others go into ``result.held``; the leases of
    sessions granted without creds to restore (a document that does not
    decode, a session deleted meanwhile) are released again, in one
    statement per page, only when there are such.
    """
    async for page in store._lease_pages(owner, ttl):
        result.held.update(page.held)
        unused = [lease for sid, lease in page.leases.items() if sid not in page.creds]
        if unused:
            try:
                await store.release_leases(unused)
            except SessionStoreError as exc:
                logger.warning(
                    "could not release %d leases of sessions not restored (they expire in %gs): %s",
                    len(unused),
                    ttl,
                    describe_error(exc),
                    extra={"op": "restore", "owner": owner},
                )
        yield page


async def close_all(
    states: Iterable[AuthState] | None = None, *, deadline: float = 8.0
) -> dict[str, BaseException]:
    """Close auth states concurrently, each saving what it has pending.

    The leases that :func:`restore_all` took for them are released after
    the final saves, in one statement per restore, within
    ``AuthState.LEASE_RELEASE_TIMEOUT`` (1.0) more seconds.

    Args:
        states: the auth states; default every one of this process not yet closed.
        deadline: seconds the final saves may take (default 8.0: container
            platforms usually wait 10 s between SIGTERM and SIGKILL).

    Returns:
        The sessions whose final save failed, with the error (empty: nothing lost).
    """
    targets = (
        list(states)
        if states is not None
        else [s for s in open_auth_states if isinstance(s, AuthState)]
    )
    # A burst of a few tasks per state, all alive until the last save ends,
    # over a heap that holds every session's creds: left on, the collector
    # ran full passes over that heap, 70% of closing 10,000 states. Bounded
    # by the deadline, as the restore's pause is by its bulk read.
    with collector_paused():
        outcomes = await asyncio.gather(
            *(state._close(deadline) for state in targets), return_exceptions=True
        )
        await _release_restored_leases(targets)
    return {
        state.session_id: outcome
        for state, outcome in zip(targets, outcomes, strict=True)
        if isinstance(outcome, BaseException)
    }


def install_shutdown_handler(
    states: Callable[[], Iterable[AuthState]] | None = None,
    *,
    deadline: float = 8.0,
    signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
) -> asyncio.Event:
    """On SIGTERM (or SIGINT), close every auth state so nothing pending is lost.

    Call it from the running loop. The returned event is set once every state
    is closed; await it, then exit::

        stopped = install_shutdown_handler()
        await stopped.wait()

    Args:
        states: a callable giving the states to close; default every open
            auth state of this process.
        deadline: seconds the closing may take (default 8.0).
        signals: the signals to handle (default SIGTERM and SIGINT).
    """
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    async def shutdown(signame: str) -> None:
        targets = None if states is None else list(states())
        logger.info(
            "%s received: saving and closing auth states", signame, extra={"op": "shutdown"}
        )
        failed = await close_all(targets, deadline=deadline)
        if failed:
            logger.error(
                "shutdown: %d sessions could not save their last creds: %s",
                len(failed),
                ", ".join(sorted(failed)),
                extra={"op": "shutdown"},
            )
        done.set()

    def on_signal(signame: str) -> None:
        if tasks or done.is_set():
            return  # a second signal while closing: keep going
        task = loop.create_task(shutdown(signame))
        tasks.add(task)

    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig.name)
    return done
