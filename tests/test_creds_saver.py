"""The creds-save pipeline (creds_saver.py) as an auth state uses it.

The timing tests run on a virtual clock (tests/support/clock.py): a saver on
a store without real I/O runs minutes of simulated time in milliseconds, and
a busy machine cannot move a timer.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Mapping
from typing import Any, cast

import pytest

from wa_session_store import CredsConflictError, MemoryStore, close_all, use_auth_state
from wa_session_store.auth.creds_saver import CredsSaver
from wa_session_store.backends.lease import Lease

from .support.clock import on_virtual_clock


async def test_a_forgotten_auth_state_with_a_save_owed_is_still_closed_and_saved() -> None:
    # The weak registries behind close_all() and the sync facade's exit hook
    # must still find an auth state nobody references while a save is owed.
    async with MemoryStore() as store:
        auth = await use_auth_state(store, "bot", throttle=60, backup_interval=None, urgent=None)
        await auth.save_creds({"n": 0})
        auth.creds_updated({"n": 1})  # held back by the throttle
        del auth
        gc.collect()
        assert await close_all() == {}
        assert await store.load_creds("bot") == {"n": 1}


class FlakyStore:
    """The one store call a saver makes, failing while ``down``; records when it was called."""

    kind = "flaky"

    def __init__(self) -> None:
        self.down = False
        self.calls: list[float] = []
        self.saved: dict[str, Any] | None = None

    async def save_creds(self, session_id: str, creds: Mapping[str, Any], **_: object) -> None:
        self.calls.append(asyncio.get_running_loop().time())
        if self.down:
            raise OSError("database away")
        self.saved = dict(creds)


class LostLease:
    """What the saver reads of a lease replaced by another owner."""

    lost = True


def saver(
    store: FlakyStore,
    *,
    throttle: float,
    backup_interval: float | None = None,
    initial_delay: float = 0.0,
    lease: object = None,
) -> CredsSaver:
    return CredsSaver(
        cast(Any, store),
        "s1",
        {"n": 0},
        throttle=throttle,
        backup_interval=backup_interval,
        initial_delay=initial_delay,
        backup_jitter=0.0,
        urgent=None,
        lease=cast(Lease | None, lease),
    )


@on_virtual_clock
async def test_a_failed_save_is_saved_again_once_per_period_until_it_lands() -> None:
    store = FlakyStore()
    for throttle, period in ((0.1, 1.0), (5.0, 5.0)):  # the period: max(throttle, 1 s)
        store.calls.clear()
        store.down = True
        s = saver(store, throttle=throttle)
        s.changed({"n": 1})  # leading edge: saved at once, and fails
        await asyncio.sleep(4 * period + period / 2)
        assert s.pending
        # Exactly one save per period, no more (the store's RetryPolicy is
        # the only retry inside one save; these are new saves of what is owed).
        first = store.calls[0]
        assert store.calls == [first + k * period for k in range(5)]
        assert s.throttler.failures == 5
        store.down = False
        await asyncio.sleep(period)
        assert not s.pending
        assert store.saved == {"n": 1}
        assert len(store.calls) == 6
        await asyncio.sleep(10 * period)
        assert len(store.calls) == 6  # saved: nothing more is owed
        await s.aclose()


@on_virtual_clock
async def test_a_change_during_a_failed_save_is_saved_at_the_next_interval() -> None:
    store = FlakyStore()
    store.down = True
    s = saver(store, throttle=0.1)
    s.changed({"n": 1})
    s.changed({"n": 2})  # before the failed save ran: covered by it
    await asyncio.sleep(0.05)
    s.changed({"n": 3})  # a trigger after the failure: throttled, not the 1 s retry
    store.down = False
    await asyncio.sleep(0.1)
    assert store.calls == [store.calls[0], store.calls[0] + 0.1]
    assert store.saved == {"n": 3}
    assert not s.pending
    await s.aclose()


@on_virtual_clock
async def test_a_failed_save_whose_change_was_dropped_is_not_saved_again() -> None:
    # What a lost lease does: the pending change belongs to a replaced owner.
    # The throttler asks the saver whether anything is owed; it keeps no
    # record of the failure of its own that would run again.
    store = FlakyStore()
    store.down = True
    s = saver(store, throttle=0.1)
    s.changed({"n": 1})
    await asyncio.sleep(0.5)
    assert s.throttler.pending
    s.drop()
    assert not s.pending
    assert not s.throttler.pending
    runs = s.throttler.runs
    await asyncio.sleep(10.0)
    assert len(store.calls) == 1
    assert s.throttler.runs == runs  # no run, not even one that saves nothing
    await s.flush()
    await s.aclose()
    assert len(store.calls) == 1


@on_virtual_clock
async def test_changes_after_the_lease_is_lost_are_not_saved_and_do_not_spin() -> None:
    store = FlakyStore()
    s = saver(store, throttle=0.0, lease=LostLease())
    s.changed({"n": 1})
    await asyncio.sleep(60.0)
    assert store.calls == []
    assert s.pending  # unsaved, and never saved: it belongs to another owner
    assert not s.throttler.pending
    assert s.throttler.runs == 1  # the leading run found nothing to save; nothing more ran
    await s.aclose()
    assert store.calls == []


@on_virtual_clock
async def test_the_backup_saves_what_a_failed_save_left_and_nothing_else() -> None:
    store = FlakyStore()
    store.down = True
    s = saver(store, throttle=30.0, backup_interval=2.0, initial_delay=0.5)
    s.start()
    t0 = asyncio.get_running_loop().time()
    s.changed({"n": 1})  # fails at once; the throttle's own retry is 30 s away
    await asyncio.sleep(0.1)
    assert store.calls == [t0]
    store.down = False
    await asyncio.sleep(0.5)
    assert store.calls == [t0, t0 + 0.5]  # the first backup saved it
    assert not s.pending
    await asyncio.sleep(60.0)
    assert len(store.calls) == 2  # later backups and the 30 s retry: nothing owed
    await s.stop_backups()
    await s.aclose()


@on_virtual_clock
async def test_a_failed_backup_save_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    store = FlakyStore()
    store.down = True
    s = saver(store, throttle=30.0, backup_interval=2.0, initial_delay=0.5)
    s.start()
    s.changed({"n": 1})  # fails at once
    await asyncio.sleep(0.1)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="wa_session_store"):
        await asyncio.sleep(0.5)  # the first backup saves it again, and fails again
    assert len(store.calls) == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert s.pending
    store.down = False
    await s.stop_backups()
    await s.aclose()


# -- a save another process's fast clock refused ------------------------------------


def _hosts() -> tuple[MemoryStore, MemoryStore]:
    """Two processes on one database; the first one's wall clock runs 60 s ahead."""
    fast, store = MemoryStore(), MemoryStore()
    store._sessions = fast._sessions
    fast._clock.now = lambda: time.time_ns() + 60 * 10**9
    return fast, store


async def test_a_save_refused_for_another_host_s_fast_clock_is_made_again_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fast, store = _hosts()
    async with fast, store:
        auth = await use_auth_state(store, "bot", throttle=60, backup_interval=None)
        await fast.save_creds("bot", {"by": "fast"})  # after this auth state loaded
        # Urgent: a barrier waits for it, which must not wait a throttle period.
        await auth.save_creds({"by": "auth", "nextPreKeyId": 2})
        assert not auth.pending
        assert await fast.load_creds("bot") == {"by": "auth", "nextPreKeyId": 2}
        await fast.save_creds("bot", {"by": "fast", "n": 2})
        auth.creds_updated({"by": "auth", "n": 3})  # throttled: the trailing save
        await auth.flush()
        assert await fast.load_creds("bot") == {"by": "auth", "n": 3}
        await auth.aclose()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "did not land" in warnings[0].getMessage()


async def test_a_save_a_fast_clock_keeps_refusing_stays_pending_and_says_so() -> None:
    fast, store = _hosts()
    real_write = store._write_creds
    racing = True

    async def raced_by_the_fast_host(sid: str, blob: bytes, version: int, timeout: float) -> bool:
        # The fast host saves just before each of this host's writes arrives.
        if racing:
            await fast.save_creds(sid, {"by": "fast", "at": time.monotonic()})
        return await real_write(sid, blob, version, timeout)

    store._write_creds = raced_by_the_fast_host  # type: ignore[method-assign]
    async with fast, store:
        auth = await use_auth_state(store, "bot", throttle=60, backup_interval=None)
        with pytest.raises(CredsConflictError):
            await auth.save_creds({"by": "auth"})
        assert auth.pending
        racing = False
        await auth.flush()
        assert not auth.pending
        assert await fast.load_creds("bot") == {"by": "auth"}
        await auth.aclose()
