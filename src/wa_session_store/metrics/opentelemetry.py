"""The OpenTelemetry exporter: :class:`OpenTelemetryMetrics`, on ``opentelemetry-api``.

``opentelemetry`` is imported when the first instance is built, never when
this module is: without the ``[otel]`` extra nothing here is paid for. Import
it from :mod:`wa_session_store.metrics`, which loads this module on first use.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any

from .instrumentation import (
    COLLECTED_GAUGES,
    DURATION_BUCKETS,
    Metrics,
    ThreadSafeWeakSet,
    collected_gauges,
)

__all__ = ["OpenTelemetryMetrics"]


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

        self.owners: ThreadSafeWeakSet[Metrics] = ThreadSafeWeakSet()
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
                # A copy in one step (the loop threads keep counting while
                # the reader's thread iterates).
                return [
                    Observation(value, dict(zip(labels, key, strict=True)))
                    for key, value in dict.copy(counts).items()
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
                counts = collected_gauges(self.owners)[index]
                return [Observation(n, {"backend": b}) for b, n in sorted(counts.items())]

            return observe

        for index, (name, description) in enumerate(COLLECTED_GAUGES):
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

    __module__ = "wa_session_store.metrics"

    def __init__(self, meter_provider: Any = None) -> None:
        from opentelemetry import metrics as otel_metrics

        from .._version import __version__

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
