"""The Prometheus exporter: :class:`PrometheusMetrics`, on ``prometheus_client``.

``prometheus_client`` is imported when the first instance is built, never
when this module is: without the ``[prometheus]`` extra nothing here is paid
for. Import it from :mod:`wa_session_store.metrics`, which loads this module
on first use.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

from .instrumentation import (
    COLLECTED_GAUGES,
    DURATION_BUCKETS,
    Metrics,
    ThreadSafeWeakSet,
    collected_gauges,
)

__all__ = ["PrometheusMetrics"]


class _PrometheusInstruments:
    """The collectors of one registry, shared by every PrometheusMetrics using it."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter as PCounter
        from prometheus_client import Gauge, Histogram

        op = ["operation", "backend"]
        self.owners: ThreadSafeWeakSet[Metrics] = ThreadSafeWeakSet()
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
        registry.register(_CollectedGauges(self.owners))


class _CollectedGauges:
    """Reports the auth-state and store-up gauges when Prometheus scrapes (no cost in between)."""

    def __init__(self, owners: ThreadSafeWeakSet[Metrics]) -> None:
        self.owners = owners

    def describe(self) -> list[Any]:
        return list(self._families(collect=False))

    def collect(self) -> Iterator[Any]:
        yield from self._families(collect=True)

    def _families(self, *, collect: bool) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        values = collected_gauges(self.owners) if collect else [Counter()] * len(COLLECTED_GAUGES)
        for (name, doc), counts in zip(COLLECTED_GAUGES, values, strict=True):
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

    __module__ = "wa_session_store.metrics"

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
