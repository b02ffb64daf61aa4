"""The instrumentation point: :class:`Metrics`, and what every exporter reads.

Stores, auth states and leases report to a :class:`Metrics` (it does nothing
here); the exporters in ``metrics_prometheus.py`` and
``metrics_opentelemetry.py`` subclass it, and read the bucket bounds and the
auth-state gauges defined here, so both report the same figures under the
same names. This module imports nothing outside the standard library; the
public path of everything in it is :mod:`wa_session_store.metrics`.

Observability never breaks persistence. Every hook a subclass defines is
wrapped when the subclass is created (:meth:`Metrics.__init_subclass__`), so
an exporter that raises is logged and ignored at this one point, whichever
store, auth state or lease calls it: a save that landed still returns
normally, and a creds update is still scheduled. The collections that
exporters read while collecting, from their own threads (the open auth
states, the exporters of a registry), are each a :class:`ThreadSafeWeakSet`,
read as a snapshot.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, MutableSet
from typing import Any, Protocol, TypeVar

from ..errors import describe_error

__all__ = [
    "COLLECTED_GAUGES",
    "DURATION_BUCKETS",
    "HOOKS",
    "HOOK_FAILURE_LOG_INTERVAL",
    "OUTCOMES",
    "Metrics",
    "ThreadSafeWeakSet",
    "collected_gauges",
    "hook_failed",
    "metrics_of",
    "open_auth_states",
    "open_stores",
]

#: Histogram bucket bounds of call durations, in seconds (a local call to a
#: retried call of tens of seconds).
DURATION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

#: How a call ended, the ``outcome`` label.
OUTCOMES = ("ok", "error", "unavailable")

#: Seconds between two log lines about one failing hook (its first failure
#: is logged at once; the lines in between are counted).
HOOK_FAILURE_LOG_INTERVAL = 60.0

T = TypeVar("T")

logger = logging.getLogger("wa_session_store")


class Metrics:
    """The instrumentation point every store, auth state and lease reports to.

    Subclass it to send the figures anywhere; every method does nothing here
    and must not block (they run on the event loop, on hot paths).
    :class:`PrometheusMetrics` and :class:`OpenTelemetryMetrics` are ready
    ones. One instance may serve several stores; ``backend`` tells them apart.

    A hook that raises (an ``Exception``) is ignored: the store call, save,
    backup or lease it reports ends as it would have without metrics. The
    failure is logged on the ``wa_session_store`` logger at WARNING, with the
    exporter's class, the hook and the first line of the error (never a
    traceback, whose chained errors could quote stored values): the first
    failure of each hook at once, then at most one line every
    :attr:`FAILURE_LOG_INTERVAL` seconds, counting the failures in between.
    Every hook a subclass defines in its body is guarded so when the class
    is created (a hook assigned to an instance later is not).
    """

    __module__ = "wa_session_store.metrics"

    #: Seconds between two log lines about one failing hook of one exporter class.
    FAILURE_LOG_INTERVAL = HOOK_FAILURE_LOG_INTERVAL

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in HOOKS:
            method = cls.__dict__.get(name)
            if inspect.isfunction(method) and not hasattr(method, "__guarded_hook__"):
                setattr(cls, name, _guarded(name, method))

    def call(self, operation: str, backend: str, seconds: float, outcome: str) -> None:
        """A store call ended: ``outcome`` is ``ok``, ``error`` or ``unavailable``."""

    def retry(self, operation: str, backend: str) -> None:
        """An attempt of a call failed and will be retried."""

    def giveup(self, operation: str, backend: str) -> None:
        """A call gave up after its last attempt (it raises StoreUnavailableError)."""

    def creds_update(self, backend: str) -> None:
        """An auth state received a creds update (``creds_updated``)."""

    def creds_save(self, backend: str) -> None:
        """An auth state's throttle saved its creds (one write for many updates)."""

    def backup(self, backend: str) -> None:
        """An auth state's backup ran."""

    def leases_granted(self, backend: str, count: int = 1) -> None:
        """``count`` leases were granted to this process."""

    def leases_renewed(self, backend: str, count: int) -> None:
        """``count`` leases were renewed (by one statement or several)."""

    def leases_released(self, backend: str, count: int = 1) -> None:
        """``count`` leases were released by this process."""

    def lease_lost(self, backend: str, reason: str) -> None:
        """A lease was lost: ``reason`` is ``replaced`` (another owner) or ``expired``."""


#: The hooks of :class:`Metrics`, each guarded in every subclass.
HOOKS = tuple(
    name for name, member in vars(Metrics).items() if inspect.isfunction(member) and name[0] != "_"
)


def _guarded(hook: str, method: Callable[..., object]) -> Callable[..., None]:
    """``method`` of an exporter, with its exceptions logged and ignored."""

    @functools.wraps(method)
    def guarded(self: Metrics, /, *args: Any, **kwargs: Any) -> None:
        try:
            method(self, *args, **kwargs)
        except Exception as exc:
            exporter = type(self)
            what = f"metrics hook {exporter.__qualname__}.{hook}()"
            hook_failed((exporter, hook), what, exc, exporter.FAILURE_LOG_INTERVAL)

    guarded.__guarded_hook__ = True  # type: ignore[attr-defined]  # a marker, read by hasattr
    return guarded


_failures_lock = threading.Lock()
#: key of a hook: (when its last line was logged, failures not logged since)
_failures: dict[Hashable, tuple[float, int]] = {}


def hook_failed(
    key: Hashable, what: str, exc: Exception, every: float = HOOK_FAILURE_LOG_INTERVAL
) -> None:
    """Log that a hook of user or exporter code raised, at most once every ``every`` seconds.

    ``key`` names the hook for the rate limit, ``what`` for the reader
    (``"metrics hook PrometheusMetrics.call()"``). Logged at WARNING with the
    first line of the error only: a traceback would print the errors chained
    to it (the store's, whose details may quote stored values).
    """
    now = time.monotonic()
    with _failures_lock:
        logged, since = _failures.get(key, (None, 0))
        if logged is not None and now - logged < every:
            _failures[key] = (logged, since + 1)
            return
        _failures[key] = (now, 0)
    more = f" ({since} more failures since the last report)" if since else ""
    logger.warning(
        "%s raised, ignored; the operation it reports is unaffected%s: %s",
        what,
        more,
        describe_error(exc),
    )


def metrics_of(store: object) -> Metrics | None:
    """The :class:`Metrics` of a store, or None (any AuthStateStore may lack one)."""
    metrics = getattr(store, "metrics", None)
    return metrics if isinstance(metrics, Metrics) else None


class _Observed(Protocol):
    """What the gauges read of an open auth state (an ``AuthState``)."""

    @property
    def _store(self) -> object: ...

    @property
    def keys(self) -> object: ...

    @property
    def pending(self) -> bool: ...


class ThreadSafeWeakSet(MutableSet[T]):
    """A set of weakly held objects (by identity) that any thread may read while others change it.

    Iterating a :class:`weakref.WeakSet` walks its inner set, and raises
    "Set changed size during iteration" when another thread adds to it
    meanwhile: a Prometheus scrape counting the open auth states while an
    event loop opens one. Here changes take a lock, and iteration walks a
    snapshot taken under it; an object collected meanwhile is skipped.
    """

    __slots__ = ("_lock", "_refs")

    def __init__(self) -> None:
        # Re-entrant: a collection that a change triggers may run the removal
        # callback of another member on the same thread, within the lock.
        self._lock = threading.RLock()
        self._refs: dict[int, weakref.ref[T]] = {}

    def add(self, value: T) -> None:
        key = id(value)

        def collected(ref: weakref.ref[T]) -> None:
            with self._lock:
                if self._refs.get(key) is ref:
                    del self._refs[key]

        with self._lock:
            if key not in self._refs:
                self._refs[key] = weakref.ref(value, collected)

    def discard(self, value: T) -> None:
        with self._lock:
            self._refs.pop(id(value), None)

    def snapshot(self) -> list[T]:
        """The members alive now, in a list of the caller's own."""
        with self._lock:
            refs = list(self._refs.values())
        return [item for item in (ref() for ref in refs) if item is not None]

    def __iter__(self) -> Iterator[T]:
        return iter(self.snapshot())

    def __len__(self) -> int:
        return len(self.snapshot())

    def __contains__(self, value: object) -> bool:
        with self._lock:
            ref = self._refs.get(id(value))
        return ref is not None and ref() is value


#: Every auth state not yet closed. ``AuthState`` adds and removes itself (and
#: ``close_all`` and the shutdown handler close them); kept here, below the
#: auth states, so that counting them needs no import of auth_state. Exporters
#: count it from their own threads, hence the thread-safe set.
open_auth_states: ThreadSafeWeakSet[_Observed] = ThreadSafeWeakSet()


class _Reachable(Protocol):
    """What the ``store_up`` gauge reads of an open store (a ``BaseStore``)."""

    @property
    def kind(self) -> str: ...

    @property
    def metrics(self) -> Metrics | None: ...

    @property
    def _up(self) -> bool: ...


#: Every open store that has ``metrics``; a store adds itself when it opens
#: and removes itself when it closes. Read by exporters from their threads.
open_stores: ThreadSafeWeakSet[_Reachable] = ThreadSafeWeakSet()

#: The gauges counted when an exporter collects, over the open auth states
#: and the open stores: (name, description), in the order
#: :func:`collected_gauges` returns them.
COLLECTED_GAUGES = (
    ("wa_session_store_auth_states_open", "Auth states open."),
    ("wa_session_store_pending_creds", "Open auth states with unsaved creds."),
    ("wa_session_store_pending_key_writes", "Key writes buffered and not yet stored."),
    (
        "wa_session_store_store_up",
        "1 while every open store of the backend reaches a server that takes its writes; "
        "0 from a failed attempt (an outage, a failover, a read-only server) or an unhealthy "
        "health() until a call succeeds.",
    ),
)


def collected_gauges(owners: Iterable[Metrics]) -> list[Counter[str]]:
    """By backend, of the stores reporting to any of ``owners``: open auth
    states, those with unsaved creds, their key writes not yet stored
    (``AuthKeys.pending``, barrier mode), and whether every open store is up
    (1, else 0: see ``StoreCalls._run``). Counted when the exporter collects, so
    keeping them costs nothing in between."""
    wanted = set(map(id, owners))
    open_: Counter[str] = Counter()
    pending: Counter[str] = Counter()
    key_writes: Counter[str] = Counter()
    up: Counter[str] = Counter()
    for state in open_auth_states.snapshot():
        store = state._store
        if id(getattr(store, "metrics", None)) not in wanted:
            continue
        backend = str(getattr(store, "kind", "store"))
        open_[backend] += 1
        if state.pending:
            pending[backend] += 1
        key_writes[backend] += int(getattr(state.keys, "pending", 0))
    for store in open_stores.snapshot():
        if id(store.metrics) in wanted:
            backend = str(store.kind)
            up[backend] = min(up.get(backend, 1), int(store._up))
    return [open_, pending, key_writes, up]
