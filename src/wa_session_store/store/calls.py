"""How a store's calls reach the database: its life cycle and the one retried call.

:class:`StoreCalls` opens and closes a store (once, whoever calls) and runs
every call of :class:`~wa_session_store.store.base.BaseStore` through
:meth:`StoreCalls._run`: the retry policy, the errors a retry cannot fix
wrapped in :class:`~wa_session_store.StoreOperationError`, and the one
instrumentation point of the metrics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TypeVar

from typing_extensions import Self

from ..errors import (
    SessionStoreError,
    StoreClosedError,
    StoreOperationError,
    StoreUnavailableError,
    describe_error,
)
from ..metrics.instrumentation import Metrics, open_stores
from .primitives import StorePrimitives
from .retry import RetryPolicy
from .retry_report import RetryDetails, RetryHook

__all__ = ["StoreCalls"]

T = TypeVar("T")


class StoreCalls(StorePrimitives):
    """The life cycle and the retried, instrumented call of every store.

    Set by :class:`~wa_session_store.store.base.BaseStore`: ``retry``,
    ``metrics``, ``on_retry``, ``on_giveup``; ``kind`` names the store.
    """

    kind = "store"
    retry: RetryPolicy
    metrics: Metrics | None
    on_retry: RetryHook | None
    on_giveup: RetryHook | None

    def __init__(self) -> None:
        self._is_open = False
        self._opening: asyncio.Future[None] | None = None
        self._open_waiters = 0
        # Whether the last attempt reached a server that took it; tracked
        # with metrics only, for the wa_session_store_store_up gauge.
        self._up = True

    # -- life cycle -------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """Whether the store is open."""
        return self._is_open

    async def open(self) -> None:
        """Open the store: connect, and create or upgrade the schema.

        Opening an open store does nothing; calls made while an open is in
        flight wait for that one (one set of connections, whoever called).
        A closed store can be opened again.

        Raises:
            StoreConfigurationError: the store cannot work as configured (a
                refused role or password, a missing database, a bad port,
                sslmode or host name); raised at the first attempt.
            StoreClosedError: :meth:`close` was called while this open was
                in flight; the store is closed.
            StoreUnavailableError, StoreOperationError, SchemaVersionError:
                as the backend reports them.
        """
        if self._is_open:
            return
        opening = self._opening
        if opening is None or opening.done():
            opening = self._opening = asyncio.ensure_future(self._open_once())
        self._open_waiters += 1
        try:
            await asyncio.shield(opening)
        except asyncio.CancelledError:
            if opening.cancelled():
                raise StoreClosedError(
                    f"{self.kind} store was closed while it was opening"
                ) from None
            if self._open_waiters == 1:
                # The last caller gave up: the open must not go on unowned.
                opening.cancel()
                await asyncio.wait([opening])
            raise
        finally:
            self._open_waiters -= 1

    async def _open_once(self) -> None:
        await self._open()
        # Set by the task itself, so close() sees it the moment the task is done.
        self._is_open = True
        self._up = True
        if self.metrics is not None:
            open_stores.add(self)

    async def close(self) -> None:
        """Close the store; closing a closed store does nothing.

        A close during an in-flight :meth:`open` cancels that open (which
        releases whatever it had connected) and waits for it: when close
        returns, the store is closed, and that open raises
        :class:`StoreClosedError`.
        """
        opening, self._opening = self._opening, None
        if opening is not None and not opening.done():
            opening.cancel()
            await asyncio.wait([opening])
        if opening is not None and not opening.cancelled():
            opening.exception()  # retrieved here; the waiting open() reports it
        if not self._is_open:
            return
        self._is_open = False
        open_stores.discard(self)
        await self._close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "open" if self._is_open else "closed"
        return f"<{type(self).__name__} {self._describe()} ({state})>"

    def _describe(self) -> str:
        return self.kind

    # -- shared machinery -------------------------------------------------

    def _check_open(self) -> None:
        if not self._is_open:
            raise StoreClosedError(
                f"{self.kind} store is not open: use 'async with store:' or 'await store.open()'"
            )

    async def _call(
        self, op: str, session_id: str | None, attempt: Callable[[float], Awaitable[T]]
    ) -> T:
        self._check_open()
        return await self._run(op, session_id, attempt)

    async def _run(
        self, op: str, session_id: str | None, attempt: Callable[[float], Awaitable[T]]
    ) -> T:
        """Retry ``attempt`` by the policy; wrap errors a retry cannot fix.

        The one instrumentation point of store calls: with ``metrics`` set,
        the call's duration and outcome, its retries and its give-up are
        reported here, and the store is down (the ``store_up`` gauge) from
        an attempt that failed with a transient error until one succeeds.
        """
        metrics = self.metrics
        if metrics is None:
            return await self._attempts(op, session_id, attempt, self.on_retry, self.on_giveup)
        kind = self.kind
        on_retry, on_giveup = self.on_retry, self.on_giveup

        def retried(details: RetryDetails) -> None:
            self._up = False
            metrics.retry(op, kind)
            if on_retry is not None:
                on_retry(details)

        def gave_up(details: RetryDetails) -> None:
            self._up = False
            metrics.giveup(op, kind)
            if on_giveup is not None:
                on_giveup(details)

        started = time.perf_counter()
        outcome = "error"
        try:
            result = await self._attempts(op, session_id, attempt, retried, gave_up)
            outcome = "ok"
            self._up = True
            return result
        except StoreUnavailableError:
            outcome = "unavailable"
            raise
        finally:
            metrics.call(op, kind, time.perf_counter() - started, outcome)

    async def _attempts(
        self,
        op: str,
        session_id: str | None,
        attempt: Callable[[float], Awaitable[T]],
        on_retry: RetryHook | None,
        on_giveup: RetryHook | None,
    ) -> T:
        try:
            return await self.retry.call(
                op,
                session_id,
                attempt,
                is_transient=self._is_transient,
                on_retry=on_retry,
                on_giveup=on_giveup,
            )
        except SessionStoreError:
            raise
        except Exception as exc:
            target = f" for session {session_id!r}" if session_id is not None else ""
            raise StoreOperationError(
                f"{op}{target} was refused by the {self.kind} database: {describe_error(exc)}"
            ) from exc
