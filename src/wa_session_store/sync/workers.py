"""The blocking session worker: :class:`SyncSessionWorker`.

The async :class:`~wa_session_store.SessionWorker` claims, renews and
releases leases on the loop thread; each session's blocking handler runs in
a daemon thread of its own, told through a :class:`threading.Event` when to
return.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

from ..backends.lease import Lease
from ..backends.lease_workers import SessionHandler, SessionWorker
from ..errors import InvalidTypeError
from .loop import THREAD_NAME, _Facade
from .store import SyncStore

__all__ = ["SyncSessionHandler", "SyncSessionWorker"]

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
