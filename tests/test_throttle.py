"""Tests of wa_session_store.auth.throttle: Throttler and BackupScheduler.

Every coroutine test here runs on a virtual clock (tests/support/clock.py):
the loop's clock jumps to the next timer whenever it would sleep, so a timer
fires at exactly its time, sleeps cost nothing, and a busy machine cannot
make a bound fail. Waits are still on events, with timeouts (in simulated
seconds) that only a bug can reach; a fixed sleep is used only to show that
something does NOT happen.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Callable
from functools import partial

import pytest

from wa_session_store.auth.throttle import BackupScheduler, Throttler, jittered_delay
from wa_session_store.errors import InvalidInputError, InvalidTypeError, StoreClosedError

from .support.clock import virtual_clock_tests

# Float rounding of `start + interval` against the timer's own sum, not timer slack:
# on the virtual clock a timer fires at exactly its time.
EPS = 1e-9
WAIT = 5.0  # upper bound (simulated seconds) for things that should happen "soon"


class Recorder:
    """An async func that records its calls: start/end times, the value seen, concurrency."""

    def __init__(
        self,
        *,
        delay: float = 0.0,
        fail: Callable[[int], bool] | None = None,
        gate: asyncio.Event | None = None,
    ) -> None:
        self.value: object = None
        self.delay = delay
        self.fail = fail
        self.gate = gate
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.seen: list[object] = []
        self.active = 0
        self.max_active = 0
        self._changed = asyncio.Event()

    @property
    def calls(self) -> int:
        """Finished calls, failed ones included."""
        return len(self.ends)

    async def __call__(self) -> None:
        loop = asyncio.get_running_loop()
        number = len(self.starts) + 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        self.starts.append(loop.time())
        self.seen.append(self.value)
        self._changed.set()
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.fail is not None and self.fail(number):
                raise RuntimeError(f"boom {number}")
        finally:
            self.active -= 1
            self.ends.append(loop.time())
            self._changed.set()

    async def wait_until(self, cond: Callable[[], bool], within: float = WAIT) -> None:
        async def waiter() -> None:
            while not cond():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(waiter(), within)

    async def wait_calls(self, n: int, within: float = WAIT) -> None:
        await self.wait_until(lambda: self.calls >= n, within)

    async def wait_started(self, n: int, within: float = WAIT) -> None:
        await self.wait_until(lambda: len(self.starts) >= n, within)


def now() -> float:
    return asyncio.get_running_loop().time()


# --------------------------------------------------------------------------
# Throttler
# --------------------------------------------------------------------------


async def test_leading_run_starts_at_once() -> None:
    rec = Recorder()
    th = Throttler(rec, 0.2, name="s1")
    t0 = now()
    th.trigger()
    # Scheduled synchronously as a task: visible before any await.
    assert th.running
    assert th.pending
    await rec.wait_calls(1)
    assert rec.starts[0] - t0 < 0.5
    assert th.runs == 1
    assert not th.pending
    assert not th.running
    assert th.failures == 0
    await th.aclose()


async def test_burst_coalesced_into_one_trailing_run_that_sees_the_last_value() -> None:
    rec = Recorder()
    interval = 0.3
    th = Throttler(rec, interval)
    rec.value = 0
    th.trigger()
    await rec.wait_calls(1)
    for i in range(1, 1001):
        rec.value = i
        th.trigger()
        if i % 100 == 0:
            await asyncio.sleep(0)  # let the loop turn, as between real events
    burst_end = now()
    assert th.pending
    assert rec.calls == 1  # throttled: nothing ran during the burst
    await rec.wait_calls(2)
    assert rec.seen == [0, 1000]
    assert rec.starts[1] >= rec.starts[0] + interval - EPS
    assert rec.starts[1] >= burst_end
    assert not th.pending
    # Nothing more is owed, so nothing more runs.
    await asyncio.sleep(interval + 0.1)
    assert rec.calls == 2
    assert th.runs == 2
    await th.aclose()


async def test_runs_never_overlap_and_trigger_during_run_schedules_exactly_one_more() -> None:
    gate = asyncio.Event()
    rec = Recorder(gate=gate)
    th = Throttler(rec, 0.05)
    th.trigger()
    await rec.wait_started(1)
    for i in range(5):
        rec.value = i
        th.trigger()
    assert th.running
    assert th.pending
    await asyncio.sleep(0.1)  # past the interval: still no second run while the first runs
    assert len(rec.starts) == 1
    gate.set()
    await rec.wait_calls(2)
    assert rec.seen[1] == 4
    assert rec.starts[1] >= rec.ends[0]
    assert rec.max_active == 1
    await asyncio.sleep(0.15)
    assert rec.calls == 2
    await th.aclose()


async def test_trailing_run_after_slow_run_is_still_throttled_from_its_start() -> None:
    rec = Recorder(delay=0.05)
    interval = 0.25
    th = Throttler(rec, interval)
    th.trigger()
    await rec.wait_started(1)
    th.trigger()  # during the run
    await rec.wait_calls(2)
    # Measured from the START of the previous run, not its end.
    assert rec.starts[1] >= rec.starts[0] + interval - EPS
    assert rec.max_active == 1
    await th.aclose()


async def test_urgent_bypasses_the_interval() -> None:
    rec = Recorder()
    th = Throttler(rec, 30.0)
    th.trigger()
    await rec.wait_calls(1)
    th.trigger()
    assert th.pending
    assert not th.running  # waiting for the 30 s timer
    t0 = now()
    th.trigger(urgent=True)
    assert th.running
    await rec.wait_calls(2, within=2.0)
    assert rec.starts[1] - t0 < 1.0
    assert not th.pending
    await th.aclose()


async def test_urgent_during_a_run_runs_right_after_it() -> None:
    gate = asyncio.Event()
    rec = Recorder(gate=gate)
    th = Throttler(rec, 30.0)
    th.trigger()
    await rec.wait_started(1)
    th.trigger(urgent=True)
    await asyncio.sleep(0.02)
    assert len(rec.starts) == 1  # still no overlap
    gate.set()
    await rec.wait_calls(2, within=2.0)
    assert rec.starts[1] - rec.ends[0] < 1.0
    assert rec.max_active == 1
    await th.aclose()


async def test_failing_run_is_not_raised_stays_pending_and_retries_without_trigger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="wa_session_store")
    rec = Recorder(fail=lambda n: n == 1)
    th = Throttler(rec, 0.1, name="sess-42")
    th.trigger()  # must not raise, now or later
    await rec.wait_calls(1)
    assert th.failures == 1
    assert th.pending
    assert th.runs == 0
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "RuntimeError: boom 1" in errors[0].getMessage()
    assert "sess-42" in errors[0].getMessage()
    assert errors[0].__dict__["op"] == "throttle"
    assert errors[0].__dict__["throttle"] == "sess-42"
    # No trigger: the retry comes on its own (the automatic retry waits at
    # least 1 s when the interval is shorter, to avoid a hot failure loop).
    await rec.wait_calls(2, within=WAIT)
    assert rec.starts[1] >= rec.starts[0] + 1.0 - EPS
    assert th.runs == 1
    assert th.failures == 0
    assert not th.pending
    await th.aclose()


async def test_failed_run_is_retried_by_the_next_trigger_after_the_interval() -> None:
    rec = Recorder(fail=lambda n: n == 1)
    interval = 0.1
    th = Throttler(rec, interval)
    th.trigger()
    await rec.wait_calls(1)
    assert th.pending
    th.trigger()  # within the interval: throttled, retried at start + interval
    await rec.wait_calls(2, within=WAIT)
    assert rec.starts[0] + interval - EPS <= rec.starts[1] < rec.starts[0] + 1.0
    assert th.runs == 1
    assert not th.pending
    await th.aclose()


async def test_a_failing_run_is_retried_exactly_once_per_period_without_triggers() -> None:
    rec = Recorder(fail=lambda n: n <= 5)
    th = Throttler(rec, 0.1)
    th.trigger()
    await rec.wait_calls(6, within=10.0)
    # max(interval, 1 s) after the start of each failed run, no sooner, no later.
    assert rec.starts == [rec.starts[0] + k * 1.0 for k in range(6)]
    assert th.runs == 1
    await asyncio.sleep(10.0)
    assert rec.calls == 6
    await th.aclose()


async def test_with_owed_the_owner_decides_whether_a_failed_run_is_retried() -> None:
    # The throttler keeps no record of what is unsaved: with an owner, the
    # owner's answer is the only one, for the automatic retry, pending and flush.
    owed = True
    rec = Recorder(fail=lambda n: n == 1)
    th = Throttler(rec, 0.1, owed=lambda: owed)
    th.trigger()
    await rec.wait_calls(1)
    assert th.failures == 1
    assert th.pending
    owed = False  # saved by other means, or dropped
    assert not th.pending
    assert "pending=False" in repr(th)
    await asyncio.sleep(5.0)
    assert rec.calls == 1  # no retry
    await th.flush()
    assert rec.calls == 1
    owed = True
    await th.flush()
    assert rec.calls == 2
    assert th.runs == 1
    assert th.failures == 0
    owed = False
    await th.aclose()
    assert rec.calls == 2


async def test_with_owed_a_failed_run_is_retried_once_per_period_while_owed() -> None:
    owed = True
    rec = Recorder(fail=lambda n: True)
    th = Throttler(rec, 0.2, owed=lambda: owed)
    th.trigger()
    await rec.wait_calls(3, within=10.0)
    assert rec.starts == [rec.starts[0] + k * 1.0 for k in range(3)]
    owed = False
    await asyncio.sleep(5.0)
    assert rec.calls == 3
    await th.aclose()


async def test_with_owed_a_due_trailing_run_is_spared_when_nothing_is_owed() -> None:
    owed = True
    rec = Recorder()
    th = Throttler(rec, 1.0, owed=lambda: owed)
    th.trigger()
    await rec.wait_calls(1)
    th.trigger()  # throttled: a timer for the trailing run
    owed = False  # the owner saved it meanwhile
    await asyncio.sleep(2.0)
    assert rec.calls == 1
    await th.aclose()


def test_owed_must_be_callable() -> None:
    with pytest.raises(InvalidTypeError, match="owed must be a callable"):
        Throttler(lambda: None, 1.0, owed=True)  # type: ignore[arg-type]


async def test_consecutive_failures_are_counted_and_reset() -> None:
    fail = True
    rec = Recorder(fail=lambda n: fail)
    th = Throttler(rec, 30.0)
    for expected in (1, 2, 3):
        th.trigger(urgent=True)
        await rec.wait_calls(expected)
        assert th.failures == expected
        assert th.pending
    fail = False
    await th.flush()
    assert th.failures == 0
    assert th.runs == 1
    await th.aclose()


async def test_flush_retries_a_failed_run_now() -> None:
    rec = Recorder(fail=lambda n: n == 1)
    th = Throttler(rec, 30.0)
    th.trigger()
    await rec.wait_calls(1)
    assert th.pending
    t0 = now()
    await th.flush()  # does not wait for the 30 s timer
    assert now() - t0 < 1.0
    assert rec.calls == 2
    assert th.runs == 1
    assert not th.pending
    await th.aclose()


async def test_flush_raises_when_the_run_fails_and_pending_stays_true() -> None:
    fail = True
    rec = Recorder(fail=lambda n: fail)
    th = Throttler(rec, 30.0)
    th.trigger()
    await rec.wait_calls(1)
    with pytest.raises(RuntimeError, match="boom 2"):
        await th.flush()
    assert th.pending
    assert th.failures == 2
    assert th.runs == 0
    fail = False
    await th.flush()
    assert not th.pending
    assert th.runs == 1
    await th.aclose()


async def test_flush_with_nothing_pending_returns_at_once() -> None:
    rec = Recorder()
    th = Throttler(rec, 30.0)
    t0 = now()
    await th.flush()
    assert now() - t0 < 0.1
    assert rec.calls == 0
    th.trigger()
    await rec.wait_calls(1)
    await th.flush()
    assert rec.calls == 1  # nothing owed: no extra run
    await th.aclose()
    assert rec.calls == 1


async def test_flush_waits_for_a_run_in_progress_without_running_again() -> None:
    gate = asyncio.Event()
    rec = Recorder(gate=gate)
    th = Throttler(rec, 30.0)
    th.trigger()
    await rec.wait_started(1)
    flushing = asyncio.ensure_future(th.flush())
    await asyncio.sleep(0.02)
    assert not flushing.done()
    gate.set()
    await asyncio.wait_for(flushing, WAIT)
    assert rec.calls == 1
    await th.aclose()


async def test_flush_after_run_with_triggers_during_it_runs_once_more_now() -> None:
    gate = asyncio.Event()
    rec = Recorder(gate=gate)
    th = Throttler(rec, 30.0)
    th.trigger()
    await rec.wait_started(1)
    rec.value = "latest"
    th.trigger()
    flushing = asyncio.ensure_future(th.flush())
    await asyncio.sleep(0)
    gate.set()
    await asyncio.wait_for(flushing, WAIT)
    assert rec.calls == 2
    assert rec.seen[-1] == "latest"
    assert rec.max_active == 1
    assert not th.pending
    await th.aclose()


async def test_cancelling_flush_does_not_cancel_the_run() -> None:
    gate = asyncio.Event()
    rec = Recorder(gate=gate)
    th = Throttler(rec, 30.0)
    th.trigger()
    await rec.wait_started(1)
    th.trigger()
    flushing = asyncio.ensure_future(th.flush())
    await asyncio.sleep(0.01)
    flushing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flushing
    gate.set()
    await rec.wait_calls(1)
    assert th.runs == 1
    await th.aclose()  # the trigger made during the run is saved on close
    assert th.runs == 2


async def test_aclose_saves_the_pending_trailing_update_at_once_then_refuses() -> None:
    rec = Recorder()
    th = Throttler(rec, 30.0, name="s")
    rec.value = "first"
    th.trigger()
    await rec.wait_calls(1)
    rec.value = "final"
    th.trigger()
    assert th.pending
    t0 = now()
    await th.aclose()
    assert now() - t0 < 1.0  # not after the 30 s interval
    assert rec.seen == ["first", "final"]
    assert th.closed
    assert not th.pending
    with pytest.raises(StoreClosedError, match="closed"):
        th.trigger()
    with pytest.raises(StoreClosedError):
        th.trigger(urgent=True)
    await th.aclose()  # idempotent
    assert rec.calls == 2


async def test_aclose_propagates_failure_but_ends_closed() -> None:
    fail = True
    rec = Recorder(fail=lambda n: fail)
    th = Throttler(rec, 30.0)
    th.trigger()
    await rec.wait_calls(1)
    with pytest.raises(RuntimeError, match="boom"):
        await th.aclose()
    assert th.closed
    assert th.pending
    with pytest.raises(StoreClosedError):
        th.trigger()
    await asyncio.sleep(0.05)
    assert rec.calls == 2  # no retry timer left behind
    await th.aclose()  # idempotent, does not retry
    assert rec.calls == 2
    fail = False
    await th.flush()  # the owner may still retry the final save
    assert not th.pending
    assert th.runs == 1


async def test_aclose_waits_for_a_run_in_progress_and_saves_what_came_during_it() -> None:
    gate = asyncio.Event()
    rec = Recorder(gate=gate)
    th = Throttler(rec, 30.0)
    th.trigger()
    await rec.wait_started(1)
    rec.value = "during"
    th.trigger()
    closing = asyncio.ensure_future(th.aclose())
    await asyncio.sleep(0)
    assert th.closed
    gate.set()
    await asyncio.wait_for(closing, WAIT)
    assert rec.seen[-1] == "during"
    assert rec.calls == 2
    assert rec.max_active == 1


async def test_sync_func_is_supported() -> None:
    values: list[object] = []
    state = {"v": 0}

    def save() -> None:
        values.append(state["v"])

    th = Throttler(save, 30.0)
    th.trigger()
    await th.flush()
    assert values == [0]
    state["v"] = 7
    th.trigger()
    await th.aclose()
    assert values == [0, 7]
    assert th.runs == 2


async def test_sync_func_failure_is_handled_the_same_way() -> None:
    calls: list[int] = []

    def save() -> None:
        calls.append(1)
        raise ValueError("bad row")

    th = Throttler(save, 30.0)
    th.trigger()
    with pytest.raises(ValueError, match="bad row"):
        await th.flush()  # joins the leading run; does not repeat it at once
    assert th.failures == 1
    assert th.pending
    with pytest.raises(ValueError, match="bad row"):
        await th.flush()  # nothing in progress now: runs again
    assert th.failures == 2
    with pytest.raises(ValueError, match="bad row"):
        await th.aclose()


async def test_interval_zero_runs_every_trigger_but_coalesces_during_a_run() -> None:
    rec = Recorder()
    th = Throttler(rec, 0)
    assert th.interval == 0.0
    th.trigger()
    th.trigger()
    th.trigger()  # the run has not started yet: all three are covered by it
    await rec.wait_calls(1)
    assert not th.pending
    t0 = now()
    th.trigger()
    await rec.wait_calls(2, within=2.0)
    assert rec.starts[1] - t0 < 0.5
    # Triggers during a run: exactly one more run, right after it.
    gate = asyncio.Event()
    rec.gate = gate
    th.trigger()
    await rec.wait_started(3)
    for _ in range(10):
        th.trigger()
    rec.gate = None
    gate.set()
    await rec.wait_calls(4, within=2.0)
    await asyncio.sleep(0.05)
    assert rec.calls == 4
    assert rec.max_active == 1
    await th.aclose()


async def test_many_idle_throttlers_hold_timers_not_tasks() -> None:
    saved: list[int] = []
    throttlers = [Throttler(partial(saved.append, i), 30.0, name=f"s{i}") for i in range(1000)]
    for th in throttlers:
        th.trigger()
    await asyncio.gather(*(th.flush() for th in throttlers))
    assert len(saved) == 1000
    for th in throttlers:
        th.trigger()  # throttled: a timer each, no task
    assert all(th.pending and not th.running for th in throttlers)
    assert asyncio.all_tasks() == {asyncio.current_task()}
    await asyncio.gather(*(th.aclose() for th in throttlers))
    assert len(saved) == 2000
    assert all(th.closed and not th.pending for th in throttlers)


async def test_failure_traceback_only_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder(fail=lambda n: True)
    th = Throttler(rec, 30.0)
    caplog.set_level(logging.ERROR, logger="wa_session_store")
    th.trigger()
    await rec.wait_calls(1)
    caplog.set_level(logging.DEBUG, logger="wa_session_store")
    th.trigger(urgent=True)
    await rec.wait_calls(2)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert errors[0].exc_info is None
    assert errors[1].exc_info is not None
    assert "2 in a row" in errors[1].getMessage()
    with pytest.raises(RuntimeError):
        await th.aclose()


async def test_slots_and_repr() -> None:
    th = Throttler(Recorder(), 1.0, name="x")
    assert not hasattr(th, "__dict__")
    assert "x" in repr(th)
    await th.aclose()
    assert "closed" in repr(th)


@pytest.mark.parametrize("interval", [-1, -0.001, math.nan, math.inf, -math.inf])
def test_throttler_rejects_bad_interval(interval: float) -> None:
    with pytest.raises(InvalidInputError, match="finite number of seconds >= 0"):
        Throttler(lambda: None, interval)


@pytest.mark.parametrize("interval", ["5", None, True])
def test_throttler_rejects_non_number_interval(interval: object) -> None:
    with pytest.raises(InvalidTypeError, match="interval must be"):
        Throttler(lambda: None, interval)  # type: ignore[arg-type]


def test_throttler_rejects_non_callable_and_bad_name() -> None:
    with pytest.raises(InvalidTypeError, match="callable"):
        Throttler("save", 1.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match="name"):
        Throttler(lambda: None, 1.0, name=5)  # type: ignore[arg-type]
    # Also the builtin types, for existing except clauses.
    with pytest.raises(TypeError):
        Throttler(None, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="interval"):
        Throttler(lambda: None, -1)


def test_trigger_without_running_loop_raises() -> None:
    th = Throttler(lambda: None, 1.0)
    with pytest.raises(RuntimeError):
        th.trigger()


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_triggers_never_overlap_respect_interval_and_save_last_value(
    seed: int,
) -> None:
    rng = random.Random(seed)
    interval = 0.05
    rec = Recorder()

    async def save() -> None:
        rec.delay = rng.uniform(0.0, 0.03)  # runs sometimes longer than gaps
        await rec()

    th = Throttler(save, interval)
    t0 = last_trigger = now()
    for i in range(rng.randint(40, 80)):
        rec.value = i
        th.trigger()
        last_trigger = now()
        if rng.random() < 0.3:
            continue  # burst: next trigger in the same loop turn
        await asyncio.sleep(rng.uniform(0.0, 0.02))
    final = rec.value
    await rec.wait_until(lambda: not th.pending and not th.running, within=WAIT)
    elapsed = now() - t0
    assert rec.max_active == 1
    assert rec.calls <= elapsed / interval + 2
    for a, b in zip(rec.starts, rec.starts[1:], strict=False):
        assert b - a >= interval - EPS
    for end, start in zip(rec.ends, rec.starts[1:], strict=False):
        assert start >= end
    # A run started after the last trigger and saw the final value.
    assert rec.starts[-1] >= last_trigger
    assert rec.seen[-1] == final
    assert th.failures == 0
    await th.aclose()
    assert rec.calls == th.runs


# --------------------------------------------------------------------------
# BackupScheduler
# --------------------------------------------------------------------------


async def test_backup_first_run_after_initial_delay_then_periodic_without_drift() -> None:
    # Each run takes a third of the interval: if the next due time were
    # measured from the end of a run, the schedule would drift off the grid.
    rec = Recorder(delay=0.03)
    interval, initial = 0.1, 0.2
    bs = BackupScheduler(rec, interval, initial, name="b1")
    t0 = now()
    bs.start()
    nri = bs.next_run_in
    assert nri is not None
    assert nri == pytest.approx(initial, abs=EPS)  # no time passed since start()
    first_due = now() + nri
    await rec.wait_calls(1)
    assert rec.starts[0] - t0 == pytest.approx(initial, abs=EPS)  # exactly when due
    for k in range(2, 6):
        await rec.wait_calls(k)
        for start in rec.starts:
            assert start >= first_due - EPS
        nri = bs.next_run_in
        if nri is not None:  # None if the next run already started (slow machine)
            slots = (now() + nri - first_due) / interval
            assert slots >= rec.calls - EPS
            assert abs(slots - round(slots)) < 0.01  # on the grid: no drift
    # Count over a window: about window / interval runs, never stacked.
    n0, w0 = rec.calls, now()
    await asyncio.sleep(0.5)
    window = now() - w0
    n = rec.calls - n0
    assert 2 <= n <= window / interval + 1
    assert rec.max_active == 1
    await bs.stop()
    assert bs.runs == rec.calls


def test_jittered_delay_stays_within_bounds_and_is_uniform_ish() -> None:
    rng = random.Random(1234)
    delay, jitter = 10.0, 2.0
    values = [jittered_delay(delay, jitter, rng) for _ in range(10_000)]
    assert all(delay - jitter <= v <= delay + jitter for v in values)
    assert min(values) < delay - jitter + 0.05
    assert max(values) > delay + jitter - 0.05
    assert abs(sum(values) / len(values) - delay) < 0.1
    # Clamped at 0 when the jitter reaches below zero.
    small = [jittered_delay(0.5, 2.0, rng) for _ in range(10_000)]
    assert all(0.0 <= v <= 2.5 for v in small)
    assert small.count(0.0) > 1000
    # No jitter: the delay as is.
    assert jittered_delay(3.0, 0.0, rng) == 3.0
    # Same seed, same delays.
    assert [jittered_delay(1.0, 0.5, random.Random(7)) for _ in range(3)] == [
        jittered_delay(1.0, 0.5, random.Random(7)) for _ in range(3)
    ]


async def test_backup_jitter_spreads_first_runs_within_bounds() -> None:
    rng = random.Random(99)
    initial, jitter = 5.0, 1.0
    schedulers = [BackupScheduler(lambda: None, 10.0, initial, jitter, rng=rng) for _ in range(200)]
    for bs in schedulers:
        bs.start()
    delays = [bs.next_run_in for bs in schedulers]
    assert all(d is not None and initial - jitter - EPS <= d <= initial + jitter for d in delays)
    spread = [d for d in delays if d is not None]
    assert max(spread) - min(spread) > 1.0  # not all in the same second
    for bs in schedulers:
        await bs.stop()
        assert bs.next_run_in is None


async def test_backup_jitter_applies_to_every_run_but_does_not_accumulate() -> None:
    rec = Recorder()
    interval, jitter = 0.08, 0.03
    bs = BackupScheduler(rec, interval, 0.0, jitter, rng=random.Random(5))
    t0 = now()
    bs.start()
    await rec.wait_calls(6)
    await bs.stop()
    for k, start in enumerate(rec.starts):
        due = t0 + k * interval
        assert start >= due - jitter - EPS  # never earlier than due - jitter
    assert rec.max_active == 1


async def test_backup_failures_do_not_stop_the_schedule(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="wa_session_store")
    rec = Recorder(fail=lambda n: n in (1, 2))
    bs = BackupScheduler(rec, 0.05, 0.0, name="b2")
    bs.start()
    await rec.wait_calls(2)
    assert bs.failures == 2
    assert bs.runs == 0
    await rec.wait_calls(4)
    assert bs.runs >= 1
    assert bs.failures == 0
    await bs.stop()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2
    assert "RuntimeError: boom 1" in errors[0].getMessage()
    assert errors[0].__dict__["op"] == "backup"
    assert errors[0].__dict__["scheduler"] == "b2"


async def test_run_now_waits_for_a_scheduled_run_and_never_overlaps() -> None:
    gate = asyncio.Event()
    rec = Recorder(gate=gate)
    bs = BackupScheduler(rec, 0.05, 0.0)
    bs.start()
    await rec.wait_started(1)
    assert bs.running
    manual = asyncio.ensure_future(bs.run_now())
    await asyncio.sleep(0.03)
    assert len(rec.starts) == 1  # run_now is waiting for the scheduled run
    assert not manual.done()
    gate.set()
    await asyncio.wait_for(manual, WAIT)
    assert rec.calls >= 2
    await rec.wait_calls(4)  # the schedule goes on after run_now
    await bs.stop()
    assert rec.max_active == 1
    for end, start in zip(rec.ends, rec.starts[1:], strict=False):
        assert start >= end


async def test_run_now_propagates_its_exception_and_works_before_start() -> None:
    fail = True
    rec = Recorder(fail=lambda n: fail)
    bs = BackupScheduler(rec, 10.0, 10.0)
    with pytest.raises(RuntimeError, match="boom 1"):
        await bs.run_now()
    assert bs.failures == 1
    fail = False
    await bs.run_now()
    assert bs.runs == 1
    assert bs.failures == 0
    assert bs.next_run_in is None  # never started
    await bs.stop()


async def test_run_longer_than_interval_does_not_stack(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="wa_session_store")
    rec = Recorder(delay=0.12)
    interval = 0.05
    bs = BackupScheduler(rec, interval, 0.0)
    t0 = now()
    bs.start()
    await rec.wait_calls(3)
    await bs.stop()
    elapsed = now() - t0
    assert rec.max_active == 1
    assert rec.calls <= elapsed / 0.12 + 1
    for end, start in zip(rec.ends, rec.starts[1:], strict=False):
        assert start >= end
    assert any("skipping" in r.getMessage() for r in caplog.records)


async def test_stop_cancels_future_runs_and_waits_for_the_current_one() -> None:
    gate = asyncio.Event()
    rec = Recorder(gate=gate)
    bs = BackupScheduler(rec, 0.05, 0.0)
    bs.start()
    await rec.wait_started(1)
    stopping = asyncio.ensure_future(bs.stop())
    await asyncio.sleep(0.02)
    assert not stopping.done()  # waits for the run in progress
    gate.set()
    await asyncio.wait_for(stopping, WAIT)
    assert rec.calls == 1
    assert bs.next_run_in is None
    await asyncio.sleep(0.2)
    assert rec.calls == 1
    await bs.stop()  # idempotent
    assert bs.stopped


async def test_stop_is_final() -> None:
    bs = BackupScheduler(lambda: None, 1.0, 1.0)
    bs.start()
    bs.start()  # idempotent while started
    await bs.stop()
    with pytest.raises(StoreClosedError, match="stopped"):
        bs.start()
    with pytest.raises(StoreClosedError):
        await bs.run_now()


async def test_start_is_idempotent() -> None:
    rec = Recorder()
    bs = BackupScheduler(rec, 0.1, 0.05)
    bs.start()
    first = bs.next_run_in
    bs.start()
    second = bs.next_run_in
    assert first is not None
    assert second is not None
    assert second <= first
    await rec.wait_calls(1)
    await asyncio.sleep(0.03)
    assert rec.calls == 1  # one timer, not two
    await bs.stop()


async def test_backup_sync_func_supported() -> None:
    done = asyncio.Event()
    bs = BackupScheduler(done.set, 1.0, 0.0)
    bs.start()
    await asyncio.wait_for(done.wait(), WAIT)
    await bs.stop()
    assert bs.runs == 1
    assert not hasattr(bs, "__dict__")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"interval": 0}, "interval must be a finite number of seconds > 0"),
        ({"interval": -1}, "interval must be"),
        ({"interval": math.nan}, "interval must be"),
        ({"interval": math.inf}, "interval must be"),
        ({"initial_delay": -0.1}, "initial_delay must be a finite number of seconds >= 0"),
        ({"initial_delay": math.inf}, "initial_delay must be"),
        ({"jitter": -1}, "jitter must be a finite number of seconds >= 0"),
        ({"jitter": 300.0}, "jitter must be less than interval"),
        ({"interval": 1.0, "jitter": 1.5}, "jitter must be less than interval"),
    ],
)
def test_backup_validation(kwargs: dict[str, float], match: str) -> None:
    args = {"interval": 300.0, "initial_delay": 10.0, "jitter": 0.0, **kwargs}
    with pytest.raises(InvalidInputError, match=match):
        BackupScheduler(lambda: None, args["interval"], args["initial_delay"], args["jitter"])


def test_backup_validation_types() -> None:
    with pytest.raises(InvalidTypeError, match="callable"):
        BackupScheduler(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match="interval"):
        BackupScheduler(lambda: None, "300")  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match="name"):
        BackupScheduler(lambda: None, name=b"x")  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match="rng"):
        BackupScheduler(lambda: None, rng=1)  # type: ignore[arg-type]


def test_backup_start_without_running_loop_raises() -> None:
    bs = BackupScheduler(lambda: None, 1.0)
    with pytest.raises(RuntimeError):
        bs.start()


# Last, so that it sees every test above.
virtual_clock_tests(globals())
