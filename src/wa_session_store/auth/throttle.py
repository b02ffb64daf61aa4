"""Rate-limited saving that never loses the last update, and periodic backups.

A WhatsApp client emits ``creds.update`` many times a second in bursts.
Saving on every event hammers the database; saving at most once per interval
and *skipping* the other events drops the last update of a burst, and the
session breaks after the next deploy. :class:`Throttler` keeps the rate limit
and loses nothing: the first event of a quiet period saves at once (leading
edge), the rest of the burst is coalesced into one save at the end of the
interval (trailing edge), and a failed save stays owed until one succeeds.
It only schedules: an owner that keeps its own record of what is unsaved
(the creds saver) passes it as ``owed``, and the throttler keeps none.

:class:`BackupScheduler` (in :mod:`~wa_session_store.auth.backup`, importable
from here) runs a job every few minutes, with jitter so that a process holding
many sessions does not back them all up in the same second.

Both use the event loop's timers instead of a long-lived task per instance:
a process may hold thousands of them, and an idle one costs a few slots and at
most one timer handle.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..errors import StoreClosedError
from .backup import BackupScheduler, jittered_delay
from .runner import Runner, check_callable

__all__ = ["BackupScheduler", "Throttler", "jittered_delay"]

logger = logging.getLogger("wa_session_store")

# After a failed run with no new trigger, the automatic retry waits at least
# this long even when the interval is shorter (or 0): otherwise an instant,
# permanent failure (a closed store, a dropped table) becomes a busy loop that
# writes an ERROR line as fast as the loop can spin.
_MIN_AUTO_RETRY = 1.0


class Throttler(Runner):
    """Run ``func`` at most once per ``interval`` without losing the last update.

    Call :meth:`trigger` each time the data changed (for example from a
    ``creds.update`` callback). The throttler then guarantees that ``func``
    runs *after* the last trigger, while keeping the rate limit:

    * **Leading edge**: when no run started within the last ``interval``
      seconds and none is in progress, ``func`` is scheduled at once.
    * **Trailing edge**: otherwise every trigger is coalesced into *one* run at
      (start of the previous run + ``interval``). ``func`` should read the
      current state when it runs, so that run saves the latest value.
    * **No overlap**: a trigger during a run schedules exactly one more run,
      at the earliest at (start of that run + ``interval``).
    * **Urgent**: ``trigger(urgent=True)`` bypasses the interval; the run starts
      as soon as no run is in progress.
    * **Failures**: a run that raises is logged (one ERROR line), stays owed
      (:attr:`pending` stays True) and is retried by the next trigger (subject
      to the interval), automatically at (start of the failed run +
      ``interval``; at least 1 s later when ``interval`` is shorter) even if no
      trigger comes, or by :meth:`flush`. It never raises into :meth:`trigger`.

    Args:
        func: a callable taking no arguments, sync or async (returning an
            awaitable, which is awaited).
        interval: the least number of seconds between the starts of two runs
            (default 30.0). 0 disables the rate limit: each trigger runs, still
            coalesced while a run is in progress.
        name: a label for log lines, e.g. the session id (default None).
        owed: ``owed() -> bool``, for an owner with its own record of what
            is unsaved: every run the throttler would make on its own (a
            timer due, the end of a run, :meth:`flush`) asks it, and
            :attr:`pending` is its answer, so a failed run is retried only
            while it says True. It must be True from a trigger until a run
            started after it succeeds. Default None: owed after a trigger not
            yet followed by a run's start, and from a failed run until one succeeds.

    Raises:
        InvalidInputError: ``interval`` is negative, NaN or infinite.
        InvalidTypeError: ``func`` or ``owed`` is not callable, ``interval``
            is not a number, or ``name`` is not a str.

    Use it from one event loop only (:meth:`trigger` must run on the loop
    thread). Close it with :meth:`aclose`, which saves what is still owed.
    """

    __slots__ = ("_closed", "_last_start", "_owed", "_requested", "_urgent")
    _op = "throttle"
    _op_key = "throttle"

    def __init__(
        self,
        func: Callable[[], object],
        interval: float = 30.0,
        *,
        name: str | None = None,
        owed: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(func, interval, name, zero=True)
        if owed is not None:
            check_callable("owed", owed, "")
        self._owed = owed
        # A trigger since the last run started: the trailing edge's request,
        # which a failed run leaves alone (then owed(), or the failure count, says).
        self._requested = False
        self._urgent = False
        self._closed = False
        self._last_start: float | None = None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._task else "idle"
        return (
            f"<Throttler name={self._name!r} interval={self._interval} {state} "
            f"pending={self.pending} runs={self._runs} failures={self._failures}>"
        )

    # -- properties ---------------------------------------------------------

    @property
    def interval(self) -> float:
        """The least number of seconds between the starts of two runs."""
        return self._interval

    @property
    def pending(self) -> bool:
        """True while a run is owed: triggered (or failed) and not yet done.

        With ``owed``, this is ``owed()``.
        """
        return self._owes()

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` was called (even while it is still flushing)."""
        return self._closed

    # -- public methods -----------------------------------------------------

    def trigger(self, *, urgent: bool = False) -> None:
        """Record that the data changed: a run of ``func`` is now owed.

        Never blocks and never runs ``func`` inline: the run is scheduled as a
        task (at once on the leading edge, else by a timer), so this is safe to
        call from a synchronous callback on the loop thread. Errors of ``func``
        never propagate here.

        Args:
            urgent: run as soon as no run is in progress, ignoring the
                interval (default False).

        Raises:
            StoreClosedError: :meth:`aclose` was called.
            RuntimeError: called without a running event loop (for example
                from another thread).
        """
        if self._closed:
            raise StoreClosedError(f"throttler{self._label()} is closed; trigger() refused")
        loop = asyncio.get_running_loop()
        self._requested = True
        if urgent:
            self._urgent = True
        if self._task is not None:
            # The end of the current run schedules the next one.
            return
        last = self._last_start
        if self._urgent or last is None or loop.time() >= last + self._interval:
            self._start_run(loop)
        else:
            self._arm(loop, last + self._interval)

    async def flush(self) -> None:
        """Run ``func`` now if a run is owed, bypassing the interval, and wait for it.

        If a run is in progress, waits for it first (raising if it fails).
        Then, if a run is still owed, cancels the timer and runs at once.
        Returns at once when nothing is in progress or owed. When it returns
        normally, every trigger made before the call has been followed by a
        successful run.

        Works after :meth:`aclose` too, to retry a save that failed while
        closing.

        Raises:
            Exception: the exception raised by ``func`` in the run joined or
                started for the flush (a joined run that fails is not repeated
                at once); the run stays owed (:attr:`pending` is True) and the
                failure is also logged.
        """
        task = self._task
        if task is not None:
            # A run that fails here is reported, not repeated at once: it just
            # spent its whole retry budget, and the caller (a shutdown with a
            # deadline, save_creds()) must learn that rather than wait twice.
            await self._outcome(task)
        task = self._task
        if task is None:
            if not self.pending:
                return
            # Started after this call, so it covers every earlier trigger.
            task = self._start_run(asyncio.get_running_loop())
        await self._outcome(task)

    async def aclose(self) -> None:
        """Save what is owed at once, then refuse further triggers.

        :attr:`closed` becomes True when this is called, so a trigger made
        while the final save runs is refused too. The timer is cancelled and
        the throttler ends closed even if the save fails or this call is
        cancelled. Idempotent: a second call only waits for a run in progress.

        Raises:
            Exception: the final run failed (see :meth:`flush`); the
                throttler is closed anyway, and :meth:`flush` may be called to
                retry.
        """
        if self._closed:
            await self._settled()
            return
        self._closed = True
        try:
            await self.flush()
        finally:
            self._cancel_timer()
            logger.debug(
                "throttler%s closed after %d runs%s",
                self._label(),
                self._runs,
                " with an unsaved update" if self.pending else "",
                extra=self._fields(),
            )

    # -- internals ----------------------------------------------------------

    def _arm(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        timer = self._timer
        if timer is not None:
            if timer.when() <= due:
                # A burst reaches here on every event; keep the existing timer.
                return
            timer.cancel()
        self._timer = loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._closed or self._task is not None or not self.pending:
            return
        self._start_run(asyncio.get_running_loop())

    def _start_run(self, loop: asyncio.AbstractEventLoop) -> asyncio.Task[Exception | None]:
        self._cancel_timer()
        self._last_start = loop.time()
        task = loop.create_task(self._run())
        self._task = task
        return task

    async def _run(self) -> Exception | None:
        # Cleared when func starts, not when it ends: func reads the state
        # itself, so a trigger arriving during the run may not be covered and
        # must leave a run owed.
        self._requested = False
        self._urgent = False
        try:
            error = await self._call("throttled run", retried=self._owes)
        except BaseException:
            # Cancelled (loop shutdown) or KeyboardInterrupt/SystemExit: it is
            # unknown whether the save landed, so its trigger stands; nothing
            # is scheduled on a loop that is going away.
            self._requested = True
            raise
        finally:
            self._task = None
        self._after_run()
        return error

    def _owes(self) -> bool:
        # The one answer to "is a run owed?": the owner's, else a trigger
        # not yet followed by a run's start, or a failed last run.
        if self._owed is not None:
            return self._owed()
        return self._requested or self._failures > 0

    def _after_run(self) -> None:
        if self._closed or not self.pending:
            return
        loop = asyncio.get_running_loop()
        if self._urgent:
            self._start_run(loop)
            return
        assert self._last_start is not None
        delay = self._interval
        if not self._requested:
            # Owed with no trigger since the run started: what a failed run
            # left. Never sooner than _MIN_AUTO_RETRY, or a permanent failure
            # would spin.
            delay = max(delay, _MIN_AUTO_RETRY)
        due = self._last_start + delay
        if loop.time() >= due:
            self._start_run(loop)
        else:
            self._arm(loop, due)
