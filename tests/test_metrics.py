"""Metrics through one instrumentation point, against a real prometheus_client
registry and a real OpenTelemetry SDK with an in-memory metric reader."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest

from wa_session_store import (
    AuthKeys,
    InvalidTypeError,
    PostgresStore,
    RetryPolicy,
    StoreUnavailableError,
    open_store,
    use_auth_state,
)
from wa_session_store.metrics import Metrics, OpenTelemetryMetrics, PrometheusMetrics

from .conftest import DSN, StoreFactory
from .proxy import Proxy
from .test_leases import _expire

CREDS: dict[str, Any] = {"registrationId": 7, "noiseKey": {"public": b"\x05" * 32}}
SECRET_SESSION = "tenant-4711-private-number"


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_prometheus_counts_calls_saves_and_auth_states(make_store: StoreFactory) -> None:
    registry = CollectorRegistry()
    async with make_store(metrics=PrometheusMetrics(registry)) as store:
        kind = store.kind
        for n in range(3):
            await store.save_creds(SECRET_SESSION, {**CREDS, "registrationId": n})
        await store.get_keys(SECRET_SESSION, "pre-key", ["1"])
        calls = "wa_session_store_calls_total"
        assert _value(registry, calls, operation="save_creds", backend=kind, outcome="ok") == 3
        assert _value(registry, calls, operation="get_keys", backend=kind, outcome="ok") == 1
        assert _value(registry, calls, operation="open", backend=kind, outcome="ok") == (
            1 if kind == "postgresql" else 0
        )
        count = "wa_session_store_call_duration_seconds_count"
        assert _value(registry, count, operation="save_creds", backend=kind) == 3

        auth = await use_auth_state(store, SECRET_SESSION, throttle=60, backup_interval=None)
        assert _value(registry, "wa_session_store_auth_states_open", backend=kind) == 1
        for n in range(10):  # a burst: one save at once, the rest coalesced
            auth.creds_updated({**CREDS, "accountSyncCounter": n})
        for _ in range(200):
            if not auth.pending:
                break
            await asyncio.sleep(0.01)
        auth.creds_updated({**CREDS, "accountSyncCounter": 10})  # waits for the throttle
        assert _value(registry, "wa_session_store_creds_updates_total", backend=kind) == 11
        assert _value(registry, "wa_session_store_creds_saves_total", backend=kind) == 1
        assert _value(registry, "wa_session_store_pending_creds", backend=kind) == 1
        assert auth.last_saved_at is not None
        assert auth.consecutive_failures == 0
        await auth.aclose()
        assert _value(registry, "wa_session_store_creds_saves_total", backend=kind) == 2
        assert _value(registry, "wa_session_store_auth_states_open", backend=kind) == 0
        assert _value(registry, "wa_session_store_pending_creds", backend=kind) == 0
    text = generate_latest(registry).decode()
    assert SECRET_SESSION not in text  # never a label: unbounded, and private
    assert all(line.startswith(("#", "wa_session_store_")) for line in text.splitlines() if line)


@pytest.mark.postgres
async def test_retries_and_giveups_are_counted(pg_schema: str, proxy: Proxy) -> None:
    registry = CollectorRegistry()
    retry = RetryPolicy(attempts=2, timeout=0.5, backoff=0.05)
    seen: list[str] = []
    async with PostgresStore(
        proxy.dsn(DSN),
        schema=pg_schema,
        retry=retry,
        metrics=PrometheusMetrics(registry),
        on_retry=lambda d: seen.append("retry"),
        on_giveup=lambda d: seen.append("giveup"),
    ) as store:
        proxy.refuse()
        with pytest.raises(StoreUnavailableError):
            await store.load_creds("s1")
        proxy.restore()
        labels = {"operation": "load_creds", "backend": "postgresql"}
        assert _value(registry, "wa_session_store_retries_total", **labels) == 1
        assert _value(registry, "wa_session_store_giveups_total", **labels) == 1
        assert (
            _value(registry, "wa_session_store_calls_total", outcome="unavailable", **labels) == 1
        )
        assert seen == ["retry", "giveup"]  # the user's hooks still run


@pytest.mark.postgres
async def test_lease_grants_renewals_releases_and_losses(pg_dsn: str, pg_schema: str) -> None:
    registry = CollectorRegistry()
    async with PostgresStore(
        pg_dsn, schema=pg_schema, metrics=PrometheusMetrics(registry)
    ) as store:
        for n in range(4):
            await store.save_creds(f"bot-{n}", CREDS)
        leases = await store.claim_sessions("w1", limit=4, ttl=30)
        held = "wa_session_store_leases_held"
        assert _value(registry, held, backend="postgresql") == 4
        await _expire(store, "bot-0")
        await store.acquire_lease("bot-0", owner="w2")
        assert len(await store.renew_leases(leases)) == 1
        await leases[1].renew()
        assert _value(registry, "wa_session_store_lease_renewals_total", backend="postgresql") == 4
        losses = "wa_session_store_lease_losses_total"
        assert _value(registry, losses, backend="postgresql", reason="replaced") == 1
        await store.release_leases(leases)
        assert _value(registry, "wa_session_store_lease_releases_total", backend="postgresql") == 3
        assert _value(registry, "wa_session_store_lease_grants_total", backend="postgresql") == 5
        assert _value(registry, held, backend="postgresql") == 1  # w2's


async def test_opentelemetry_reports_through_an_sdk_reader(make_store: StoreFactory) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    async with make_store(metrics=OpenTelemetryMetrics(meter_provider=provider)) as store:
        await store.save_creds("s1", CREDS)
        await store.load_creds("s1")
        auth = await use_auth_state(store, "s1", backup_interval=None)
        auth.creds_updated({**CREDS, "accountSyncCounter": 1})
        await auth.flush()
        points = _otel_points(reader)
        calls = {
            (attrs["operation"], attrs["outcome"]): value
            for attrs, value in points["wa_session_store_calls_total"]
        }
        assert calls[("save_creds", "ok")] == 2
        assert calls[("load_creds", "ok")] == 2
        durations = points["wa_session_store_call_duration_seconds"]
        assert all(attrs["backend"] == store.kind for attrs, _ in durations)
        assert points["wa_session_store_auth_states_open"] == [({"backend": store.kind}, 1)]
        assert points["wa_session_store_creds_updates_total"][0][1] == 1
        await auth.aclose()
    assert all(name.startswith("wa_session_store_") for name in points)
    assert not any(
        "s1" in map(str, attrs.values()) for series in points.values() for attrs, _ in series
    )
    provider.shutdown()


def _otel_points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "wa_session_store"
            for metric in scope.metrics:
                points[metric.name] = [
                    (dict(p.attributes or {}), getattr(p, "value", getattr(p, "count", None)))
                    for p in metric.data.data_points
                ]
    return points


async def test_pending_key_writes_gauge_counts_what_a_barrier_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(AuthKeys, "FLUSH_DELAY", 60.0)  # only flush() stores them
    registry = CollectorRegistry()
    async with open_store("memory://", metrics=PrometheusMetrics(registry)) as store:
        auth = await use_auth_state(store, "s1", key_writes="barrier", backup_interval=None)
        await auth.keys.set({"session": {"a": b"\x01", "b": b"\x02"}, "pre-key": {"1": b"\x03"}})
        gauge = "wa_session_store_pending_key_writes"
        assert _value(registry, gauge, backend="memory") == 3
        await auth.keys.flush()
        assert _value(registry, gauge, backend="memory") == 0
        await auth.aclose()


async def test_one_registry_serves_many_stores_and_open_store_takes_metrics() -> None:
    registry = CollectorRegistry()
    async with (
        open_store("memory://", metrics=PrometheusMetrics(registry)) as a,
        open_store("memory://", metrics=PrometheusMetrics(registry)) as b,
    ):
        await a.save_creds("s1", CREDS)
        await b.save_creds("s1", CREDS)
    labels = {"operation": "save_creds", "backend": "memory", "outcome": "ok"}
    assert _value(registry, "wa_session_store_calls_total", **labels) == 2


async def test_without_metrics_nothing_is_recorded_and_bad_ones_are_refused() -> None:
    async with open_store("memory://") as store:
        assert store.metrics is None
        await store.save_creds("s1", CREDS)
    with pytest.raises(InvalidTypeError, match="metrics must be"):
        open_store("memory://", metrics=object())
    assert Metrics().call("save_creds", "memory", 0.1, "ok") is None  # the no-op base


def test_the_exporters_cost_nothing_until_named() -> None:
    """Importing the package and its metrics module loads no exporter and
    neither optional library; naming an exporter loads its module only, and
    the library itself waits for the first instance."""
    program = """
import sys
import wa_session_store, wa_session_store.metrics as metrics
loaded = lambda: sorted(m for m in sys.modules if m.startswith(
    ("prometheus_client", "opentelemetry", "wa_session_store.metrics.prometheus",
     "wa_session_store.metrics.opentelemetry")))
print(loaded())
metrics.PrometheusMetrics, metrics.OpenTelemetryMetrics
print(loaded())
print(metrics.PrometheusMetrics.__module__, metrics.metrics_of(object()))
"""
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out == [
        "[]",
        "['wa_session_store.metrics.opentelemetry', 'wa_session_store.metrics.prometheus']",
        "wa_session_store.metrics None",
    ]
