"""Retries with real timeouts and growing backoff, built on tenacity.

The defaults are the values that fixed the production incident this library
was written after: 3 attempts, 10 s for each, waits of 2 s, 4 s, ... between
them. Only errors that a backend classifies as transient are retried; every
other error fails at once.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

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

from .errors import InvalidInputError, StoreUnavailableError, describe_error

__all__ = ["AttemptTimeoutError", "RetryDetails", "RetryHook", "RetryPolicy"]

logger = logging.getLogger("wa_session_store")
T = TypeVar("T")


class AttemptTimeoutError(TimeoutError):
    """One attempt ran past its timeout (always retried while attempts remain)."""

    __module__ = "wa_session_store"

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(f"attempt timed out after {timeout:.1f}s")


@dataclass(frozen=True, slots=True)
class RetryDetails:
    """What an ``on_retry`` / ``on_giveup`` hook receives.

    Attributes:
        operation: the store method, e.g. ``"save_creds"``.
        session_id: the session concerned, or ``None`` for store-wide calls.
        attempt: the number of the attempt that just failed (1-based).
        attempts: the most attempts the policy allows.
        elapsed: seconds since the call started.
        wait: seconds until the next attempt (0.0 when giving up).
        cause: the exception that failed the attempt.
    """

    operation: str
    session_id: str | None
    attempt: int
    attempts: int
    elapsed: float
    wait: float
    cause: BaseException


class RetryHook(Protocol):
    """A callable receiving :class:`RetryDetails`; exceptions it raises are logged and ignored."""

    def __call__(self, details: RetryDetails, /) -> None: ...


_PAST = {
    "open": "opened",
    "load_creds": "loaded",
    "save_creds": "saved",
    "get_keys": "keys read",
    "set_keys": "keys written",
    "clear_keys": "keys cleared",
    "delete_session": "deleted",
    "list_sessions": "sessions listed",
}


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
            raise InvalidInputError(f"attempts must be an int >= 1, not {self.attempts!r}")
        if self.attempts < 1:
            raise InvalidInputError(f"attempts must be >= 1, not {self.attempts}")
        for name in ("timeout", "backoff", "max_backoff", "jitter"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise InvalidInputError(f"{name} must be a number, not {value!r}")
            if not math.isfinite(value) or value < 0 or (name == "timeout" and value == 0):
                raise InvalidInputError(
                    f"{name} must be a finite number {'> 0' if name == 'timeout' else '>= 0'}, "
                    f"not {value!r}"
                )
        if self.deadline is not None and (
            not isinstance(self.deadline, (int, float))
            or not math.isfinite(self.deadline)
            or self.deadline <= 0
        ):
            raise InvalidInputError(f"deadline must be None or a number > 0, not {self.deadline!r}")

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
        target = session_id if session_id is not None else "the store"
        fields = {"session_id": session_id, "op": operation, "attempts": self.attempts}

        def transient(exc: BaseException) -> bool:
            return isinstance(exc, AttemptTimeoutError) or is_transient(exc)

        def before_sleep(state: RetryCallState) -> None:
            assert state.outcome is not None
            cause = state.outcome.exception()
            assert cause is not None
            wait = state.upcoming_sleep
            details = RetryDetails(
                operation,
                session_id,
                state.attempt_number,
                self.attempts,
                time.monotonic() - started,
                wait,
                cause,
            )
            logger.warning(
                "attempt %d/%d failed for %s: %s: %s; retrying in %.1fs",
                state.attempt_number,
                self.attempts,
                target,
                operation,
                describe_error(cause),
                wait,
                extra={**fields, "attempt": state.attempt_number, "elapsed": details.elapsed},
            )
            _call_hook(on_retry, details)

        stop: stop_base = stop_after_attempt(self.attempts)
        if self.deadline is not None:
            stop = stop | stop_before_delay(self.deadline)
        retrying = AsyncRetrying(
            stop=stop,
            wait=wait_incrementing(self.backoff, self.backoff, self.max_backoff)
            + wait_random(0, self.jitter),
            retry=retry_if_exception(transient),
            before_sleep=before_sleep,
            reraise=True,
        )
        number = 0
        try:
            async for try_ in retrying:
                with try_:
                    number = try_.retry_state.attempt_number
                    timeout = self.timeout
                    if self.deadline is not None:
                        timeout = max(
                            0.001, min(timeout, self.deadline - (time.monotonic() - started))
                        )
                    result = await attempt(timeout)
        except Exception as exc:
            if not transient(exc):
                raise
            elapsed = time.monotonic() - started
            logger.error(
                "giving up on %s after %d attempts: %s: %s",
                target,
                number,
                operation,
                describe_error(exc),
                extra={**fields, "attempt": number, "elapsed": elapsed},
            )
            _call_hook(
                on_giveup,
                RetryDetails(operation, session_id, number, self.attempts, elapsed, 0.0, exc),
            )
            raise StoreUnavailableError(operation, session_id, number, elapsed, exc) from exc
        logger.debug(
            "%s %s (attempt %d)",
            f"session {session_id}" if session_id is not None else "store",
            _PAST.get(operation, "done"),
            number,
            extra={**fields, "attempt": number, "elapsed": time.monotonic() - started},
        )
        return result


def _call_hook(hook: RetryHook | None, details: RetryDetails) -> None:
    if hook is None:
        return
    try:
        hook(details)
    except Exception:
        logger.exception("retry hook %r raised; ignored", hook)
