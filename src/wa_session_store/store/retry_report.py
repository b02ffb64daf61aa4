"""What a retried call reports: its log lines and its hooks.

Each call :meth:`~wa_session_store.RetryPolicy.call` runs has a
:class:`CallReport`: a debug line when it succeeds, a warning and the
``on_retry`` hook for each attempt that failed and will be retried, an error,
the ``on_giveup`` hook and :class:`~wa_session_store.StoreUnavailableError`
when it gives up. The hooks receive :class:`RetryDetails`; a hook that raises
is reported (rate-limited) and ignored, so instrumentation never fails a call.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import NoReturn, Protocol

from ..errors import StoreUnavailableError, describe_error
from ..metrics.instrumentation import hook_failed

__all__ = ["CallReport", "RetryDetails", "RetryHook"]

logger = logging.getLogger("wa_session_store")


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


class CallReport:
    """The log lines and hooks of one call's attempts, under a policy of ``attempts``.

    ``started`` is when the call started (``time.monotonic()``).
    """

    __slots__ = ("attempts", "on_giveup", "on_retry", "operation", "session_id", "started")

    def __init__(
        self,
        attempts: int,
        operation: str,
        session_id: str | None,
        started: float,
        on_retry: RetryHook | None,
        on_giveup: RetryHook | None,
    ) -> None:
        self.attempts = attempts
        self.operation = operation
        self.session_id = session_id
        self.started = started
        self.on_retry = on_retry
        self.on_giveup = on_giveup

    @property
    def target(self) -> str:
        return self.session_id if self.session_id is not None else "the store"

    def fields(self, attempt: int, elapsed: float) -> dict[str, object]:
        return {
            "session_id": self.session_id,
            "op": self.operation,
            "attempt": attempt,
            "attempts": self.attempts,
            "elapsed": elapsed,
        }

    def succeeded(self, attempt: int) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s %s (attempt %d)",
                f"session {self.session_id}" if self.session_id is not None else "store",
                _PAST.get(self.operation, "done"),
                attempt,
                extra=self.fields(attempt, time.monotonic() - self.started),
            )

    def retrying(self, attempt: int, cause: BaseException, wait: float) -> None:
        elapsed = time.monotonic() - self.started
        logger.warning(
            "attempt %d/%d failed for %s: %s: %s; retrying in %.1fs",
            attempt,
            self.attempts,
            self.target,
            self.operation,
            describe_error(cause),
            wait,
            extra=self.fields(attempt, elapsed),
        )
        _call_hook(
            self.on_retry,
            RetryDetails(
                self.operation,
                self.session_id,
                attempt,
                self.attempts,
                elapsed,
                wait,
                cause,
            ),
        )

    def give_up(self, attempt: int, cause: BaseException) -> NoReturn:
        elapsed = time.monotonic() - self.started
        logger.error(
            "giving up on %s after %d attempts: %s: %s",
            self.target,
            attempt,
            self.operation,
            describe_error(cause),
            extra=self.fields(attempt, elapsed),
        )
        _call_hook(
            self.on_giveup,
            RetryDetails(
                self.operation, self.session_id, attempt, self.attempts, elapsed, 0.0, cause
            ),
        )
        raise StoreUnavailableError(
            self.operation, self.session_id, attempt, elapsed, cause
        ) from cause


def _call_hook(hook: RetryHook | None, details: RetryDetails) -> None:
    if hook is None:
        return
    try:
        hook(details)
    except Exception as exc:
        # Rate-limited, and without the traceback, which would print the
        # store's error chained to the hook's.
        name = getattr(hook, "__qualname__", type(hook).__qualname__)
        hook_failed(("retry hook", name), f"retry hook {name}()", exc)
