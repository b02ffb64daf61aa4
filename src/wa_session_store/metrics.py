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
  (counted over the open auth states when the exporter collects);
- `wa_session_store_leases_held` (gauge), `wa_session_store_lease_grants_total`,
  `wa_session_store_lease_renewals_total`, `wa_session_store_lease_releases_total`,
  `wa_session_store_lease_losses_total` (reason: `replaced`, `expired`); all by backend.

The table with every name, kind and label is in docs/running-many-bots.md.

``operation`` is a store method (``save_creds``, ``get_keys``, ...), ``backend``
the store kind (``postgresql``, ``sqlite``, ``memory``). A session id is never
a label: that would be unbounded, and would leak who the bots serve.
"""

from __future__ import annotations

import threading
import weakref
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

__all__ = ["DURATION_BUCKETS", "Metrics", "OpenTelemetryMetrics", "PrometheusMetrics"]

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
#: (name, description), in the order :func:`_auth_state_gauges` returns them.
AUTH_STATE_GAUGES = (
    ("wa_session_store_auth_states_open", "Auth states open."),
    ("wa_session_store_pending_creds", "Open auth states with unsaved creds."),
    ("wa_session_store_pending_key_writes", "Key writes buffered and not yet stored."),
)


def _auth_state_gauges(owners: Iterable[Metrics]) -> list[Counter[str]]:
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


# -- Prometheus -----------------------------------------------------------------


class _PrometheusInstruments:
    """The collectors of one registry, shared by every PrometheusMetrics using it."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter as PCounter
        from prometheus_client import Gauge, Histogram

        op = ["operation", "backend"]
        self.owners: weakref.WeakSet[Metrics] = weakref.WeakSet()
        self.calls = PCounter(
            "wa_session_store_calls_total",
            "Store calls, by how they ended.",
            [*op, "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "wa_session_store_call_duration_seconds",
            "Duration of store calls, retries included.",
            op,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.retries = PCounter(
            "wa_session_store_retries_total", "Failed attempts that were retried.", op,
            registry=registry,
        )  # fmt: skip
        self.giveups = PCounter(
            "wa_session_store_giveups_total", "Calls that gave up.", op, registry=registry
        )

        def counter(name: str, doc: str, labels: tuple[str, ...] = ("backend",)) -> Any:
            return PCounter(name, doc, list(labels), registry=registry)

        self.creds_updates = counter(
            "wa_session_store_creds_updates_total", "Creds updates auth states received."
        )
        self.creds_saves = counter(
            "wa_session_store_creds_saves_total", "Creds saves the throttle made."
        )
        self.backups = counter("wa_session_store_backups_total", "Backup runs of auth states.")
        self.grants = counter("wa_session_store_lease_grants_total", "Leases granted.")
        self.renewals = counter("wa_session_store_lease_renewals_total", "Leases renewed.")
        self.releases = counter("wa_session_store_lease_releases_total", "Leases released.")
        self.losses = counter(
            "wa_session_store_lease_losses_total", "Leases lost.", ("backend", "reason")
        )
        self.held = Gauge(
            "wa_session_store_leases_held", "Leases this process holds.", ["backend"],
            registry=registry,
        )  # fmt: skip
        registry.register(_AuthStateCollector(self.owners))


class _AuthStateCollector:
    """Reports the auth-state gauges when Prometheus scrapes (no cost in between)."""

    def __init__(self, owners: weakref.WeakSet[Metrics]) -> None:
        self.owners = owners

    def describe(self) -> list[Any]:
        return list(self._families(collect=False))

    def collect(self) -> Iterator[Any]:
        yield from self._families(collect=True)

    def _families(self, *, collect: bool) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        values = _auth_state_gauges(self.owners) if collect else [Counter()] * 3
        for (name, doc), counts in zip(AUTH_STATE_GAUGES, values, strict=True):
            family = GaugeMetricFamily(name, doc, labels=["backend"])
            for backend, value in sorted(counts.items()):
                family.add_metric([backend], value)
            yield family


_prometheus_lock = threading.Lock()
_prometheus: dict[int, tuple[Any, _PrometheusInstruments]] = {}


class PrometheusMetrics(Metrics):
    """Reports to a ``prometheus_client`` registry (``pip install 'wa-session-store[prometheus]'``).

    Args:
        registry: a ``prometheus_client.CollectorRegistry`` (default None: the
            global ``prometheus_client.REGISTRY``, which ``start_http_server``
            and most frameworks expose). Several instances on one registry
            share its collectors.

    Raises:
        ImportError: ``prometheus_client`` is not installed.
    """

    def __init__(self, registry: Any = None) -> None:
        if registry is None:
            from prometheus_client import REGISTRY

            registry = REGISTRY
        with _prometheus_lock:
            entry = _prometheus.get(id(registry))
            if entry is None or entry[0] is not registry:
                entry = (registry, _PrometheusInstruments(registry))
                _prometheus[id(registry)] = entry
        self.registry = registry
        self._m = entry[1]
        self._m.owners.add(self)
        # The labelled children of the hot path, so a call costs two dict
        # lookups and two updates instead of two label resolutions.
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def __repr__(self) -> str:
        return f"<PrometheusMetrics registry={type(self.registry).__name__}>"

    def call(self, operation: str, backend: str, seconds: float, outcome: str) -> None:
        key = (operation, backend, outcome)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self._m.calls.labels(operation, backend, outcome),
                self._m.duration.labels(operation, backend),
            )
        children[0].inc()
        children[1].observe(seconds)

    def retry(self, operation: str, backend: str) -> None:
        self._m.retries.labels(operation, backend).inc()

    def giveup(self, operation: str, backend: str) -> None:
        self._m.giveups.labels(operation, backend).inc()

    def creds_update(self, backend: str) -> None:
        self._m.creds_updates.labels(backend).inc()

    def creds_save(self, backend: str) -> None:
        self._m.creds_saves.labels(backend).inc()

    def backup(self, backend: str) -> None:
        self._m.backups.labels(backend).inc()

    def leases_granted(self, backend: str, count: int = 1) -> None:
        self._m.grants.labels(backend).inc(count)
        self._m.held.labels(backend).inc(count)

    def leases_renewed(self, backend: str, count: int) -> None:
        self._m.renewals.labels(backend).inc(count)

    def leases_released(self, backend: str, count: int = 1) -> None:
        self._m.releases.labels(backend).inc(count)
        self._m.held.labels(backend).dec(count)

    def lease_lost(self, backend: str, reason: str) -> None:
        self._m.losses.labels(backend, reason).inc()
        self._m.held.labels(backend).dec()


# -- OpenTelemetry --------------------------------------------------------------


class _OpenTelemetryInstruments:
    """The instruments of one meter, shared by every OpenTelemetryMetrics using it.

    The SDK spends several microseconds on each ``add()``; counters and
    up-down counts are therefore kept in plain dicts and reported by
    observable instruments when the reader collects. Only durations are
    recorded as they happen (a histogram has no observable form).
    """

    #: (name, kind, labels, description) of every instrument fed from ``counts``.
    OBSERVED = (
        ("wa_session_store_calls_total", "counter", ("operation", "backend", "outcome"),
         "Store calls, by how they ended."),
        ("wa_session_store_retries_total", "counter", ("operation", "backend"),
         "Failed attempts that were retried."),
        ("wa_session_store_giveups_total", "counter", ("operation", "backend"),
         "Calls that gave up."),
        ("wa_session_store_creds_updates_total", "counter", ("backend",),
         "Creds updates auth states received."),
        ("wa_session_store_creds_saves_total", "counter", ("backend",),
         "Creds saves the throttle made."),
        ("wa_session_store_backups_total", "counter", ("backend",), "Backup runs of auth states."),
        ("wa_session_store_lease_grants_total", "counter", ("backend",), "Leases granted."),
        ("wa_session_store_lease_renewals_total", "counter", ("backend",), "Leases renewed."),
        ("wa_session_store_lease_releases_total", "counter", ("backend",), "Leases released."),
        ("wa_session_store_lease_losses_total", "counter", ("backend", "reason"), "Leases lost."),
        ("wa_session_store_leases_held", "gauge", ("backend",), "Leases this process holds."),
    )  # fmt: skip

    def __init__(self, meter: Any) -> None:
        from opentelemetry.metrics import CallbackOptions, Observation

        self.owners: weakref.WeakSet[Metrics] = weakref.WeakSet()
        self.counts: dict[str, Counter[tuple[str, ...]]] = {}
        self.duration = meter.create_histogram(
            "wa_session_store_call_duration_seconds",
            unit="s",
            description="Duration of store calls, retries included.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.duration_attributes: dict[tuple[str, str], dict[str, str]] = {}

        def observed(name: str, labels: tuple[str, ...]) -> Any:
            counts = self.counts[name] = Counter()

            def observe(_options: CallbackOptions) -> Iterable[Observation]:
                return [
                    Observation(value, dict(zip(labels, key, strict=True)))
                    for key, value in list(counts.items())
                ]

            return observe

        for name, kind, labels, description in self.OBSERVED:
            create = (
                meter.create_observable_counter
                if kind == "counter"
                else meter.create_observable_up_down_counter
            )
            create(name, callbacks=[observed(name, labels)], unit="1", description=description)

        def gauge(index: int) -> Any:
            def observe(_options: CallbackOptions) -> Iterable[Observation]:
                counts = _auth_state_gauges(self.owners)[index]
                return [Observation(n, {"backend": b}) for b, n in sorted(counts.items())]

            return observe

        for index, (name, description) in enumerate(AUTH_STATE_GAUGES):
            meter.create_observable_gauge(
                name, callbacks=[gauge(index)], unit="1", description=description
            )


_otel_lock = threading.Lock()
_otel: dict[int, tuple[Any, _OpenTelemetryInstruments]] = {}


class OpenTelemetryMetrics(Metrics):
    """Reports to OpenTelemetry metrics (``pip install 'wa-session-store[otel]'``).

    Args:
        meter_provider: an ``opentelemetry.metrics.MeterProvider`` (default
            None: the global one, ``opentelemetry.metrics.get_meter_provider()``,
            which does nothing until the application installs an SDK provider).
            The meter is named ``wa_session_store``.

    Raises:
        ImportError: ``opentelemetry-api`` is not installed.
    """

    def __init__(self, meter_provider: Any = None) -> None:
        from opentelemetry import metrics as otel_metrics

        from ._version import __version__

        provider = meter_provider or otel_metrics.get_meter_provider()
        with _otel_lock:
            entry = _otel.get(id(provider))
            if entry is None or entry[0] is not provider:
                meter = provider.get_meter("wa_session_store", __version__)
                entry = (provider, _OpenTelemetryInstruments(meter))
                _otel[id(provider)] = entry
        self.meter_provider = provider
        self._m = entry[1]
        self._m.owners.add(self)

    def __repr__(self) -> str:
        return f"<OpenTelemetryMetrics provider={type(self.meter_provider).__name__}>"

    def _add(self, name: str, key: tuple[str, ...], value: int = 1) -> None:
        self._m.counts[name][key] += value

    def call(self, operation: str, backend: str, seconds: float, outcome: str) -> None:
        m = self._m
        m.counts["wa_session_store_calls_total"][operation, backend, outcome] += 1
        attributes = m.duration_attributes.get((operation, backend))
        if attributes is None:
            attributes = m.duration_attributes[operation, backend] = {
                "operation": operation,
                "backend": backend,
            }
        m.duration.record(seconds, attributes)

    def retry(self, operation: str, backend: str) -> None:
        self._add("wa_session_store_retries_total", (operation, backend))

    def giveup(self, operation: str, backend: str) -> None:
        self._add("wa_session_store_giveups_total", (operation, backend))

    def creds_update(self, backend: str) -> None:
        self._add("wa_session_store_creds_updates_total", (backend,))

    def creds_save(self, backend: str) -> None:
        self._add("wa_session_store_creds_saves_total", (backend,))

    def backup(self, backend: str) -> None:
        self._add("wa_session_store_backups_total", (backend,))

    def leases_granted(self, backend: str, count: int = 1) -> None:
        self._add("wa_session_store_lease_grants_total", (backend,), count)
        self._add("wa_session_store_leases_held", (backend,), count)

    def leases_renewed(self, backend: str, count: int) -> None:
        self._add("wa_session_store_lease_renewals_total", (backend,), count)

    def leases_released(self, backend: str, count: int = 1) -> None:
        self._add("wa_session_store_lease_releases_total", (backend,), count)
        self._add("wa_session_store_leases_held", (backend,), -count)

    def lease_lost(self, backend: str, reason: str) -> None:
        self._add("wa_session_store_lease_losses_total", (backend, reason))
        self._add("wa_session_store_leases_held", (backend,), -1)
