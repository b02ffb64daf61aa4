"""Metrics: one instrumentation point, two ready exporters.

Every store call (through ``BaseStore._run``: the call, its retries and its
give-up), every throttled creds save and backup of an auth state, and every
lease grant, renewal, release and loss reports to the store's ``metrics``
object, a :class:`Metrics`. Pass one to any store, or to ``open_store``::

    from wa_session_store import open_store
    from wa_session_store.metrics import PrometheusMetrics

    store = open_store("postgresql://bot@db/bots", metrics=PrometheusMetrics())

Without ``metrics=`` (the default) nothing is recorded and nothing is paid:
each instrumented place checks one attribute against None.

A hook that raises never changes the outcome of what it reports (the save
landed, the lease was granted): the error is logged, rate-limited, and
ignored (see :class:`Metrics`). Exporters may collect from any thread while
auth states open and close.

The exporters are optional extras, imported only when built:
:class:`PrometheusMetrics` (``pip install 'wa-session-store[prometheus]'``)
and :class:`OpenTelemetryMetrics` (``[otel]``). They report the same names:

- `wa_session_store_calls_total` (operation, backend, outcome: `ok`, `error`,
  `unavailable`), `wa_session_store_call_duration_seconds` (histogram;
  operation, backend), `wa_session_store_retries_total` and
  `wa_session_store_giveups_total` (operation, backend);
- `wa_session_store_creds_updates_total` (updates received),
  `wa_session_store_creds_saves_total` (writes the throttle made),
  `wa_session_store_backups_total`; gauges `wa_session_store_auth_states_open`,
  `wa_session_store_pending_creds`, `wa_session_store_pending_key_writes`
  (counted over the open auth states when the exporter collects), and
  `wa_session_store_store_up` (1, or 0 from a failed attempt or an unhealthy
  ``health()`` of an open store until a call succeeds: an outage's alert);
- `wa_session_store_leases_held` (gauge), `wa_session_store_lease_grants_total`,
  `wa_session_store_lease_renewals_total`, `wa_session_store_lease_releases_total`,
  `wa_session_store_lease_losses_total` (reason: `replaced`, `expired`); all by backend.

The table with every name, kind and label is in docs/running-many-bots.md.

This module is the public path of all of it; the code is in three modules
beneath it: the instrumentation point in ``instrumentation.py``, the
exporters in ``metrics_prometheus.py`` and ``metrics_opentelemetry.py``. An
exporter's module is loaded when its name is first read here, so importing
this module costs neither.

``operation`` is a store method (``save_creds``, ``get_keys``, ...), ``backend``
the store kind (``postgresql``, ``sqlite``, ``memory``). A session id is never
a label: that would be unbounded, and would leak who the bots serve.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .instrumentation import DURATION_BUCKETS as DURATION_BUCKETS
from .instrumentation import OUTCOMES as OUTCOMES
from .instrumentation import Metrics as Metrics
from .instrumentation import metrics_of
from .instrumentation import open_auth_states as open_auth_states

if TYPE_CHECKING:
    from .opentelemetry import OpenTelemetryMetrics
    from .prometheus import PrometheusMetrics

__all__ = [
    "DURATION_BUCKETS",
    "Metrics",
    "OpenTelemetryMetrics",
    "PrometheusMetrics",
    "metrics_of",
]


def __getattr__(name: str) -> Any:
    """The exporters, loaded on first use (PEP 562)."""
    if name == "PrometheusMetrics":
        from .prometheus import PrometheusMetrics

        return PrometheusMetrics
    if name == "OpenTelemetryMetrics":
        from .opentelemetry import OpenTelemetryMetrics

        return OpenTelemetryMetrics
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
