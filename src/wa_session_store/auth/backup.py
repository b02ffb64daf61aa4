"""Periodic backups with jitter: :class:`BackupScheduler` (importable from ``throttle`` too).

It runs a job every few minutes, with jitter so that a process holding many
sessions does not back them all up in the same second, on the event loop's
timers rather than a long-lived task per instance.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Callable

from ..errors import InvalidInputError, InvalidTypeError, StoreClosedError
from .runner import Runner, check_seconds

__all__ = ["BackupScheduler", "jittered_delay"]

logger = logging.getLogger("wa_session_store")


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


class BackupScheduler(Runner):
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
        self._initial_delay = check_seconds("initial_delay", initial_delay, allow_zero=True)
        self._jitter = check_seconds("jitter", jitter, allow_zero=True)
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
        await self._outcome(self._start_run(asyncio.get_running_loop(), scheduled=False))

    async def stop(self) -> None:
        """Cancel future runs and wait for a run in progress to end. Idempotent.

        The exception of a run in progress is not raised here (it is logged).
        """
        if not self._stopped:
            self._stopped = True
            self._cancel_timer()
            logger.debug(
                "backup scheduler%s stopped after %d runs",
                self._label(),
                self._runs,
                extra=self._fields(),
            )
        await self._settled()

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
        finally:
            # Cancelled (loop shutdown) or KeyboardInterrupt/SystemExit
            # propagate: stop scheduling rather than re-arm on a dying loop.
            self._task = None
        if scheduled and not self._stopped:
            loop = asyncio.get_running_loop()
            self._advance(loop)
            self._arm(loop)
        return error
