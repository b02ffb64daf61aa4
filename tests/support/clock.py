"""An event loop on a virtual clock, for timing tests that a busy machine cannot break.

:class:`VirtualClockLoop`'s clock only moves when the loop would otherwise
sleep: it then jumps to the next timer. Timers fire in order at exactly their
simulated times, ``asyncio.sleep(30)`` costs nothing, and how loaded the CPU
is changes nothing that a test measures with ``loop.time()``. Real I/O still
works (a wait with no timer pending really blocks), but real time does not
pass while I/O is awaited with a timer pending, so drive code without real
I/O with it (throttles, schedulers, a MemoryStore).

:func:`on_virtual_clock` runs a coroutine test function on a fresh loop of
that kind: ``test = on_virtual_clock(test)``, or :func:`virtual_clock_tests`
over a module's namespace. The benchmark of a credential storm
(``benchmarks/w4_storm.py``) runs a minute of the real defaults on it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import selectors
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

#: Where a virtual clock starts. Far from 0 so that ``when - now`` is exact
#: in floating point for the next thousand simulated seconds (Sterbenz), and
#: a timer fires at exactly the time it was set for.
START = 1000.0


class _VirtualSelector(selectors.BaseSelector):
    """Delegates to a real selector, but a wait with nothing ready advances the clock."""

    def __init__(self, loop_clock: list[float]) -> None:
        self._real = selectors.DefaultSelector()
        self._clock = loop_clock

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            # Nothing scheduled at all: only I/O can wake us, so really wait.
            return self._real.select(None)
        self._clock[0] += timeout
        return []

    def close(self) -> None:
        self._real.close()

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock only moves when it would otherwise sleep.

    Timers fire in the right order at the right simulated times; code that
    does no real I/O (a MemoryStore) runs a minute of simulated time in a
    fraction of a second.
    """

    def __init__(self) -> None:
        self._virtual = [START]
        super().__init__(selector=_VirtualSelector(self._virtual))

    def time(self) -> float:
        return self._virtual[0]


def run_on_virtual_clock(main: Coroutine[Any, Any, Any]) -> Any:
    """``asyncio.run(main)``, on a fresh :class:`VirtualClockLoop` (Python 3.10 has no Runner)."""
    loop = VirtualClockLoop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def on_virtual_clock(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """A plain test function running the coroutine function ``test`` on a virtual clock.

    Fixtures are passed through (pytest reads the signature of ``test``), and
    pytest-asyncio leaves the result alone: it is not a coroutine function.
    """

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        run_on_virtual_clock(test(*args, **kwargs))

    return run


def virtual_clock_tests(namespace: dict[str, Any]) -> None:
    """Put every ``async def test_*`` of ``namespace`` (a module's globals) on a virtual clock."""
    for name, value in list(namespace.items()):
        if name.startswith("test_") and inspect.iscoroutinefunction(value):
            namespace[name] = on_virtual_clock(value)
