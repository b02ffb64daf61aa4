"""Retries with real timeouts and growing backoff, built on tenacity.

The defaults are the values that fixed the production incident this library
was written after: 3 attempts, 10 s for each, waits of 2 s, 4 s, ... between
them. Only errors that a backend classifies as transient are retried; every
other error fails at once. What a call logs and which hooks it calls on the
way is :mod:`~wa_session_store.store.retry_report`'s.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_incrementing,
    wait_random,
)
from tenacity.stop import stop_base

from ..errors import InvalidInputError, shown
from .retry_report import CallReport, RetryHook

__all__ = ["AttemptTimeoutError", "RetryPolicy", "within"]

T = TypeVar("T")


#: The most attempts a policy may make; more would only hide an outage.
MAX_ATTEMPTS = 1000


def finite(value: float) -> bool:
    """Whether ``value`` (an int or a float) is a finite float; never raises.

    An int too big for a float (``10**400``) is not finite: it cannot be used
    as seconds, and ``math.isfinite`` would raise ``OverflowError`` on it.
    """
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


class AttemptTimeoutError(TimeoutError):
    """One attempt ran past its timeout (always retried while attempts remain)."""

    __module__ = "wa_session_store"

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(f"attempt timed out after {timeout:.1f}s")


async def within(awaitable: Awaitable[T], timeout: float) -> T:
    """Await ``awaitable`` for at most ``timeout`` seconds, else :class:`AttemptTimeoutError`.

    Unlike ``asyncio.wait_for`` before Python 3.12, a cancellation that arrives
    in the same loop iteration as the result is never swallowed: the caller is
    cancelled, and the result is dropped. (``wait_for`` returned the result
    and the cancellation was lost, so a task told to stop went on running.)
    """
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved: the caller gets the cancellation
        raise
    if not done:
        task.cancel()
        await asyncio.wait({task})
        if not task.cancelled():
            task.exception()
        raise AttemptTimeoutError(timeout)
    return task.result()


def cancel_swallowed(before: int) -> bool:
    """Whether the current task was cancelled since it had ``before`` pending
    cancellations (``Task.cancelling()``), although no CancelledError reached it.

    Some awaits (``asyncio.wait_for`` before 3.12, which psycopg-pool uses)
    drop a cancellation that arrives together with their result. Always
    False on Python 3.10, which cannot tell.
    """
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return cancelling is not None and cancelling() > before


def cancellations() -> int:
    """The current task's pending cancellations (0 on Python 3.10); see :func:`cancel_swallowed`."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return int(cancelling()) if cancelling is not None else 0


def retried(exc: BaseException, is_transient: Callable[[BaseException], bool]) -> bool:
    """Whether a policy retries an attempt that failed with ``exc``: a timeout of
    the attempt, or an error the backend's ``is_transient`` calls transient."""
    return isinstance(exc, AttemptTimeoutError) or is_transient(exc)


@dataclass(frozen=True)
class RetryPolicy:
    """How a store retries a failed call.

    Args:
        attempts: attempts in all, the first included (default 3, at least 1).
        timeout: seconds one attempt may take, connection wait included
            (default 10.0). The attempt is abandoned when it runs out, even if
            the network silently drops packets.
        backoff: the wait after attempt *n* is ``backoff * n`` seconds
            (default 2.0: 2 s, 4 s, 6 s, ...).
        max_backoff: cap of one wait (default 30.0).
        jitter: up to this many random seconds added to each wait (default 0.0).
        deadline: optional bound of the whole call in seconds, waits included;
            no attempt starts that could not finish before it (default None).
            With many ``attempts`` it sets the budget by time rather than by
            count, as :meth:`failover` does.

    A call never takes longer than ``attempts * timeout`` plus the waits (and
    never longer than ``deadline`` when one is set), plus a small margin.

    Raises:
        InvalidInputError: a value out of range.
    """

    attempts: int = 3
    timeout: float = 10.0
    backoff: float = 2.0
    max_backoff: float = 30.0
    jitter: float = 0.0
    deadline: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise InvalidInputError(f"attempts must be an int >= 1, not {shown(self.attempts)}")
        if not 1 <= self.attempts <= MAX_ATTEMPTS:
            raise InvalidInputError(
                f"attempts must be from 1 to {MAX_ATTEMPTS:,}, not {shown(self.attempts)}"
            )
        for name in ("timeout", "backoff", "max_backoff", "jitter"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise InvalidInputError(f"{name} must be a number, not {shown(value)}")
            if not finite(value) or value < 0 or (name == "timeout" and value == 0):
                raise InvalidInputError(
                    f"{name} must be a finite number {'> 0' if name == 'timeout' else '>= 0'}, "
                    f"not {shown(value)}"
                )
        if self.deadline is not None and (
            isinstance(self.deadline, bool)
            or not isinstance(self.deadline, (int, float))
            or not finite(self.deadline)
            or self.deadline <= 0
        ):
            raise InvalidInputError(
                f"deadline must be None or a number > 0, not {shown(self.deadline)}"
            )

    @classmethod
    def failover(cls, deadline: float = 150.0, *, timeout: float = 10.0) -> RetryPolicy:
        """A policy that rides through a managed failover or a maintenance restart.

        The default policy gives up after about 36 s (3 attempts of 10 s,
        waits of 2 s and 4 s), while a managed failover (RDS, Cloud SQL,
        Patroni) takes 30 to 120 s. This one keeps trying until ``deadline``:
        attempts of at most ``timeout`` seconds, waits of 1 s, 2 s, then 3 s
        at most, each plus up to 1 s of jitter. Short steps because a
        failover ends all at once (the standby is promoted): the first
        attempt after it lands at most one step (4 s) late. The jitter keeps
        the bots of one database from retrying in step. Use it as a store's
        policy (``PostgresStore(url, retry=RetryPolicy.failover())``), with
        a multi-host URL and ``target_session_attrs=read-write``.

        While it waits, nothing is lost and nothing leaves early: a creds
        save stays pending, a barrier holds its frame. Past the deadline the
        call raises :class:`StoreUnavailableError` as any policy does.

        Args:
            deadline: seconds a call may take in all, waits included
                (default 150.0: the longest failover the providers document,
                120 s, plus an attempt's worth of margin).
            timeout: seconds one attempt may take (default 10.0).

        Raises:
            InvalidInputError: a ``deadline`` or ``timeout`` out of range.
        """
        return cls(
            attempts=MAX_ATTEMPTS,
            timeout=timeout,
            backoff=1.0,
            max_backoff=3.0,
            jitter=1.0,
            deadline=deadline,
        )

    def wait_before(self, attempt: int) -> float:
        """The wait, before jitter, after failed attempt number ``attempt``."""
        return float(min(self.backoff * attempt, self.max_backoff))

    @property
    def budget(self) -> float:
        """The longest a call may block, waits included (without jitter)."""
        total = self.attempts * self.timeout + sum(
            self.wait_before(n) for n in range(1, self.attempts)
        )
        return min(total, self.deadline) if self.deadline is not None else total

    async def call(
        self,
        operation: str,
        session_id: str | None,
        attempt: Callable[[float], Awaitable[T]],
        *,
        is_transient: Callable[[BaseException], bool],
        on_retry: RetryHook | None = None,
        on_giveup: RetryHook | None = None,
    ) -> T:
        """Run ``attempt(timeout)`` until it succeeds or the policy gives up.

        ``attempt`` receives the seconds it may take and must enforce them,
        raising :class:`AttemptTimeoutError` when they run out.

        Raises:
            StoreUnavailableError: every attempt failed with a transient
                error (the last one is ``__cause__``).
            Exception: a non-transient error, as ``attempt`` raised it.
        """
        started = time.monotonic()
        report = CallReport(self.attempts, operation, session_id, started, on_retry, on_giveup)
        # The first attempt runs bare: nearly every call succeeds at once, and
        # tenacity's machinery would cost tens of microseconds on each one.
        try:
            result = await attempt(self._attempt_timeout(started))
        except Exception as exc:
            if not retried(exc, is_transient):
                raise
            failure = exc
        else:
            report.succeeded(1)
            return result
        return await self._retry(report, attempt, failure, is_transient)

    def _attempt_timeout(self, started: float) -> float:
        if self.deadline is None:
            return self.timeout
        return max(0.001, min(self.timeout, self.deadline - (time.monotonic() - started)))

    async def _retry(
        self,
        report: CallReport,
        attempt: Callable[[float], Awaitable[T]],
        failure: Exception,
        is_transient: Callable[[BaseException], bool],
    ) -> T:
        """Attempts 2 and later, on tenacity, after the first one failed with ``failure``."""
        transient = partial(retried, is_transient=is_transient)
        wait = self.wait_before(1) + random.uniform(0, self.jitter)
        elapsed = time.monotonic() - report.started
        if self.attempts == 1 or (self.deadline is not None and elapsed + wait >= self.deadline):
            report.give_up(1, failure)
        report.retrying(1, failure, wait)
        await asyncio.sleep(wait)

        def before_sleep(state: RetryCallState) -> None:
            assert state.outcome is not None
            cause = state.outcome.exception()
            assert cause is not None
            report.retrying(state.attempt_number + 1, cause, state.upcoming_sleep)

        stop: stop_base = stop_after_attempt(self.attempts - 1)
        if self.deadline is not None:
            stop = stop | stop_before_delay(self.deadline - (time.monotonic() - report.started))
        retrying = AsyncRetrying(
            stop=stop,
            # Tenacity counts from 1 again: its attempt n is the policy's n + 1.
            wait=wait_incrementing(2 * self.backoff, self.backoff, self.max_backoff)
            + wait_random(0, self.jitter),
            retry=retry_if_exception(transient),
            before_sleep=before_sleep,
            reraise=True,
        )
        number = 1
        try:
            async for try_ in retrying:
                with try_:
                    number = try_.retry_state.attempt_number + 1
                    result = await attempt(self._attempt_timeout(report.started))
        except Exception as exc:
            if not transient(exc):
                raise
            report.give_up(number, exc)
        report.succeeded(number)
        return result
