"""The instrumentation point: :class:`Metrics`, and what every exporter reads.

Stores, auth states and leases report to a :class:`Metrics` (it does nothing
here); the exporters in ``metrics_prometheus.py`` and
``metrics_opentelemetry.py`` subclass it, and read the bucket bounds and the
auth-state gauges defined here, so both report the same figures under the
same names. This module imports nothing outside the standard library; the
public path of everything in it is :mod:`wa_session_store.metrics`.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Iterable
from typing import Protocol

__all__ = [
    "AUTH_STATE_GAUGES",
    "DURATION_BUCKETS",
    "OUTCOMES",
    "Metrics",
    "auth_state_gauges",
    "metrics_of",
    "open_auth_states",
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


class Metrics:
    """The instrumentation point every store, auth state and lease reports to.

    Subclass it to send the figures anywhere; every method does nothing here
    and must not raise (or block: they run on the event loop, on hot paths).
    :class:`PrometheusMetrics` and :class:`OpenTelemetryMetrics` are ready
    ones. One instance may serve several stores; ``backend`` tells them apart.
    """

    __module__ = "wa_session_store.metrics"

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


#: Every auth state not yet closed. ``AuthState`` adds and removes itself (and
#: ``close_all`` and the shutdown handler close them); kept here, below the
#: auth states, so that counting them needs no import of auth_state.
open_auth_states: weakref.WeakSet[_Observed] = weakref.WeakSet()

#: The gauges counted over the open auth states when an exporter collects:
#: (name, description), in the order :func:`auth_state_gauges` returns them.
AUTH_STATE_GAUGES = (
    ("wa_session_store_auth_states_open", "Auth states open."),
    ("wa_session_store_pending_creds", "Open auth states with unsaved creds."),
    ("wa_session_store_pending_key_writes", "Key writes buffered and not yet stored."),
)


def auth_state_gauges(owners: Iterable[Metrics]) -> list[Counter[str]]:
    """By backend, of the stores reporting to any of ``owners``: open auth
    states, those with unsaved creds, and their key writes not yet stored
    (``AuthKeys.pending``, barrier mode). Counted when the exporter collects,
    so keeping them costs nothing in between."""
    wanted = set(map(id, owners))
    open_: Counter[str] = Counter()
    pending: Counter[str] = Counter()
    key_writes: Counter[str] = Counter()
    for state in list(open_auth_states):
        store = state._store
        if id(getattr(store, "metrics", None)) not in wanted:
            continue
        backend = str(getattr(store, "kind", "store"))
        open_[backend] += 1
        if state.pending:
            pending[backend] += 1
        key_writes[backend] += int(getattr(state.keys, "pending", 0))
    return [open_, pending, key_writes]
