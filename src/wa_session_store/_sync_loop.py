"""The loop thread behind the blocking facades of :mod:`wa_session_store.sync`.

One event loop, on one daemon thread, serves every open facade of the
process: the first user starts it and the last one stops it. A facade's
blocking method hands the coroutine it mirrors to that loop and waits, and
refuses to run from inside a running loop, where waiting would stall it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .errors import SessionStoreError

__all__ = ["THREAD_NAME", "BlockingCallInLoopError"]

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
    """Runs coroutines of the core on the loop thread, for the blocking methods."""

    __slots__ = ("__weakref__",)

    def _run(self, what: str, start: Callable[[], Coroutine[Any, Any, R]]) -> R:
        """Run ``start()`` on the loop thread and wait; ``what`` names the call in errors.

        Each call holds the loop thread for its duration. A facade that is not
        open borrows one (so the core, not this module, reports what is wrong:
        a :class:`~wa_session_store.StoreClosedError`, say).
        """
        _refuse_in_running_loop(f"{type(self).__name__}.{what}")
        runner = _acquire()
        try:
            return runner.run(start)
        finally:
            _release()
