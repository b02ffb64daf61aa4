"""Observability never breaks persistence: a raising exporter, and scrapes from other threads.

The exporter here is user code that raises on every hook; the stores, auth
states and leases are real, on every backend.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest

from wa_session_store import (
    MemoryStore,
    PostgresStore,
    RetryDetails,
    RetryPolicy,
    StoreUnavailableError,
    use_auth_state,
)
from wa_session_store.metrics import Metrics, OpenTelemetryMetrics, PrometheusMetrics
from wa_session_store.metrics.instrumentation import HOOKS

from .conftest import DSN, StoreFactory
from .proxy import Proxy
from .test_leases import _expire

CREDS: dict[str, Any] = {"registrationId": 7, "noiseKey": {"public": b"\x05" * 32}}
SECRET_SESSION = "tenant-4711-private-number"


class RaisingExporter(Metrics):
    """Counts every hook call, then raises (built per test: see :func:`raising_exporter`)."""

    calls: Counter[str]
    saved: threading.Event


def raising_exporter() -> RaisingExporter:
    """An exporter of a class of its own (the log's rate limit is per class) raising everywhere."""

    def hook(name: str) -> Callable[..., None]:
        def method(self: RaisingExporter, *args: Any, **kwargs: Any) -> None:
            self.calls[name] += 1
            if name == "creds_save":
                self.saved.set()
            raise OSError(f"exporter down in {name}")

        return method

    cls = type("RaisingExporter", (RaisingExporter,), {name: hook(name) for name in HOOKS})
    exporter: RaisingExporter = cls()
    exporter.calls = Counter()
    exporter.saved = threading.Event()
    return exporter


async def _wait(event: threading.Event, seconds: float = 20.0) -> None:
    """Wait for ``event`` without blocking the loop (generous: the machine may be loaded)."""
    assert await asyncio.to_thread(event.wait, seconds), "timed out"


def _hook_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "metrics hook" in r.getMessage()]


async def test_a_raising_exporter_changes_no_outcome(
    make_store: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="wa_session_store")
    exporter = raising_exporter()
    async with make_store(metrics=exporter) as store:
        # A save that landed returns normally, however many times the hook fails.
        for n in range(5):
            await store.save_creds(SECRET_SESSION, {**CREDS, "registrationId": n})
        assert await store.load_creds(SECRET_SESSION) == {**CREDS, "registrationId": 4}
        assert exporter.calls["call"] >= 6

        # creds_updated() still schedules the save, and the throttle lands it.
        auth = await use_auth_state(store, SECRET_SESSION, throttle=60, backup_interval=None)
        auth.creds_updated({**CREDS, "accountSyncCounter": 1})
        await _wait(exporter.saved)
        assert exporter.calls["creds_update"] == 1
        assert await store.load_creds(SECRET_SESSION) == {**CREDS, "accountSyncCounter": 1}
        assert not auth.pending
        assert auth.consecutive_failures == 0
        auth.creds_updated({**CREDS, "accountSyncCounter": 2})  # held back by the throttle
        await auth.aclose()  # saved at close, with the hooks failing
        assert await store.load_creds(SECRET_SESSION) == {**CREDS, "accountSyncCounter": 2}

    # Logged once per hook (rate-limited), naming the hook, never the session or creds.
    lines = _hook_lines(caplog)
    assert len([line for line in lines if ".call()" in line]) == 1
    assert any(".creds_update()" in line for line in lines)
    assert any(".creds_save()" in line for line in lines)
    assert all("OSError: exporter down" in line for line in lines)
    text = caplog.text
    assert SECRET_SESSION not in text
    assert "noiseKey" not in text


async def test_failures_are_logged_again_after_the_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="wa_session_store")
    exporter = raising_exporter()
    async with MemoryStore(metrics=exporter) as store:
        for _ in range(3):
            await store.load_creds("s1")
        assert len(_hook_lines(caplog)) == 1
        type(exporter).FAILURE_LOG_INTERVAL = 0.0  # its own class: no other test sees it
        await store.load_creds("s1")
    lines = _hook_lines(caplog)
    assert len(lines) == 2
    assert "(2 more failures since the last report)" in lines[1]


async def test_a_subclassed_exporter_is_guarded_too() -> None:
    class Failing(PrometheusMetrics):
        def call(self, operation: str, backend: str, seconds: float, outcome: str) -> None:
            super().call(operation, backend, seconds, outcome)
            raise ValueError("a bug in the application's exporter")

    registry = CollectorRegistry()
    async with MemoryStore(metrics=Failing(registry)) as store:
        await store.save_creds("s1", CREDS)
        assert await store.load_creds("s1") == CREDS
    labels = {"operation": "save_creds", "backend": "memory", "outcome": "ok"}
    assert registry.get_sample_value("wa_session_store_calls_total", labels) == 1


@pytest.mark.postgres
async def test_leases_survive_a_raising_exporter(pg_dsn: str, pg_schema: str) -> None:
    exporter = raising_exporter()
    async with PostgresStore(pg_dsn, schema=pg_schema, metrics=exporter) as store:
        for n in range(3):
            await store.save_creds(f"bot-{n}", CREDS)
        leases = await store.claim_sessions("w1", limit=3, ttl=30)
        assert len(leases) == 3
        await _expire(store, "bot-0")
        taken = await store.acquire_lease("bot-0", owner="w2")
        lost = await store.renew_leases(leases)  # renews two, reports bot-0 lost
        assert [lease.session_id for lease in lost] == ["bot-0"]
        await leases[1].renew()
        assert await store.release_leases(leases[1:]) == 2
        await taken.release()
        assert all(info.expired for info in await store.list_leases())  # all released
    seen = exporter.calls
    assert seen["leases_granted"] == 2
    assert seen["lease_lost"] == 1
    assert seen["leases_renewed"] >= 2
    assert seen["leases_released"] >= 2


@pytest.mark.postgres
async def test_retry_hooks_and_the_give_up_survive_a_raising_exporter(
    pg_schema: str, proxy: Proxy
) -> None:
    seen: list[str] = []
    async with PostgresStore(
        proxy.dsn(DSN),
        schema=pg_schema,
        retry=RetryPolicy(attempts=2, timeout=0.5, backoff=0.05),
        metrics=raising_exporter(),
        on_retry=lambda d: seen.append("retry"),
        on_giveup=lambda d: seen.append("giveup"),
    ) as store:
        proxy.refuse()
        with pytest.raises(StoreUnavailableError):  # the store's error, not the exporter's
            await store.load_creds("s1")
        proxy.restore()
        assert await store.load_creds("s1") is None
    assert seen == ["retry", "giveup"]  # the user's hooks still run


async def test_a_raising_retry_hook_is_logged_rate_limited_without_the_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="wa_session_store")

    def broken_hook(details: RetryDetails) -> None:
        raise RuntimeError("hook bug") from details.cause

    failures = iter([ConnectionError(f"reset\nDETAIL: value {SECRET_SESSION}")] * 4)

    async def attempt(timeout: float) -> str:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return "ok"

    policy = RetryPolicy(attempts=5, backoff=0.01)
    done = await policy.call(
        "load_creds", "s1", attempt, is_transient=lambda e: True, on_retry=broken_hook
    )
    assert done == "ok"
    lines = [r.getMessage() for r in caplog.records if "retry hook" in r.getMessage()]
    assert len(lines) == 1  # four failures, one line
    assert "broken_hook() raised" in lines[0]
    assert "RuntimeError: hook bug" in lines[0]
    assert all(r.exc_info is None for r in caplog.records)  # no traceback, no chained cause
    assert SECRET_SESSION not in caplog.text


# -- scrapes from other threads while auth states open and close -------------------


@pytest.fixture
def busy_gil() -> Iterator[None]:
    """Switch threads as often as the interpreter can, so that races show at once."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


async def _open_and_close_while(scrape: Callable[[], object], metrics: Metrics) -> None:
    """Open 200 auth states, close them, again, while ``scrape`` runs in a loop in a thread.

    Until the scrape ran 1000 times over at least 60 rounds (or 30 s passed);
    opening a batch (not one state for one) keeps the set growing under the
    scrape's iteration, which the old code failed with "Set changed size
    during iteration" within a few rounds.
    """
    errors: list[BaseException] = []
    runs = 0
    stop = threading.Event()

    def scraper() -> None:
        nonlocal runs
        while not stop.is_set():
            try:
                scrape()
            except BaseException as exc:
                errors.append(exc)
                return
            runs += 1

    async with MemoryStore(metrics=metrics) as store:
        for n in range(200):
            await store.save_creds(f"s{n}", CREDS)
        thread = threading.Thread(target=scraper)
        thread.start()
        deadline = time.monotonic() + 30
        rounds = 0
        try:
            while (runs < 1000 or rounds < 60) and not errors and time.monotonic() < deadline:
                states = [
                    await use_auth_state(store, f"s{n}", throttle=60, backup_interval=None)
                    for n in range(200)
                ]
                for state in states:
                    await state.aclose()
                rounds += 1
        finally:
            stop.set()
            await asyncio.to_thread(thread.join, 20)
    assert not errors, errors
    assert runs > 0


async def test_a_prometheus_scrape_while_states_open_and_close(busy_gil: None) -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)

    def scrape() -> None:
        PrometheusMetrics(registry)  # exporters of the registry come and go too
        assert b"wa_session_store_auth_states_open" in generate_latest(registry)

    await _open_and_close_while(scrape, metrics)


async def test_an_opentelemetry_collection_while_states_open_and_close(
    busy_gil: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics = OpenTelemetryMetrics(provider)

    def collect() -> None:
        OpenTelemetryMetrics(provider)
        assert reader.get_metrics_data() is not None

    await _open_and_close_while(collect, metrics)
    # The SDK logs a failing callback (and drops its gauge) rather than raising.
    assert [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry")] == []


async def test_a_scrape_while_barrier_writes_are_pending(busy_gil: None) -> None:
    registry = CollectorRegistry()
    errors: list[BaseException] = []
    stop = threading.Event()

    def scraper() -> None:
        while not stop.is_set():
            try:
                generate_latest(registry)
            except BaseException as exc:
                errors.append(exc)
                return

    async with MemoryStore(metrics=PrometheusMetrics(registry)) as store:
        await store.save_creds("s1", CREDS)
        auth = await use_auth_state(
            store, "s1", throttle=60, backup_interval=None, key_writes="barrier"
        )
        thread = threading.Thread(target=scraper)
        thread.start()
        deadline = time.monotonic() + 10
        try:
            while not errors and time.monotonic() < deadline:
                for n in range(500):  # pending until the flush below
                    await auth.keys.set({"session": {f"device-{n}": b"ratchet"}})
                await auth.keys.flush()
        finally:
            stop.set()
            await asyncio.to_thread(thread.join, 20)
            await auth.aclose()
    assert not errors, errors
