"""Rate-limited saving that never loses the last update, and periodic backups.

A WhatsApp client emits ``creds.update`` many times a second in bursts.
Saving on every event hammers the database; saving at most once per interval
and *skipping* the other events drops the last update of a burst, and the
session breaks after the next deploy. :class:`Throttler` keeps the rate limit
and loses nothing: the first event of a quiet period saves at once (leading
edge), the rest of the burst is coalesced into one save at the end of the
interval (trailing edge), and a failed save stays owed until one succeeds.

:class:`BackupScheduler` runs a job every few minutes, with jitter so that a
process holding many sessions does not back them all up in the same second.

Both use the event loop's timers instead of a long-lived task per instance:
a process may hold thousands of them, and an idle one costs a few slots and at
most one timer handle.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import random
from collections.abc import Callable

from .errors import InvalidInputError, InvalidTypeError, StoreClosedError, describe_error, shown
from .retry import finite

__all__ = ["BackupScheduler", "Throttler", "jittered_delay"]

logger = logging.getLogger("wa_session_store")

# After a failed run with no new trigger, the automatic retry waits at least
# this long even when the interval is shorter (or 0): otherwise an instant,
# permanent failure (a closed store, a dropped table) becomes a busy loop that
# writes an ERROR line as fast as the loop can spin.
_MIN_AUTO_RETRY = 1.0


def _check_func(func: object) -> None:
    if not callable(func):
        raise InvalidTypeError(
            f"func must be a callable taking no arguments (sync or async), "
            f"not {type(func).__name__}"
        )


def _check_name(name: object) -> None:
    if name is not None and not isinstance(name, str):
        raise InvalidTypeError(f"name must be a str or None, not {type(name).__name__}")


def _check_seconds(what: str, value: object, *, allow_zero: bool) -> float:
    allowed = f"a finite number of seconds {'>= 0' if allow_zero else '> 0'}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidTypeError(f"{what} must be {allowed}, not {type(value).__name__}")
    if not finite(value) or value < 0 or (value == 0 and not allow_zero):
        raise InvalidInputError(f"{what} must be {allowed}, not {shown(value)}")
    return float(value)


async def _invoke(func: Callable[[], object]) -> None:
    result = func()
    # A sync func returns None (or anything else); an async one returns an
    # awaitable, which only does its work once awaited.
    if inspect.isawaitable(result):
        await result


def _exc_info(exc: BaseException) -> BaseException | None:
    # One ERROR line per failure; the traceback only when someone asked for DEBUG.
    return exc if logger.isEnabledFor(logging.DEBUG) else None


def jittered_delay(delay: float, jitter: float, rng: random.Random | None = None) -> float:
    """``delay`` plus a uniform random offset in ``[-jitter, +jitter]``, never below 0.

    Args:
        delay: the nominal delay in seconds.
        jitter: the largest offset either way, in seconds (0 returns ``delay``).
        rng: the random source (default: the :mod:`random` module's shared one).

    Returns:
        The delay to wait, in seconds, ``>= 0``.
    """
    if jitter <= 0:
        return max(0.0, delay)
    offset = (rng or random).uniform(-jitter, jitter)
    return max(0.0, delay + offset)


class _Runner:
    """What :class:`Throttler` and :class:`BackupScheduler` share: the function,
    its counters, and running it once with one log line for the outcome."""

    __slots__ = ("_failures", "_func", "_interval", "_name", "_runs", "_task", "_timer")

    #: The ``op`` of log records, and the ``extra`` key holding the name.
    _op = "run"
    _op_key = "runner"

    def __init__(
        self, func: Callable[[], object], interval: float, name: str | None, *, zero: bool
    ) -> None:
        _check_func(func)
        _check_name(name)
        self._interval = _check_seconds("interval", interval, allow_zero=zero)
        self._func = func
        self._name = name
        self._runs = 0
        self._failures = 0
        self._task: asyncio.Task[Exception | None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def name(self) -> str | None:
        """The label given at construction (used in log lines)."""
        return self._name

    @property
    def runs(self) -> int:
        """How many runs completed successfully."""
        return self._runs

    @property
    def failures(self) -> int:
        """How many runs failed in a row (reset to 0 by a successful run)."""
        return self._failures

    @property
    def running(self) -> bool:
        """True while a run is in progress (or about to start)."""
        return self._task is not None

    def _label(self) -> str:
        return f" {self._name!r}" if self._name is not None else ""

    def _fields(self) -> dict[str, object]:
        # Not "name": that key belongs to LogRecord and logging refuses it in extra.
        return {"op": self._op, self._op_key: self._name}

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _call(
        self, what: str, *, after_failure: str = "", **fields: object
    ) -> Exception | None:
        """Run ``func`` once; count and log the outcome; return its exception, or None.

        Cancellation and other BaseExceptions propagate, with no run counted.
        """
        try:
            await _invoke(self._func)
        except Exception as exc:
            self._failures += 1
            logger.error(
                "%s%s failed (%d in a row)%s: %s",
                what,
                self._label(),
                self._failures,
                after_failure,
                describe_error(exc),
                exc_info=_exc_info(exc),
                extra={**self._fields(), **fields, "failures": self._failures},
            )
            return exc
        self._runs += 1
        self._failures = 0
        logger.debug(
            "%s%s done (%d runs)",
            what,
            self._label(),
            self._runs,
            extra={**self._fields(), **fields, "runs": self._runs},
        )
        return None


class Throttler(_Runner):
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

    Raises:
        InvalidInputError: ``interval`` is negative, NaN or infinite.
        InvalidTypeError: ``func`` is not callable, ``interval`` is not a
            number, or ``name`` is not a str.

    Use it from one event loop only (:meth:`trigger` must run on the loop
    thread). Close it with :meth:`aclose`, which saves what is still owed.
    """

    __slots__ = ("_closed", "_last_start", "_pending", "_urgent")
    _op = "throttle"
    _op_key = "throttle"

    def __init__(
        self, func: Callable[[], object], interval: float = 30.0, *, name: str | None = None
    ) -> None:
        super().__init__(func, interval, name, zero=True)
        self._pending = False
        self._urgent = False
        self._closed = False
        self._last_start: float | None = None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._task else "idle"
        return (
            f"<Throttler name={self._name!r} interval={self._interval} {state} "
            f"pending={self._pending} runs={self._runs} failures={self._failures}>"
        )

    # -- properties ---------------------------------------------------------

    @property
    def interval(self) -> float:
        """The least number of seconds between the starts of two runs."""
        return self._interval

    @property
    def pending(self) -> bool:
        """True while a run is owed: triggered (or failed) and not yet done."""
        return self._pending

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
        self._pending = True
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
            error = await asyncio.shield(task)
            if error is not None:
                raise error
        task = self._task
        if task is None:
            if not self._pending:
                return
            # Started after this call, so it covers every earlier trigger.
            task = self._start_run(asyncio.get_running_loop())
        # shield: cancelling flush() must not cancel the save half-way.
        error = await asyncio.shield(task)
        if error is not None:
            raise error

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
            task = self._task
            if task is not None:
                await asyncio.wait([task])
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
                " with an unsaved update" if self._pending else "",
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
        if self._closed or self._task is not None or not self._pending:
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
        self._pending = False
        self._urgent = False
        try:
            error = await self._call("throttled run", after_failure=", will retry")
        except BaseException:
            # Cancelled (loop shutdown) or KeyboardInterrupt/SystemExit: it is
            # unknown whether the save landed, so it stays owed; nothing is
            # scheduled on a loop that is going away.
            self._pending = True
            self._task = None
            raise
        retriggered = self._pending
        if error is not None:
            self._pending = True
        self._task = None
        self._after_run(failed=error is not None, retriggered=retriggered)
        return error

    def _after_run(self, *, failed: bool, retriggered: bool) -> None:
        if self._closed or not self._pending:
            return
        loop = asyncio.get_running_loop()
        if self._urgent:
            self._start_run(loop)
            return
        assert self._last_start is not None
        delay = self._interval
        if failed and not retriggered:
            delay = max(delay, _MIN_AUTO_RETRY)
        due = self._last_start + delay
        if loop.time() >= due:
            self._start_run(loop)
        else:
            self._arm(loop, due)


class BackupScheduler(_Runner):
    """Run ``func`` periodically, with jitter, never two runs at once.

    After :meth:`start`, the first run is due ``initial_delay`` seconds later,
    then one every ``interval`` seconds. Due times are measured from the
    previous *nominal* due time, not from when a run ended, so delays do not
    drift. Each run actually starts at its due time plus a random offset,
    uniform in ``[-jitter, +jitter]`` (never before the moment it is
    computed), so that many schedulers started together spread out; offsets
    do not accumulate.

    A run that raises is logged (one ERROR line) and the schedule goes on. If
    a run ends after the next due time, the missed due times are skipped (one
    WARNING line), so runs never stack. A timer that fires while a
    :meth:`run_now` run is in progress skips that due time: the job just ran.

    Lifecycle choice: :meth:`stop` is final. After it, :meth:`start` and
    :meth:`run_now` raise :class:`StoreClosedError`; create a new scheduler to
    start again.

    Args:
        func: a callable taking no arguments, sync or async.
        interval: seconds between due times (default 300.0, > 0).
        initial_delay: seconds from :meth:`start` to the first due time
            (default 10.0, >= 0).
        jitter: the largest random offset of each start, in seconds
            (default 0.0, >= 0 and < ``interval``).
        name: a label for log lines, e.g. the session id (default None).
        rng: the random source for jitter (default: the :mod:`random`
            module's shared one); pass a seeded :class:`random.Random` for
            reproducible schedules.

    Raises:
        InvalidInputError: a value out of range.
        InvalidTypeError: ``func`` is not callable, a delay is not a number,
            or ``name`` is not a str.
    """

    __slots__ = ("_initial_delay", "_jitter", "_loop", "_rng", "_slot", "_started", "_stopped")
    _op = "backup"
    _op_key = "scheduler"

    def __init__(
        self,
        func: Callable[[], object],
        interval: float = 300.0,
        initial_delay: float = 10.0,
        jitter: float = 0.0,
        *,
        name: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(func, interval, name, zero=False)
        self._initial_delay = _check_seconds("initial_delay", initial_delay, allow_zero=True)
        self._jitter = _check_seconds("jitter", jitter, allow_zero=True)
        if self._jitter >= self._interval:
            raise InvalidInputError(
                f"jitter must be less than interval ({self._interval!r}), not {jitter!r}"
            )
        if rng is not None and not isinstance(rng, random.Random):
            raise InvalidTypeError(f"rng must be a random.Random or None, not {type(rng).__name__}")
        self._rng = rng
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slot = 0.0
        self._started = False
        self._stopped = False

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "started" if self._started else "new"
        return (
            f"<BackupScheduler name={self._name!r} interval={self._interval} {state} "
            f"runs={self._runs} failures={self._failures}>"
        )

    # -- properties ---------------------------------------------------------

    @property
    def interval(self) -> float:
        """Seconds between due times."""
        return self._interval

    @property
    def initial_delay(self) -> float:
        """Seconds from :meth:`start` to the first due time."""
        return self._initial_delay

    @property
    def jitter(self) -> float:
        """The largest random offset of each start, in seconds."""
        return self._jitter

    @property
    def started(self) -> bool:
        """True once :meth:`start` was called."""
        return self._started

    @property
    def stopped(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stopped

    @property
    def next_run_in(self) -> float | None:
        """Seconds until the next scheduled run starts (jitter included), or None.

        None before :meth:`start`, after :meth:`stop`, and while a scheduled
        run is in progress (the next one is timed when it ends).
        """
        timer, loop = self._timer, self._loop
        if timer is None or loop is None:
            return None
        return max(0.0, timer.when() - loop.time())

    # -- public methods -----------------------------------------------------

    def start(self) -> None:
        """Start the schedule: the first run is due ``initial_delay`` s from now.

        Idempotent while started.

        Raises:
            StoreClosedError: :meth:`stop` was called.
            RuntimeError: no running event loop.
        """
        if self._stopped:
            raise StoreClosedError(f"backup scheduler{self._label()} is stopped; start() refused")
        loop = asyncio.get_running_loop()
        if self._started:
            return
        self._started = True
        self._loop = loop
        self._slot = loop.time() + self._initial_delay
        self._arm(loop)
        logger.debug(
            "backup scheduler%s started, every %.1fs",
            self._label(),
            self._interval,
            extra=self._fields(),
        )

    async def run_now(self) -> None:
        """Run ``func`` now and wait for it; works whether started or not.

        Never overlaps another run: if one is in progress (scheduled or from
        another :meth:`run_now`), waits for it to end, then runs. Does not
        move the schedule.

        Raises:
            StoreClosedError: :meth:`stop` was called (before or while waiting).
            Exception: whatever ``func`` raised in this run (also logged).
        """
        while True:
            if self._stopped:
                raise StoreClosedError(
                    f"backup scheduler{self._label()} is stopped; run_now() refused"
                )
            task = self._task
            if task is None:
                break
            await asyncio.wait([task])
        task = self._start_run(asyncio.get_running_loop(), scheduled=False)
        # shield: cancelling the caller must not cut the backup half-way.
        error = await asyncio.shield(task)
        if error is not None:
            raise error

    async def stop(self) -> None:
        """Cancel future runs and wait for a run in progress to end. Idempotent.

        The exception of a run in progress is not raised here (it is logged).
        """
        if not self._stopped:
            self._stopped = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            logger.debug(
                "backup scheduler%s stopped after %d runs",
                self._label(),
                self._runs,
                extra=self._fields(),
            )
        while self._task is not None:
            await asyncio.wait([self._task])

    # -- internals ----------------------------------------------------------

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        delay = jittered_delay(self._slot - loop.time(), self._jitter, self._rng)
        self._timer = loop.call_later(delay, self._on_timer)

    def _advance(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        slot = self._slot + self._interval
        if slot <= now:
            missed = math.floor((now - slot) / self._interval) + 1
            slot += missed * self._interval
            logger.warning(
                "backup%s ran past its next due time; skipping %d run(s)",
                self._label(),
                missed,
                extra={**self._fields(), "skipped": missed},
            )
        self._slot = slot

    def _on_timer(self) -> None:
        self._timer = None
        if self._stopped:
            return
        loop = asyncio.get_running_loop()
        if self._task is not None:
            # A run_now() is in progress: the job is running right now, so
            # this due time is covered; go on with the next one.
            logger.debug(
                "backup%s due while a manual run is in progress; skipped",
                self._label(),
                extra=self._fields(),
            )
            self._advance(loop)
            self._arm(loop)
            return
        self._start_run(loop, scheduled=True)

    def _start_run(
        self, loop: asyncio.AbstractEventLoop, *, scheduled: bool
    ) -> asyncio.Task[Exception | None]:
        task = loop.create_task(self._run(scheduled=scheduled))
        self._task = task
        return task

    async def _run(self, *, scheduled: bool) -> Exception | None:
        kind = "scheduled" if scheduled else "manual"
        try:
            error = await self._call(f"{kind} backup", kind=kind)
        except BaseException:
            # Cancelled (loop shutdown) or KeyboardInterrupt/SystemExit: stop
            # scheduling rather than re-arm on a dying loop.
            self._task = None
            raise
        self._task = None
        if scheduled and not self._stopped:
            loop = asyncio.get_running_loop()
            self._advance(loop)
            self._arm(loop)
        return error
