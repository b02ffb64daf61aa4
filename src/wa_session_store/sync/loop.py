"""The loop thread behind the blocking facades of :mod:`wa_session_store.sync`.

One event loop, on one daemon thread, serves every open facade of the
process: the first user starts it and the last one stops it. A facade's
blocking method hands the coroutine it mirrors to that loop and waits, and
refuses to run from inside a running loop, where waiting would stall it.

The loop thread does not survive ``os.fork()``. A forked child forgets it
(``os.register_at_fork``) and starts its own when it first needs one; a
facade bound before the fork (an open store, what was made from it) raises
:class:`InheritedFacadeError` there instead of waiting for a loop that no
longer runs, because its connections and leases are the parent's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ..errors import SessionStoreError

__all__ = ["THREAD_NAME", "BlockingCallInLoopError", "InheritedFacadeError"]

R = TypeVar("R")

#: The name of the thread that runs the facades' event loop.
THREAD_NAME = "wa-session-store-sync"


class BlockingCallInLoopError(SessionStoreError, RuntimeError):
    """A blocking facade method was called from a running event loop.

    Waiting there would stall that loop, and on the facade's own loop thread
    (a hook or callback of the store calling back into the facade) it would
    deadlock. In async code use the async store (``await store.load_creds(...)``)
    or move the blocking call to a worker thread (``await asyncio.to_thread(...)``).
    """


class InheritedFacadeError(SessionStoreError, RuntimeError):
    """A facade inherited through ``os.fork()`` was called in the child process.

    A :class:`~wa_session_store.sync.SyncStore` open when the process forked,
    and every auth state, key store and worker made from it, belong to the
    parent: their connections, leases, timers and loop thread live there, and
    using them from the child would write into the parent's connections. Open
    a new store in the child (``open_sync_store(url)``) after the fork, or
    fork before opening (``multiprocessing`` with the ``spawn`` or
    ``forkserver`` start method never inherits one).
    """


# -- the loop thread ----------------------------------------------------------


class _LoopThread:
    """An event loop running forever on a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._serve, name=THREAD_NAME, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            # Tasks still scheduled (an auth state nobody closed: its timers,
            # a call abandoned by an interrupted caller) are cancelled rather
            # than destroyed while pending.
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            # At interpreter exit no thread may start to join the executor.
            with contextlib.suppress(RuntimeError):
                loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def run(self, start: Callable[[], Coroutine[Any, Any, R]]) -> R:
        """Run ``start()`` on the loop and wait for its result or exception."""

        async def call() -> R:
            # start() itself runs on the loop thread: every line of the core does.
            return await start()

        future = asyncio.run_coroutine_threadsafe(call(), self.loop)
        try:
            return future.result()
        finally:
            # Interrupted while waiting (KeyboardInterrupt): cancel the call
            # instead of leaving it running unobserved.
            if not future.done():
                future.cancel()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self.thread:
            self.thread.join()


_lock = threading.Lock()
_shared: _LoopThread | None = None
_users = 0
#: Which process of a line of forks this is: 0 in the one that imported this
#: module, one more in each child forked since. A facade bound to a loop
#: records it, so a child tells what it inherited from what it made.
_process = 0
#: Loop threads inherited from the parent (gone in the child): kept
#: referenced, never closed, because closing a loop unregisters its file
#: descriptors from the epoll instance the child shares with the parent.
_inherited: list[_LoopThread] = []


def _forget_parents_loop() -> None:
    """In a forked child: no loop thread runs here, and no one holds the lock.

    The parent's loop thread did not survive the fork, and its lock may have
    been held by one of the parent's threads; waiting on either would hang
    the child for ever. The child starts its own loop thread when it first
    needs one.
    """
    global _lock, _shared, _users, _process
    if _shared is not None:
        _inherited.append(_shared)
    _lock = threading.Lock()
    _shared = None
    _users = 0
    _process += 1


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_parents_loop)


def _acquire() -> _LoopThread:
    """The shared loop thread, started if none runs; pair with :func:`_release`."""
    global _shared, _users
    with _lock:
        if _shared is None:
            _shared = _LoopThread()
        _users += 1
        return _shared


def _release() -> None:
    """Drop one use of the loop thread; the last one stops it."""
    global _shared, _users
    with _lock:
        _users -= 1
        if _users == 0 and _shared is not None:
            # Stopped under the lock, so that no one acquires a stopping loop.
            _shared.stop()
            _shared = None


def _refuse_in_running_loop(what: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise BlockingCallInLoopError(
        f"{what}() blocks until the store answers and was called from a running "
        "event loop on this thread, which it would stall (or deadlock, on the "
        "facade's own loop thread): in async code use the async store "
        "(await store.method(...)), or run the call in a worker thread "
        "(await asyncio.to_thread(...))"
    )


# -- what every facade shares ----------------------------------------------------


class _Facade:
    """Runs coroutines of the core on the loop thread, for the blocking methods.

    ``_process`` is the process (see ``_process`` above) whose loop thread
    holds the facade's async objects, or None while it holds none (a
    :class:`~wa_session_store.sync.SyncStore` that is not open). Subclasses
    set it when they bind: at construction, or when opened.
    """

    __slots__ = ("__weakref__", "_process")

    _process: int | None

    def _bind(self) -> None:
        """Record that this facade's async objects live on this process's loop thread."""
        self._process = _process

    def _inherited(self) -> bool:
        """Whether this facade was bound in a parent process, before ``os.fork()``."""
        return self._process is not None and self._process != _process

    def _refuse_if_inherited(self, what: str) -> None:
        """Raise :class:`InheritedFacadeError` if :meth:`_inherited`."""
        if self._inherited():
            raise InheritedFacadeError(
                f"{type(self).__name__}.{what}() was called in a process forked after "
                "its store was opened: the store's connections, leases and auth states "
                "belong to the parent process. Open a new store in this process after "
                "the fork (open_sync_store(url)), or fork before opening it"
            )

    def _run(self, what: str, start: Callable[[], Coroutine[Any, Any, R]]) -> R:
        """Run ``start()`` on the loop thread and wait; ``what`` names the call in errors.

        Each call holds the loop thread for its duration. A facade that is not
        open borrows one (so the core, not this module, reports what is wrong:
        a :class:`~wa_session_store.StoreClosedError`, say).

        Raises:
            InheritedFacadeError: the facade was inherited through ``os.fork()``
                (except ``close``, which does nothing then: the parent closes
                what it opened).
        """
        if what == "close" and self._inherited():
            return None  # type: ignore[return-value]  # every close() twin returns None
        self._refuse_if_inherited(what)
        _refuse_in_running_loop(f"{type(self).__name__}.{what}")
        runner = _acquire()
        try:
            return runner.run(start)
        finally:
            _release()
