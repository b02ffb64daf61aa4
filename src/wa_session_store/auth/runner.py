"""What :class:`~wa_session_store.Throttler` and :class:`~wa_session_store.BackupScheduler`
share: argument checks, and running the function once with one log line for its outcome."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable

from ..errors import InvalidInputError, InvalidTypeError, describe_error, shown
from ..store.retry import finite

__all__ = ["Runner", "check_callable", "check_seconds"]

logger = logging.getLogger("wa_session_store")


def check_callable(what: str, value: object, kind: str = " (sync or async)") -> None:
    if not callable(value):
        raise InvalidTypeError(
            f"{what} must be a callable taking no arguments{kind}, not {type(value).__name__}"
        )


def _check_name(name: object) -> None:
    if name is not None and not isinstance(name, str):
        raise InvalidTypeError(f"name must be a str or None, not {type(name).__name__}")


def check_seconds(what: str, value: object, *, allow_zero: bool) -> float:
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


class Runner:
    """What :class:`Throttler` and :class:`BackupScheduler` share: the function,
    its counters, and running it once with one log line for the outcome."""

    __slots__ = ("_failures", "_func", "_interval", "_name", "_runs", "_task", "_timer")

    #: The ``op`` of log records, and the ``extra`` key holding the name.
    _op = "run"
    _op_key = "runner"

    def __init__(
        self, func: Callable[[], object], interval: float, name: str | None, *, zero: bool
    ) -> None:
        check_callable("func", func)
        _check_name(name)
        self._interval = check_seconds("interval", interval, allow_zero=zero)
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
        self, what: str, *, retried: Callable[[], bool] | None = None, **fields: object
    ) -> Exception | None:
        """Run ``func`` once; count and log the outcome; return its exception, or None.

        ``retried()``, asked after a failure, says whether the log line ends
        with "will retry". Cancellation and other BaseExceptions propagate,
        with no run counted.
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
                ", will retry" if retried is not None and retried() else "",
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

    async def _settled(self) -> None:
        """Wait until no run is in progress, without raising its exception."""
        while self._task is not None:
            await asyncio.wait([self._task])

    @staticmethod
    async def _outcome(task: asyncio.Task[Exception | None]) -> None:
        """Wait for the run ``task`` and raise its exception, if any.

        Shielded: cancelling the caller (a flush, a manual backup) must not
        cut the run half-way.
        """
        error = await asyncio.shield(task)
        if error is not None:
            raise error
