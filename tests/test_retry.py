"""RetryPolicy on its own: which errors are retried, how long it waits, what it reports."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from wa_session_store import (
    AttemptTimeoutError,
    RetryDetails,
    RetryPolicy,
    StoreUnavailableError,
)


class Flaky(Exception):
    pass


def _script(*outcomes: object) -> tuple[list[float], object]:
    """An attempt that raises or returns the given outcomes in turn, recording its timeouts."""
    timeouts: list[float] = []
    queue = list(outcomes)

    async def attempt(timeout: float) -> object:
        timeouts.append(timeout)
        outcome = queue.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return timeouts, attempt


def transient(exc: BaseException) -> bool:
    return isinstance(exc, Flaky)


async def test_success_at_once_makes_one_attempt() -> None:
    timeouts, attempt = _script("ok")
    assert await RetryPolicy().call("op", "s", attempt, is_transient=transient) == "ok"
    assert timeouts == [10.0]


async def test_waits_grow_by_backoff_and_hooks_see_each_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="wa_session_store")
    retries: list[RetryDetails] = []
    policy = RetryPolicy(attempts=4, timeout=1.0, backoff=0.05)
    _, attempt = _script(Flaky("a"), Flaky("b"), Flaky("c"), "ok")
    started = time.monotonic()
    result = await policy.call(
        "save_creds", "s", attempt, is_transient=transient, on_retry=retries.append
    )
    elapsed = time.monotonic() - started
    assert result == "ok"
    assert [r.attempt for r in retries] == [1, 2, 3]
    assert [r.wait for r in retries] == pytest.approx([0.05, 0.10, 0.15])
    assert all(r.operation == "save_creds" and r.attempts == 4 for r in retries)
    assert str(retries[1].cause) == "b"
    assert elapsed >= 0.3
    messages = [r.getMessage() for r in caplog.records]
    assert "attempt 3/4 failed for s: save_creds: Flaky: c; retrying in 0.2s" in messages
    assert "session s saved (attempt 4)" in messages


async def test_gives_up_with_the_last_cause(caplog: pytest.LogCaptureFixture) -> None:
    giveups: list[RetryDetails] = []
    policy = RetryPolicy(attempts=3, timeout=1.0, backoff=0.01)
    _, attempt = _script(Flaky("a"), AttemptTimeoutError(1.0), Flaky("last"))
    with pytest.raises(StoreUnavailableError) as info:
        await policy.call(
            "get_keys", "s", attempt, is_transient=transient, on_giveup=giveups.append
        )
    error = info.value
    assert (error.operation, error.session_id, error.attempts) == ("get_keys", "s", 3)
    assert str(error.__cause__) == "last"
    assert "after 3 attempts" in str(error)
    assert [(g.attempt, g.wait) for g in giveups] == [(3, 0.0)]
    assert any(
        r.levelname == "ERROR" and "giving up on s after 3 attempts" in r.getMessage()
        for r in caplog.records
    )


async def test_a_single_attempt_policy_gives_up_at_once() -> None:
    _, attempt = _script(Flaky("a"))
    with pytest.raises(StoreUnavailableError, match="after 1 attempt "):
        await RetryPolicy(attempts=1).call("op", None, attempt, is_transient=transient)


async def test_permanent_errors_are_not_retried() -> None:
    timeouts, attempt = _script(Flaky("a"), ValueError("bad"), "never")
    with pytest.raises(ValueError, match="bad"):
        await RetryPolicy(backoff=0.01).call("op", "s", attempt, is_transient=transient)
    assert len(timeouts) == 2


async def test_the_deadline_bounds_the_whole_call() -> None:
    policy = RetryPolicy(attempts=10, timeout=5.0, backoff=0.2, deadline=0.5)
    timeouts, attempt = _script(*[Flaky(str(n)) for n in range(10)])
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError):
        await policy.call("op", "s", attempt, is_transient=transient)
    assert time.monotonic() - started < 0.5 + 0.1
    assert all(t <= 0.5 for t in timeouts)  # no attempt may outlive the deadline
    assert len(timeouts) < 10


async def test_a_failing_hook_is_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    def broken(details: RetryDetails) -> None:
        raise RuntimeError("hook bug")

    _, attempt = _script(Flaky("a"), "ok")
    policy = RetryPolicy(backoff=0.01)
    assert await policy.call("op", "s", attempt, is_transient=transient, on_retry=broken) == "ok"
    assert any("retry hook" in r.getMessage() for r in caplog.records)


def test_budget() -> None:
    assert RetryPolicy().budget == 36.0  # 3 x 10 s + 2 s + 4 s: the incident's numbers
    assert RetryPolicy(attempts=5, timeout=1, backoff=10, max_backoff=15).budget == 5 + 10 + 15 * 3
    assert RetryPolicy(deadline=7).budget == 7


async def test_the_first_attempt_costs_no_retry_machinery() -> None:
    """A call that succeeds at once must stay cheap: most calls do."""
    _, attempt = _script(*["ok"] * 2000)
    policy = RetryPolicy()

    async def bare() -> None:
        for _ in range(1000):
            await attempt(10.0)

    async def wrapped() -> None:
        for _ in range(1000):
            await policy.call("op", "s", attempt, is_transient=transient)

    t0 = time.perf_counter()
    await bare()
    t1 = time.perf_counter()
    await wrapped()
    t2 = time.perf_counter()
    # Behaviour, not a benchmark: generous, only catches a return of per-call machinery.
    assert (t2 - t1) < (t1 - t0) * 20 + 0.05
    assert asyncio.get_running_loop() is not None
